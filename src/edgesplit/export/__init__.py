"""The two halves of a split model as standalone files: ``torch.export`` programs or ONNX."""
