"""Thin click commands over the alod library: one module per MLflow step."""
