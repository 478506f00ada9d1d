•©½ƒ¢4$
Inspection/NG Threshold 
iffffffæ?