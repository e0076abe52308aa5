"""embedserve: an embedding and retrieval server on ONNX Runtime and FAISS."""

__version__ = "0.1.0"
