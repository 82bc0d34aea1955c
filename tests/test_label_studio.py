"""A real Label Studio server between two cycles: alod's export in, every export format back.

Label Studio is installed from PyPI into its own virtualenv under
~/.cache/alod-test (ALOD_TEST_CACHE overrides; reused between runs, never
alod's environment), started on 127.0.0.1 with a throwaway data folder and
driven through its HTTP API: a project from alod's label_studio_config.xml, a
Local Files storage on the image folder (the README's setup), alod's tasks
imported with their predictions; then some predictions are copied as they are,
one box deleted, one added, one class changed, one image left empty, one
skipped. JSON, JSON-MIN and COCO are exported and each goes through
`alod import-labels`; the boxes must be the annotated ones to 0.01 px, and the
resumed cycle must train on them (`labeled_boxes`).

Without network or PyPI the test skips, unless ALOD_REQUIRE_LABEL_STUDIO=1
(set by .ci/run) makes that a failure. ALOD_RECORD_LABEL_STUDIO=1 writes the
downloaded exports to tests/fixtures/labelstudio/, which the fast tests in
test_annotation_formats.py read without a server.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow

LABEL_STUDIO_VERSION = "1.23.2"
CACHE = Path(os.environ.get("ALOD_TEST_CACHE", Path.home() / ".cache" / "alod-test"))
FIXTURES = Path(__file__).parent / "fixtures" / "labelstudio"
TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
PREFIX = "/data/local-files/?d=images/100k/train/"
TOLERANCE = 0.01  # px


def _unavailable(why: str):
    if os.environ.get("ALOD_REQUIRE_LABEL_STUDIO"):
        pytest.fail(f"Label Studio {LABEL_STUDIO_VERSION} is required here (ALOD_REQUIRE_LABEL_STUDIO): {why}")
    pytest.skip(f"Label Studio {LABEL_STUDIO_VERSION} unavailable: {why}")


def label_studio_executable() -> Path:
    """label-studio from its own cached virtualenv, installed on first use (under a lock)."""
    venv = CACHE / f"label-studio-{LABEL_STUDIO_VERSION}-venv"
    exe = venv / "bin" / "label-studio"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"label-studio-{LABEL_STUDIO_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".alod-installed").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            base = getattr(sys, "_base_executable", sys.executable)  # not alod's venv
            steps = [[base, "-m", "venv", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                      f"label-studio=={LABEL_STUDIO_VERSION}"]]
            for cmd in steps:
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                except (OSError, subprocess.TimeoutExpired) as e:
                    _unavailable(f"{' '.join(cmd[:4])} failed: {e}")
                if proc.returncode != 0:
                    _unavailable(f"{' '.join(cmd[:4])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            (venv / ".alod-installed").touch()
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """A running server and a small client for its HTTP API."""

    def __init__(self, base: str):
        import requests

        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {TOKEN}"

    def call(self, method: str, path: str, **kwargs):
        r = self.http.request(method, f"{self.base}{path}", timeout=120, **kwargs)
        if r.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {r.status_code}: {r.text[:2000]}")
        return r

    def export(self, project: int, fmt: str) -> bytes:
        return self.call("GET", f"/api/projects/{project}/export", params={"exportType": fmt}).content


@contextlib.contextmanager
def running_label_studio(data_dir: Path, document_root: Path):
    exe = label_studio_executable()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "MLFLOW_", "DJANGO_"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LABEL_STUDIO_USERNAME": "annotator@example.com",
        "LABEL_STUDIO_PASSWORD": "alod-test-password",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
    })
    log = open(data_dir.parent / "label-studio.log", "w")
    proc = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(data_dir), "--enable-legacy-api-token"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir.parent,
                            start_new_session=True)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_ready(proc, base: str, log: Path, timeout: float = 300) -> LabelStudio:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Label Studio exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base}/health", timeout=5).status_code == 200:
                ls = LabelStudio(base)
                version = ls.call("GET", "/api/version").json()
                assert version["release"] == LABEL_STUDIO_VERSION, version
                return ls
        time.sleep(1)
    pytest.fail(f"Label Studio did not answer on {base} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


# --- the annotator's work ------------------------------------------------------------


def _pixels(result: dict) -> tuple:
    v, w, h = result["value"], result["original_width"], result["original_height"]
    x, y = v["x"] * w / 100, v["y"] * h / 100
    return v["rectanglelabels"][0], x, y, x + v["width"] * w / 100, y + v["height"] * h / 100


def _copy(results: list[dict]) -> list[dict]:
    out = []
    for r in results:
        r = json.loads(json.dumps(r))
        r.pop("score", None)
        r["origin"] = "prediction"
        out.append(r)
    return out


KEEP = 8  # the annotator keeps the best predictions of an image and deletes the rest


def _best(task: dict) -> list[dict]:
    return sorted(task["predictions"][0]["result"], key=lambda r: -r["score"])[:KEEP]


def annotate(ls: LabelStudio, tasks: list[dict]) -> dict:
    """The annotator's edits, as a user would make them; returns what each image should now hold."""
    with_boxes = sorted((t for t in tasks if t["predictions"] and len(t["predictions"][0]["result"]) > 1),
                        key=lambda t: -len(t["predictions"][0]["result"]))
    if len(with_boxes) < 4:
        pytest.fail(f"only {len(with_boxes)} of {len(tasks)} exported tasks carry predictions; the test needs 4 "
                    "(the pre-annotating model should be more confident)")
    copied, deleted, added, changed = with_boxes[:4]
    rest = [t for t in tasks if t not in (copied, deleted, added, changed)]
    empty, skipped = rest[0], rest[1]
    plan: dict[str, list[dict] | None] = {}
    first = copied["predictions"][0]["result"][0]
    plan[copied["data"]["name"]] = _copy(_best(copied))
    plan[deleted["data"]["name"]] = _copy(_best(deleted))[1:]
    new_box = {"id": "manual1", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
               "origin": "manual", "original_width": first["original_width"],
               "original_height": first["original_height"], "image_rotation": 0,
               "value": {"x": 12.5, "y": 33.25, "width": 20.125, "height": 15.5, "rotation": 0,
                         "rectanglelabels": ["bus"]}}
    plan[added["data"]["name"]] = _copy(_best(added)) + [new_box]
    relabeled = _copy(_best(changed))
    old = relabeled[0]["value"]["rectanglelabels"][0]
    relabeled[0]["value"]["rectanglelabels"] = ["traffic sign" if old != "traffic sign" else "rider"]
    plan[changed["data"]["name"]] = relabeled
    plan[empty["data"]["name"]] = []
    by_name = {t["data"]["name"]: t for t in tasks}
    for name, result in plan.items():
        task = by_name[name]
        body = {"result": result, "was_cancelled": False, "ground_truth": False}
        if task["predictions"]:
            body["parent_prediction"] = task["predictions"][0]["id"]
        ls.call("POST", f"/api/tasks/{task['id']}/annotations", json=body)
    ls.call("POST", f"/api/tasks/{skipped['id']}/annotations", json={"result": [], "was_cancelled": True})
    expected = {name: [_pixels(r) for r in result] for name, result in plan.items()}
    return {"expected": expected, "skipped": skipped["data"]["name"], "empty": empty["data"]["name"],
            "skipped_task": skipped["id"], "new_box": new_box}


