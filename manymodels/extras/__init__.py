"""What builds on the steps' outputs: the HTML report, ONNX export, MLflow tracking, the sample data."""
