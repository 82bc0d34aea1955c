"""alod: active learning for object detection, tracked with MLflow."""

__version__ = "0.1.0"
