"""The learned half of the router's KNN policy: ONNX MiniLM embedder, FAISS example index,
§6 scoring with a calibrated variant, online learning from feedback, and the CLI/eval tools."""
