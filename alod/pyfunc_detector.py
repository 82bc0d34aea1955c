"""Models-from-code pyfunc for alod detectors (logged by alod.tracking.log_detector).

MLflow copies this file next to the checkpoint; nothing is pickled.

Input: a DataFrame with a column `image` holding the encoded image (JPEG, PNG,
WebP or GIF): bytes, which is what `mlflow models serve` hands over after
decoding the base64 a REST client sends (the signature types the column
`binary`), or a base64 string from a Python caller; and an optional column
`name` echoed back. The model reads nothing but these bytes: no file paths, no
URLs. Params: `score_threshold` (default 0.0: every box the detector keeps).

Output: one row per image with `name`, `boxes` (xyxy pixels, x2/y2 exclusive),
`labels` (det_20 names) and `scores`.

A bad row fails the request with an MlflowException (INVALID_PARAMETER_VALUE,
HTTP 400) that names the row and the reason; messages never quote the bytes.
Images are run through the detector in batches of `BATCH_SIZE`.
"""

from __future__ import annotations

import base64
import binascii

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

BATCH_SIZE = 8
MAX_IMAGE_BYTES = 32 * 2**20  # one encoded image; a 1280x720 JPEG is ~0.2 MB
MAX_ROWS = 256  # images per request
COLUMNS = ("image", "name")
OUTPUT_COLUMNS = ["name", "boxes", "labels", "scores"]


class InvalidRequest(MlflowException):
    """A request the client can fix: HTTP 400 with the reason."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def image_bytes(value, row: int) -> bytes:
    """The encoded image of one row: raw bytes, or base64 text from a Python caller."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"row {row}: `image` is text but not base64 of an image file") from None
    elif value is None or (isinstance(value, float) and value != value):
        raise InvalidRequest(f"row {row}: `image` is empty (null)")
    else:
        raise InvalidRequest(f"row {row}: `image` must be the encoded image (bytes, base64 in JSON), "
                             f"got {type(value).__name__}")
    if not data:
        raise InvalidRequest(f"row {row}: `image` is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"row {row}: image too large: {len(data)} bytes, over the limit of "
                             f"{MAX_IMAGE_BYTES} bytes per image")
    return data


def decode(data: bytes, row: int):
    """uint8 RGB tensor [3,H,W]; InvalidRequest naming the row on any failure, never quoting bytes."""
    from alod.data.dataset import decode_rgb
    from alod.data.images import ImageReadError

    try:
        return decode_rgb(data, f"row {row}")
    except ImageReadError as e:
        # alod's messages on local files show a file's first bytes; a server never echoes content.
        reason = str(e).split(" (first bytes", 1)[0]
        raise InvalidRequest(reason) from None


def check_columns(frame: pd.DataFrame) -> None:
    extra = [str(c) for c in frame.columns if c not in COLUMNS]
    if extra:
        raise InvalidRequest(
            f"unexpected column(s) {extra}: send the encoded image in column `image` (base64 in JSON) "
            "and optionally `name`; the served model reads no files")
    if "image" not in frame.columns:
        raise InvalidRequest("missing column `image` (the encoded image, base64 in JSON)")
    if len(frame) > MAX_ROWS:
        raise InvalidRequest(f"{len(frame)} images in one request; send at most {MAX_ROWS}")


def threshold_of(params) -> float:
    value = (params or {}).get("score_threshold", 0.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"score_threshold must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest(f"score_threshold must be in [0, 1], got {value}")
    return value


class DetectorModel(PythonModel):
    def load_context(self, context):
        from alod.engine.distributed import default_device
        from alod.models import detector_from_checkpoint

        self.device = default_device()
        self.model = detector_from_checkpoint(context.artifacts["checkpoint"]).to(self.device).eval()

    # The DataFrame hint is one MLflow infers no schema from: the logged signature stays what checks inputs,
    # and MLflow stops warning (at every log and load) that predict has no type hints.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        import torch

        from alod.data.categories import ID_TO_NAME

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        check_columns(frame)
        threshold = threshold_of(params)
        names = frame["name"].tolist() if "name" in frame.columns else [None] * len(frame)
        names = [str(n) if isinstance(n, str) and n else f"image-{i}" for i, n in enumerate(names)]
        # Every row is checked before any inference: a bad row fails fast, by number.
        images = [decode(image_bytes(value, i), i) for i, value in enumerate(frame["image"].tolist())]

        rows = []
        for start in range(0, len(images), BATCH_SIZE):
            batch = [im.to(self.device).float().div_(255) for im in images[start:start + BATCH_SIZE]]
            with torch.inference_mode():
                outputs = self.model(batch)
            for name, out in zip(names[start:start + BATCH_SIZE], outputs):
                keep = out["scores"] >= threshold
                rows.append({
                    "name": name,
                    "boxes": out["boxes"][keep].cpu().tolist(),
                    "labels": [ID_TO_NAME.get(int(c), str(int(c))) for c in out["labels"][keep]],
                    "scores": out["scores"][keep].cpu().tolist(),
                })
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


mlflow.models.set_model(DetectorModel())
