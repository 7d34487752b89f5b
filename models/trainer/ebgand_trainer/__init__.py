"""EBGAN training worker of ebgand: ONNX Runtime on-device training, no PyTorch."""
