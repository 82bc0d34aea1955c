"""The registered detector served over REST by a real `mlflow models serve`, started the way
the README says (`make serve`, with a PATH that does not hold the venv), on 127.0.0.1.

What a client may send is image bytes and a name: a `path` column reads nothing, and no
error message carries a file's content. Bad rows answer 400 with the row and the reason;
`score_threshold` is a declared param that works; the model's signature and input
example are logged."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tools.teamstack import Service, free_port

REPO = Path(__file__).resolve().parents[1]
SECRET = "alod-secret-content-7f3a9c"  # what a file on the server holds; never in an answer


def _jpeg(seed: int, size=(160, 96)) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A random tiny detector keeping every box (so scores vary), registered as champion."""
    import mlflow
    import torch

    from alod import tracking
    from alod.models import build_detector, save_checkpoint

    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "model.pt", model=build_detector("tiny", box_score_thresh=0.0), epoch=0,
                           config={})
    tracking.setup("alod-serving-test")
    with tracking.run("cycle"):
        version = tracking.log_detector(ckpt, registered_name=tracking.DETECTOR_MODEL)
    tracking.set_alias(tracking.DETECTOR_MODEL, tracking.CHAMPION, version.version)
    (root / "secret.txt").write_text(SECRET)
    yield {"root": root, "uri": uri, "version": version}
    mlflow.end_run()
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def test_signature_params_and_input_example_are_logged(registered):
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/alod-detector/{registered['version'].version}")
    sig = model.metadata.signature
    assert [(c.name, c.type.name, c.required) for c in sig.inputs.inputs] == [
        ("image", "binary", True), ("name", "string", False)]
    assert [c.name for c in sig.outputs.inputs] == ["name", "boxes", "labels", "scores"]
    assert [(p.name, p.dtype.name, p.default) for p in sig.params.params] == [("score_threshold", "double", 0.0)]
    local = Path(mlflow.artifacts.download_artifacts(f"models:/alod-detector/{registered['version'].version}",
                                                     dst_path=str(registered["root"] / "m")))
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["image", "name"]
    assert base64.b64decode(example["dataframe_split"]["data"][0][0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert example["params"] == {"score_threshold": 0.5}


def test_logging_and_loading_the_detector_prints_no_mlflow_warning(registered):
    """Every pretrain and cycle logs the detector: MLflow's "add type hints to predict" nag (which its own
    filter resets, so a warnings filter cannot hide it) must not be printed at each log and load."""
    import warnings

    import mlflow

    from alod import tracking

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracking.run("cycle"):
            tracking.log_detector(registered["root"] / "model.pt")
            run_id = mlflow.active_run().info.run_id
        mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)
            and "mlflow" in w.filename] == []


def test_pyfunc_in_process_takes_bytes_or_base64_and_batches(registered):
    import mlflow

    model = mlflow.pyfunc.load_model("models:/alod-detector@champion")
    images = [_jpeg(i) for i in range(10)]  # more than one batch of 8
    out = model.predict(pd.DataFrame({"image": images, "name": [f"{i}.jpg" for i in range(10)]}))
    assert list(out["name"]) == [f"{i}.jpg" for i in range(10)]
    one = model.predict(pd.DataFrame({"image": [_b64(images[9])]}))
    assert one.iloc[0]["name"] == "image-0"
    # the same image gives the same boxes alone (base64) and inside a batch (bytes)
    np.testing.assert_allclose(one.iloc[0]["scores"], out.iloc[9]["scores"], rtol=1e-4, atol=1e-5)
    assert len(one.iloc[0]["boxes"]) > 10


@pytest.fixture(scope="module")
def server(registered):
    """`make serve` as the README has it, from a shell whose PATH lacks the venv."""
    port = free_port()
    venv = Path(sys.prefix)
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/local/bin:/usr/bin:/bin",
           "MLFLOW_TRACKING_URI": registered["uri"], "OMP_NUM_THREADS": "1"}
    # -o: never (re)build the venv from inside a test; it is the one running this test.
    cmd = ["make", "-C", str(REPO), "-o", f"{venv}/.installed", "serve", f"VENV={venv}", f"PORT={port}"]
    serve = Service("make serve", cmd, registered["root"] / "serve.log", env=env, cwd=registered["root"])
    serve.start()

    def ready():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
            return r.status == 200

    try:
        serve.wait_until(ready, 240, f"port {port}")
        yield {"port": port, "service": serve}
    finally:
        serve.stop()


