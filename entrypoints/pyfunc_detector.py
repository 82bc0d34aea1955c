"""Models-from-code pyfunc for alod detectors (logged by alod.tracking.log_detector).

MLflow copies this file next to the checkpoint; nothing is pickled. Input: a
DataFrame with a column `image` (base64-encoded JPEG/PNG bytes, what a REST
client sends) or `path` (local image files). Output: one row per image with
`boxes` (xyxy pixels, x2/y2 exclusive), `labels` (det_20 names) and `scores`.
"""

from __future__ import annotations

import base64
import warnings

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


# Inputs are DataFrames of either shape on purpose; MLflow's type-hint nag does not apply.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")


class DetectorModel(PythonModel):
    def load_context(self, context):
        from alod.models import detector_from_checkpoint

        self.model = detector_from_checkpoint(context.artifacts["checkpoint"]).eval()

    def predict(self, context, model_input, params=None):
        import torch
        from pathlib import Path

        from alod.data.categories import ID_TO_NAME
        from alod.data.dataset import decode_rgb

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        threshold = float((params or {}).get("score_threshold", 0.0))
        rows = []
        for i, record in enumerate(frame.to_dict("records")):
            # Header checked before decoding: an empty, corrupt or huge upload is refused by name.
            if record.get("image") is not None:
                name = record.get("name") or f"image-{i}"
                data = base64.b64decode(record["image"])
            elif record.get("path") is not None:
                name = record.get("name") or str(record["path"])
                data = Path(record["path"]).read_bytes()
            else:
                raise ValueError(f"row {i}: give a base64 `image` or a `path` column")
            image = decode_rgb(data, f"row {i} ({name})").float().div_(255)
            with torch.inference_mode():
                out = self.model([image])[0]
            keep = out["scores"] >= threshold
            rows.append({
                "name": name,
                "boxes": out["boxes"][keep].tolist(),
                "labels": [ID_TO_NAME.get(int(c), str(int(c))) for c in out["labels"][keep]],
                "scores": out["scores"][keep].tolist(),
            })
        return pd.DataFrame(rows, columns=["name", "boxes", "labels", "scores"])


mlflow.models.set_model(DetectorModel())
