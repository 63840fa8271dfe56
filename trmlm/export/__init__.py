"""Export for the edge: ONNX graphs of the model's own pieces and a torch-free onnxruntime decode loop."""
