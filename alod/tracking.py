"""The one place in alod/ that talks to MLflow.

Only the main process (rank 0) logs: every function here is a no-op on other
ranks, and `run()` never opens a run there. The default tracking store is a
local SQLite file; `MLFLOW_TRACKING_URI` points at a server instead.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from alod.engine.distributed import is_main_process
from alod.names import (  # noqa: F401 (re-exported: tracking.CHAMPION etc.)
    CHAMPION,
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    DETECTOR_MODEL,
    PRETRAINED_MODEL,
    RUN_ID_ENV,
)

if TYPE_CHECKING:
    import pandas as pd

PYFUNC_FILE = Path(__file__).resolve().parent / "pyfunc_detector.py"
_PYFUNC_REQUIREMENTS = ["torch", "torchvision", "numpy", "pandas", "pillow"]


class TrackingError(RuntimeError):
    """A tracking problem the user can fix (missing model, wrong alias, ...)."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def setup(experiment: str = DEFAULT_EXPERIMENT) -> str | None:
    """Point MLflow at the tracking store and select the experiment (rank 0 only)."""
    if not is_main_process():
        return None
    mlflow.set_tracking_uri(tracking_uri())
    # Under `mlflow run` the run (and so the experiment) already exists: follow it,
    # so nested cycle runs land beside their parent.
    if os.environ.get("MLFLOW_RUN_ID"):
        run = _retry(MlflowClient().get_run, os.environ["MLFLOW_RUN_ID"])
        exp = _retry(mlflow.set_experiment, experiment_id=run.info.experiment_id)
    else:
        try:
            exp = _retry(mlflow.set_experiment, experiment)
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
            # Two commands creating one new experiment at the same moment: the other one won.
            exp = _retry(mlflow.set_experiment, experiment)
    return exp.experiment_id


# ALOD_TRACKING_PROFILE=FILE: the time every tracking call took, summed per MLflow function, is written
# to FILE (JSON) when the process exits (benchmarks/tracking_load.py measures the logging overhead so).
_PROFILE: dict[str, list[float]] = {}


def _write_profile(path: str) -> None:
    import json

    Path(path).write_text(json.dumps({k: {"calls": int(v[0]), "seconds": v[1]} for k, v in _PROFILE.items()}))


if os.environ.get("ALOD_TRACKING_PROFILE"):
    atexit.register(_write_profile, os.environ["ALOD_TRACKING_PROFILE"])


def _retry(fn, *args, attempts: int = 5, base_delay: float = 1.0, **kwargs):
    """Retry transient tracking failures (server restart, network blip) with backoff."""
    if _PROFILE is not None and os.environ.get("ALOD_TRACKING_PROFILE"):
        started = time.perf_counter()
        try:
            return _retry_now(fn, *args, attempts=attempts, base_delay=base_delay, **kwargs)
        finally:
            entry = _PROFILE.setdefault(getattr(fn, "__name__", str(fn)), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started
    return _retry_now(fn, *args, attempts=attempts, base_delay=base_delay, **kwargs)


def _retry_now(fn, *args, attempts: int = 5, base_delay: float = 1.0, **kwargs):
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            # Client errors (bad request, not found) are not transient.
            code = getattr(e, "error_code", "")
            if code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                        "PERMISSION_DENIED", "UNAUTHENTICATED") or attempt == attempts - 1:
                raise
        except (ConnectionError, OSError, TimeoutError):
            if attempt == attempts - 1:
                raise
        except Exception as e:  # direct S3 artifacts: boto3 errors once its own retries are spent
            if not _transient_storage_error(e) or attempt == attempts - 1:
                raise
        time.sleep(base_delay * 2**attempt)


def _transient_storage_error(e: BaseException | None) -> bool:
    """Object-store trouble a retry can fix (connection, timeout, throttling, 5xx), anywhere in the
    exception chain (boto3 wraps client errors of uploads in S3UploadFailedError)."""
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as StorageConnectionError
    except ImportError:
        return False
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (StorageConnectionError, HTTPClientError)):
            return True
        if isinstance(e, ClientError):
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = e.response.get("Error", {}).get("Code", "")
            return status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
        e = e.__cause__ or e.__context__
    return False


