•©½ƒ¢4
Points/speed X
Points/name zx