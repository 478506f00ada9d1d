•©½ƒ¢4
Points/speed ‚