@contextmanager
def run(
    step: str,
    *,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    nested: bool = False,
) -> Iterator[str | None]:
    """Open (or reopen, with run_id) a run tagged alod.step; yields its id (None off rank 0)."""
    if not is_main_process():
        yield run_id or os.environ.get(RUN_ID_ENV)
        return
    all_tags = {"alod.step": step, **{k: str(v) for k, v in (tags or {}).items()}}
    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if run_id and wrapper and wrapper != run_id:
        # `mlflow run -P resume_run_id=X` made a fresh run; the work goes on in X. Mark the
        # fresh one as a pointer, and drop the variable so nested runs don't adopt it.
        client = MlflowClient()
        _retry(client.set_tag, wrapper, "alod.step", "resume")
        _retry(client.set_tag, wrapper, "alod.resumed_run", run_id)
        os.environ.pop("MLFLOW_RUN_ID")
    active = _retry(mlflow.start_run, run_id=run_id, run_name=run_name if not run_id else None,
                    nested=nested, tags=all_tags)
    status = "FAILED"
    try:
        yield active.info.run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except SystemExit as e:  # e.g. alod.engine.train.Preempted (SIGTERM): resumable, not failed
        status = "KILLED" if e.code not in (0, None) else "FINISHED"
        raise
    finally:
        _retry(mlflow.end_run, status=status)


@contextmanager
def attached(run_id: str | None) -> Iterator[None]:
    """Make `run_id` the active run in this process (a torchrun worker), unless it already is."""
    if not is_main_process() or run_id is None or active_run_id() == run_id:
        yield
        return
    mlflow.set_tracking_uri(tracking_uri())
    _retry(mlflow.start_run, run_id=run_id)
    try:
        yield
    finally:
        # The launcher that opened the run sets its final status.
        _retry(mlflow.end_run)


def active_run_id() -> str | None:
    r = mlflow.active_run()
    return r.info.run_id if r else None


def set_tags(tags: Mapping[str, Any]) -> None:
    if is_main_process():
        _retry(mlflow.set_tags, {k: str(v) for k, v in tags.items()})


