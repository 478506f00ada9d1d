•©½ƒ¢4
Points/speed Pÿÿÿÿ
	Points/on p