def assert_frames(frames, expected: dict) -> None:
    from alod.data import categories

    got = {f.name: f for f in frames}
    assert sorted(got) == sorted(expected)
    for name, boxes in expected.items():
        frame = got[name]
        rows = sorted(zip((categories.ID_TO_NAME[int(c)] for c in frame.labels), frame.boxes.tolist()))
        want = sorted((b[0], list(b[1:])) for b in boxes)
        assert [r[0] for r in rows] == [w[0] for w in want], name
        for (_, a), (_, b) in zip(rows, want):
            assert max(abs(p - q) for p, q in zip(a, b)) <= TOLERANCE, (name, a, b)
        assert not frame.ignore.any()


# --- the test ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A tracking store of this module's own, in SQLite."""
    import mlflow

    root = tmp_path_factory.mktemp("label-studio")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        yield root


def test_label_studio_round_trip(tracking):
    import mlflow
    from mlflow import MlflowClient

    from alod.annotation_formats import read_export
    from alod.data.synthetic import write_dataset
    from entrypoints.cli import cli

    started = time.monotonic()
    root = tracking
    data, work = root / "data", root / "work"
    write_dataset(data, train=24, val=8, seed=0)
    (root / "ls-data").mkdir()
    with running_label_studio(root / "ls-data", data) as (proc, base):
        def alod(*args):
            result = CliRunner().invoke(cli, [str(a) for a in args])
            assert result.exit_code == 0, result.output
            return result.output

        common = ["--data", data, "--work-dir", work, "--experiment-name", "alod-ls", "--arch", "tiny",
                  "--workers", "0"]
        alod("pretrain", *common, "--epochs", "3", "--fraction", "0.5", "--lr", "0.04", "--batch-size", "4")
        alod("rank", "--data", data, "--work-dir", work, "--experiment-name", "alod-ls", "--workers", "0",
             "--sampler", "boxcount", "--batches", "2", "--batch-images", "12")
        (rank_run,) = MlflowClient().search_runs(
            [MlflowClient().get_experiment_by_name("alod-ls").experiment_id], "tags.`alod.step` = 'rank'")
        rank_id = rank_run.info.run_id
        cycle = [*common, "--ranking", rank_id, "--oracle", "files", "--cycles", "1", "--per-cycle", "6",
                 "--epochs", "1", "--preannotation-threshold", "0", "--register", "false",
                 "--annotation-url-prefix", PREFIX]
        out = alod("cycle", *cycle)
        run_id = re.findall(r"cycle run ([0-9a-f]+)", out)[-1]
        assert "label_studio_config.xml" in out and "warning: annotation_url_prefix" not in out
        exported = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="annotation/cycle_001",
                                                            dst_path=str(root / "exported")))
        alod_tasks = json.loads((exported / "label_studio.json").read_text())

        ls = wait_ready(proc, base, root / "label-studio.log")
        project = ls.call("POST", "/api/projects", json={
            "title": "alod cycle 1", "label_config": (exported / "label_studio_config.xml").read_text()}).json()["id"]
        # the README's local files setup: a storage on the image folder, not synced (the tasks come from alod)
        ls.call("POST", "/api/storages/localfiles", json={
            "project": project, "title": "images", "path": str(data / "images" / "100k" / "train"),
            "use_blob_urls": True})
        done = ls.call("POST", f"/api/projects/{project}/import", json=alod_tasks).json()
        assert done["task_count"] == 6
        assert done["prediction_count"] == sum(bool(t.get("predictions")) for t in alod_tasks)
        tasks = ls.call("GET", "/api/tasks", params={"project": project, "fields": "all", "page_size": 100}
                        ).json()["tasks"]
        assert len(tasks) == 6
        # the labeling page can load every image from the task's URL
        for t in tasks:
            image = ls.call("GET", t["data"]["image"])
            assert image.headers["content-type"].startswith("image/"), t["data"]
            assert image.content == (data / "images" / "100k" / "train" / t["data"]["name"]).read_bytes()
        # ... and only files under a project's storage are served (why the README adds one)
        outside = ls.http.get(f"{base}/data/local-files/", params={"d": "labels/det_20/det_train.json"}, timeout=60)
        assert outside.status_code in (403, 404), outside.status_code

        plan = annotate(ls, tasks)
        expected = plan["expected"]
        exports = {"json": ls.export(project, "JSON"), "json_min": ls.export(project, "JSON_MIN"),
                   "coco_zip": ls.export(project, "COCO"), "coco_with_images": ls.export(project, "COCO_WITH_IMAGES")}
        with zipfile.ZipFile(io.BytesIO(exports["coco_zip"])) as zf:
            exports["coco_result_json"] = zf.read("result.json")
        files = {}
        for key, content in exports.items():
            files[key] = root / f"export-{key}{'.zip' if key.startswith('coco_') and 'json' not in key else '.json'}"
            files[key].write_bytes(content)

        selected = [t["data"]["name"] for t in alod_tasks]
        for key, path in files.items():
            found = read_export(path, selected)
            assert_frames(found.frames, expected)
        assert read_export(files["json"], selected).not_annotated == [plan["skipped"]]
        assert read_export(files["json"], selected).cancelled == 1
        assert read_export(files["coco_zip"], selected).renamed  # ../<folder>/images/100k/train/<name>
        with zipfile.ZipFile(files["coco_with_images"]) as zf:  # the images travel in the zip, alod reads the JSON
            assert len([n for n in zf.namelist() if n.startswith("images/") and not n.endswith("/")]) == 5
        renamed = read_export(files["coco_with_images"], selected).renamed
        assert len(renamed) == 5 and all(re.fullmatch(r"images/[0-9a-f]{8}__" + re.escape(v), k)
                                         for k, v in renamed.items()), renamed

        def import_labels(path, *extra):
            return alod("import-labels", run_id, path, "--work-dir", work, *extra)

        out = import_labels(files["json"])
        assert "read as Label Studio JSON" in out and "5 image(s) added" in out, out
        assert "1 image(s) came back with no boxes" in out and repr(plan["empty"]) in out
        assert "1 image(s) in the file were not annotated (1 annotation(s) skipped in Label Studio)" in out
        assert f"1 selected image(s) still without labels, e.g. {plan['skipped']!r}" in out and "keeps waiting" in out
        for key in ("json_min", "coco_zip", "coco_result_json", "coco_with_images"):
            out = import_labels(files[key])
            assert "0 image(s) added, 5 already imported with identical labels" in out, (key, out)
        assert "matched to a selected image by file name" in out

        # the skipped image is labeled after all: one box; the next JSON export completes the batch
        late = {**plan["new_box"], "id": "late1", "value": {**plan["new_box"]["value"], "rectanglelabels": ["car"]}}
        ls.call("POST", f"/api/tasks/{plan['skipped_task']}/annotations", json={"result": [late]})
        expected[plan["skipped"]] = [_pixels(late)]
        files["json_final"] = root / "export-json-final.json"
        files["json_final"].write_bytes(ls.export(project, "JSON"))
        out = import_labels(files["json_final"])
        assert "1 image(s) added, 5 already imported" in out and "resume the run" in out, out
        # what the tool wrote, kept for the fast tests (ALOD_RECORD_LABEL_STUDIO=1)
        if os.environ.get("ALOD_RECORD_LABEL_STUDIO"):
            FIXTURES.mkdir(parents=True, exist_ok=True)
            for key in ("json", "json_min", "coco_zip", "json_final"):
                shutil.copy(files[key], FIXTURES / files[key].name)
            (FIXTURES / "expected.json").write_text(json.dumps({
                "label_studio": LABEL_STUDIO_VERSION, "selected": selected, "empty": plan["empty"],
                "skipped": plan["skipped"], "boxes": {k: v for k, v in expected.items() if k != plan["skipped"]},
                "late_boxes": expected[plan["skipped"]]}, indent=1))

    stored = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="labels/labels.json",
                                                      dst_path=str(root / "stored")))
    from alod.data.bdd100k import load_labels

    assert_frames(load_labels(stored)[0], expected)
    alod("cycle", "--resume-run-id", run_id, "--work-dir", work)
    history = MlflowClient().get_metric_history(run_id, "labeled_boxes")
    assert {m.step: m.value for m in history} == {1: sum(len(b) for b in expected.values())}
    assert MlflowClient().get_run(run_id).data.metrics["labeled_images"] == 6
    print(f"Label Studio {LABEL_STUDIO_VERSION} round trip: {time.monotonic() - started:.0f} s")