def log_params(params: Mapping[str, Any]) -> None:
    """Log params not yet on the run: `mlflow run` has logged the MLproject parameters
    itself (as the user typed them), and MLflow refuses to change a logged value."""
    if not is_main_process():
        return
    run = mlflow.active_run()
    existing = _retry(MlflowClient().get_run, run.info.run_id).data.params if run else {}
    new = {k: _param_value(v) for k, v in params.items() if k not in existing}
    if new:
        _retry(mlflow.log_params, new)


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """One batch call, so a cycle's metrics land together or not at all."""
    if not is_main_process():
        return
    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if clean:
        _retry(mlflow.log_metrics, clean, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    if is_main_process():
        _retry(mlflow.log_artifact, str(path), artifact_path=artifact_path)


def log_artifacts(folder: str | Path, artifact_path: str | None = None) -> None:
    if is_main_process():
        _retry(mlflow.log_artifacts, str(folder), artifact_path=artifact_path)


def log_dict(data: Any, artifact_file: str) -> None:
    if is_main_process():
        _retry(mlflow.log_dict, data, artifact_file)


def log_figure(figure, artifact_file: str) -> None:
    if is_main_process():
        _retry(mlflow.log_figure, figure, artifact_file)


def log_image(image, key: str, step: int) -> None:
    if is_main_process():
        _retry(mlflow.log_image, image, key=key, step=step)


# --- models and the registry -------------------------------------------------


def log_detector(
    checkpoint: str | Path,
    *,
    registered_name: str | None = None,
    version_tags: Mapping[str, Any] | None = None,
) -> Any:
    """Log a checkpoint as a models-from-code pyfunc and optionally register it.

    Returns the registered ModelVersion (or None when not registering).
    """
    if not is_main_process():
        return None
    info = _retry(
        mlflow.pyfunc.log_model,
        name="model",
        python_model=str(PYFUNC_FILE),
        artifacts={"checkpoint": str(checkpoint)},
        signature=detector_signature(),
        input_example=(_example_input(), {"score_threshold": 0.5}),
        pip_requirements=_PYFUNC_REQUIREMENTS,
        # The pyfunc imports alod: ship it inside the model, so serving needs no alod install.
        code_paths=[str(Path(__file__).resolve().parent)],
        registered_model_name=registered_name,
    )
    if registered_name is None:
        return None
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in (version_tags or {}).items():
        _retry(client.set_model_version_tag, registered_name, version, key, str(value))
    return _retry(client.get_model_version, registered_name, version)


def detector_signature() -> Any:
    """What the served detector takes and returns (alod/pyfunc_detector.py): an encoded
    image per row (`binary`: base64 in JSON) and an optional name; the score_threshold param."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("binary", "image"), ColSpec("string", "name", required=False)])
    outputs = Schema([ColSpec("string", "name"), ColSpec(Array(Array("double")), "boxes"),
                      ColSpec(Array("string"), "labels"), ColSpec(Array("double"), "scores")])
    params = ParamSchema([ParamSpec("score_threshold", "double", 0.0)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _example_input() -> "pd.DataFrame":
    """A small PNG (a grey road, a dark box) as the logged input example."""
    import io

    import pandas as pd
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 36), (110, 110, 110))
    ImageDraw.Draw(image).rectangle((20, 14, 40, 26), fill=(30, 30, 40))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return pd.DataFrame({"image": [buf.getvalue()], "name": ["example.png"]})


def set_alias(name: str, alias: str, version: str | int) -> None:
    if is_main_process():
        _retry(MlflowClient().set_registered_model_alias, name, alias, str(version))


def promote_if_better(name: str, version: str | int, metric: str, value: float,
                      alias: str = CHAMPION) -> bool:
    """Move `alias` to this version only when its metric beats the current holder's."""
    if not is_main_process():
        return False
    client = MlflowClient()

    def holder() -> tuple[str | None, float]:
        try:
            current = client.get_model_version_by_alias(name, alias)
            return str(current.version), float(current.tags.get(metric, "nan"))
        except MlflowException:
            return None, float("nan")

    _now, best = holder()
    if not (math.isnan(best) or value > best):
        return False
    # Runs side by side (`alod run --jobs`, two commands) may read the holder at the same moment: the
    # one that set the alias last wins, so look again and take it back from a worse version.
    for _attempt in range(5):
        set_alias(name, alias, version)
        now, best = holder()
        if now == str(version) or not (math.isnan(best) or value > best):
            break
    return now == str(version)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """models:/name@alias or models:/name/version -> (name, alias, version)."""
    if not uri.startswith("models:/"):
        raise TrackingError(f"model URI {uri!r} must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    if "/" in rest:
        name, version = rest.split("/", 1)
        return name, None, version
    return rest, None, None


def resolve_model_version(uri: str) -> Any:
    """The registry entry behind a models:/ URI, or a TrackingError saying what is missing."""
    name, alias, version = parse_model_uri(uri)
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise TrackingError(
            f"registered model {name!r} not found at {tracking_uri()}; "
            f"registered models: {', '.join(names) or 'none'} (run `alod pretrain` first?)"
        ) from None
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if version:
            return client.get_model_version(name, version)
        versions = client.search_model_versions(f"name='{name}'")
        return max(versions, key=lambda v: int(v.version))
    except MlflowException:
        aliases = sorted(client.get_registered_model(name).aliases or {})
        raise TrackingError(
            f"{uri}: no such {'alias' if alias else 'version'} of {name!r}; "
            f"aliases: {', '.join(aliases) or 'none'}"
        ) from None


def _scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when the process exits (callers that keep nothing pass `dst`,
    or use `registered_checkpoint`, which removes it as soon as they are done)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return Path(path)


def _download_published(folder: Path, **source: Any) -> Path:
    """Download an artifact into `folder` so that no reader ever sees a partly written file.

    Processes side by side (`alod run --jobs`) share one work folder: each source gets its own
    folder, and each download lands in a private staging folder first, then every file is moved
    into place with an atomic rename (two processes fetching the same model both end with whole
    files)."""
    folder = folder.absolute()  # MLflow answers with absolute paths (work_dir is relative by default)
    folder.mkdir(parents=True, exist_ok=True)
    # beside `folder`, not in it: a reader searching `folder` must not find another's half-written file
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{folder.name}-", dir=folder.parent))
    try:
        local = Path(_retry(mlflow.artifacts.download_artifacts, dst_path=str(staging), **source))
        relative = local.relative_to(staging)
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = folder / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
        return folder / relative
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def registered_checkpoint(uri: str) -> Iterator[tuple[Path, Any]]:
    """A registered detector's checkpoint in a temporary folder that is gone when the block ends."""
    with tempfile.TemporaryDirectory(prefix="alod-model-") as tmp:
        yield download_registered_checkpoint(uri, tmp)


def download_registered_checkpoint(uri: str, dst: str | Path | None = None) -> tuple[Path, Any]:
    """Download a registered detector's checkpoint file; returns (path, ModelVersion).

    Without `dst` the file goes to a temporary folder removed when the process exits."""
    version = resolve_model_version(uri)
    dst = Path(dst) if dst else _scratch_dir("alod-model-")
    local = _download_published(dst / "models" / version.name / str(version.version),
                                artifact_uri=f"models:/{version.name}/{version.version}")
    found = sorted((local / "artifacts").glob("*.pt")) or sorted(local.rglob("*.pt"))
    if not found:
        raise TrackingError(f"{uri} (version {version.version}) holds no checkpoint file")
    return found[0], version


# --- finding runs ------------------------------------------------------------


def find_finished_run(experiment: str, step: str, params: Mapping[str, Any],
                      code_version: str) -> Any:
    """A FINISHED run of this step with identical parameters and code, or None.

    A run waiting for human labels is not finished, whatever its status says
    (`mlflow run` marks its run FINISHED when the command exits)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`alod.step` = '{step}' and tags.`alod.code_version` = '{code_version}' "
                      "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    wanted = {k: _param_value(v) for k, v in params.items()}
    for r in runs:
        if WAITING_TAG not in r.data.tags and all(r.data.params.get(k) == v for k, v in wanted.items()):
            return r
    return None


def get_run(run_id: str) -> Any:
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException as e:
        raise TrackingError(f"run {run_id!r} not found at {tracking_uri()}: {e.message}") from None


def experiment_name(experiment_id: str) -> str:
    return _retry(MlflowClient().get_experiment, experiment_id).name


def find_child_run(parent_run_id: str, tags: Mapping[str, Any]) -> str | None:
    """The newest nested run of `parent_run_id` carrying these tags, or None."""
    try:
        return child_run(parent_run_id, tags)
    except TrackingError:
        return None


def child_run(parent_run_id: str, tags: Mapping[str, Any]) -> str:
    """The newest nested run of `parent_run_id` carrying these tags."""
    client = MlflowClient()
    parent = _retry(client.get_run, parent_run_id)
    flt = " and ".join([f"tags.mlflow.parentRunId = '{parent_run_id}'"]
                       + [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
    runs = _retry(client.search_runs, [parent.info.experiment_id], filter_string=flt,
                  order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise TrackingError(f"run {parent_run_id} has no child run with tags {dict(tags)}")
    return runs[0].info.run_id


MAIN_RUN_TAG = "alod.main_run"  # on a step run: the latest main run that made or reused it


def link_to_main(run_id: str, main_run_id: str) -> None:
    """Tag a step run with the main run that used it (the latest one, for a run reused by several:
    every main also lists the runs it used in its description)."""
    if is_main_process():
        _retry(MlflowClient().set_tag, run_id, MAIN_RUN_TAG, main_run_id)


def metric_steps(run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in _retry(MlflowClient().get_metric_history, run_id, key)}


def download_run_artifact(run_id: str, path: str, dst: str | Path | None = None) -> Path:
    """Download one artifact of a run to `dst`/<run id>/`path`; returns the local path."""
    dst = Path(dst) if dst else _scratch_dir("alod-art-")
    try:
        return _download_published(dst / run_id, run_id=run_id, artifact_path=path)
    except MlflowException as e:
        raise TrackingError(f"run {run_id}: artifact {path!r} not found: {e.message}") from None


def code_version() -> str:
    """A digest of alod's own source: a finished step is reused only for the same code."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def search_runs(experiment: str, filter_string: str = "") -> list:
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise TrackingError(f"experiment {experiment!r} not found at {tracking_uri()}")
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=10000)



def cycle_curves(experiment: str, filter_string: str = "") -> "pd.DataFrame":
    """Per-cycle points of every finished cycle run: sampler, protocol, seed, cycle, metrics."""
    import pandas as pd

    flt = "tags.`alod.step` = 'cycle'" + (f" and {filter_string}" if filter_string else "")
    rows = []
    for r in search_runs(experiment, flt):
        tags = r.data.tags
        histories = {key: metric_steps(r.info.run_id, key) for key in ("mAP50", "labeled_images", "labeled_boxes")}
        for cycle, value in sorted(histories["mAP50"].items()):
            rows.append({
                "run_id": r.info.run_id, "sampler": tags.get("alod.sampler", "?"),
                "protocol": tags.get("alod.protocol", "?"), "seed": tags.get("alod.seed", "?"),
                "cycle": cycle, "mAP50": value,
                "labeled_images": histories["labeled_images"].get(cycle, float("nan")),
                "labeled_boxes": histories["labeled_boxes"].get(cycle, float("nan")),
                "status": r.info.status,
            })
    return pd.DataFrame(rows, columns=["run_id", "sampler", "protocol", "seed", "cycle", "mAP50",
                                       "labeled_images", "labeled_boxes", "status"])


@contextmanager
def suspended() -> Iterator[None]:
    """Detach the active run for a while (so a step opens its own top-level run), then reattach."""
    current = mlflow.active_run()
    if current is None or not is_main_process():
        yield
        return
    run_id, experiment_id = current.info.run_id, current.info.experiment_id
    # end_run would mark it FINISHED; pop it from the fluent stack and re-enter afterwards.
    mlflow.end_run(status="RUNNING")
    try:
        yield
    finally:
        # The step may have selected another experiment; MLflow re-enters a run only from its own.
        _retry(mlflow.set_experiment, experiment_id=experiment_id)
        _retry(mlflow.start_run, run_id=run_id)


WAITING_TAG = "alod.waiting_for_labels"  # cycle number a `files`-oracle run waits on


def set_waiting(run_id: str, cycle: int | None) -> None:
    """Tag a run that stops for human labels with the cycle it waits on (None: clear the tag)."""
    if not is_main_process():
        return
    client = MlflowClient()
    if cycle is not None:
        _retry(client.set_tag, run_id, WAITING_TAG, str(cycle))
    elif WAITING_TAG in _retry(client.get_run, run_id).data.tags:
        _retry(client.delete_tag, run_id, WAITING_TAG)


def waiting_cycle(run_id: str) -> int | None:
    value = _retry(MlflowClient().get_run, run_id).data.tags.get(WAITING_TAG)
    return int(value) if value else None


def set_status(run_id: str, status: str) -> None:
    """E.g. SCHEDULED for a run waiting on labels: apart from FINISHED runs in the UI and in
    `find_finished_run`; resuming it makes it RUNNING again."""
    _retry(MlflowClient().update_run, run_id, status=status)


def log_artifact_to(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Upload to a run that is not active in this process (e.g. `alod import-labels`)."""
    _retry(MlflowClient().log_artifact, run_id, str(path), artifact_path)


def registered_version_of_run(name: str, run_id: str) -> str:
    versions = MlflowClient().search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if not versions:
        raise TrackingError(f"run {run_id} registered no version of {name!r}")
    return str(max(versions, key=lambda v: int(v.version)).version)


def setup_client() -> None:
    """Point MLflow at the tracking store without selecting an experiment (read-only commands)."""
    mlflow.set_tracking_uri(tracking_uri())


def registered_versions(names) -> list[dict]:
    client = MlflowClient()
    rows = []
    for name in names:
        try:
            aliases = client.get_registered_model(name).aliases or {}
        except MlflowException:
            continue
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        for v in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
            rows.append({"model": name, "version": v.version, "aliases": ",".join(by_version.get(str(v.version), [])),
                         "run_id": v.run_id, **{k: v.tags.get(k, "") for k in ("sampler", "protocol", "cycle", "mAP50")}})
    return rows


def load_registered_detector(uri: str, map_location: str = "cpu"):
    """A registered version as a torch detector (weights_only load); returns (model, ModelVersion)."""
    from alod.models import detector_from_checkpoint

    with registered_checkpoint(uri) as (path, version):
        return detector_from_checkpoint(path, map_location=map_location), version