def _post(server, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{server['port']}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_served_model_predicts_and_applies_score_threshold(server):
    image = _b64(_jpeg(1))
    status, answer = _post(server, {"dataframe_split": {"columns": ["image", "name"], "data": [[image, "a.jpg"]]}})
    assert status == 200, answer
    row = answer["predictions"][0]
    assert row["name"] == "a.jpg" and len(row["boxes"]) == len(row["labels"]) == len(row["scores"]) > 10
    cut = float(np.median(row["scores"]))
    status, answer = _post(server, {"dataframe_split": {"columns": ["image"], "data": [[image]]},
                                    "params": {"score_threshold": cut}})
    assert status == 200, answer
    kept = answer["predictions"][0]["scores"]
    assert 0 < len(kept) < len(row["scores"]) and min(kept) >= cut
    assert kept == [s for s in row["scores"] if s >= cut]
    status, answer = _post(server, {"dataframe_split": {"columns": ["image"], "data": [[image]]},
                                    "params": {"score_threshold": 2.0}})
    assert status == 400 and "score_threshold must be in [0, 1]" in answer["message"]


def test_served_model_batches_rows(server):
    images = [_b64(_jpeg(i)) for i in range(9)]
    status, answer = _post(server, {"dataframe_split": {"columns": ["image"], "data": [[im] for im in images]}})
    assert status == 200, answer
    assert [p["name"] for p in answer["predictions"]] == [f"image-{i}" for i in range(9)]


@pytest.mark.parametrize("columns,value", [(["path"], "secret.txt"), (["path"], "/etc/hostname"),
                                           (["path"], "no-such-file.jpg")])
def test_a_path_column_reads_no_file(server, registered, columns, value):
    path = str(registered["root"] / value) if not value.startswith("/") else value
    status, answer = _post(server, {"dataframe_split": {"columns": columns, "data": [[path]]}})
    assert status == 400
    message = answer["message"]
    assert "missing inputs ['image']" in message
    assert SECRET not in message and "FileNotFoundError" not in message and "Traceback" not in message
    if value == "/etc/hostname" and Path(value).is_file():
        content = Path(value).read_text().strip()
        assert not content or content not in message.replace("/etc/hostname", "")


@pytest.mark.parametrize("data,expected", [
    ([[_b64(b"hello, not an image")]], "row 0: not an image"),
    ([[_b64(_jpeg(0))], [_b64(SECRET.encode())]], "row 1: not an image"),
    ([[_b64(_jpeg(0))], [_b64(_jpeg(1))], [""]], "row 2: `image` is empty"),
])
def test_bad_rows_answer_400_with_row_and_reason(server, data, expected):
    status, answer = _post(server, {"dataframe_split": {"columns": ["image"], "data": data}})
    assert status == 400, answer
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert expected in answer["message"]
    assert "Traceback" not in answer["message"] and "stack_trace" not in answer
    # the model's own message never quotes the bytes it was given
    assert "first bytes" not in answer["message"]


def test_readme_serves_with_make_serve():
    readme = (REPO / "README.md").read_text()
    assert "make serve" in readme


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data worth decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_too_large_and_wrong_inputs_are_refused_by_row(registered, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException

    import alod.pyfunc_detector as served

    model = mlflow.pyfunc.load_model("models:/alod-detector@champion")
    ok = _jpeg(0)
    cases = [
        ([ok, _png_header(20000, 20000)], "row 1: image too large"),
        ([ok, ok, "not base64!"], "row 2: `image` is text but not base64"),
    ]
    for images, expected in cases:
        with pytest.raises(MlflowException, match=re.escape(expected)) as info:
            model.predict(pd.DataFrame({"image": images}))
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    # the byte limit, checked before anything is decoded
    with pytest.raises(MlflowException, match=r"row 0: image too large: \d+ bytes"):
        served.image_bytes(b"x" * (served.MAX_IMAGE_BYTES + 1), 0)
    with pytest.raises(MlflowException, match="send at most"):
        served.check_columns(pd.DataFrame({"image": [ok] * (served.MAX_ROWS + 1)}))
