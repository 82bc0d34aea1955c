"""What the cycle loop's phases report to, apart from the work itself: a tracker, pictures, fault points.

The phases call `hooks.tracker.log_metrics(...)`, `hooks.pictures(draw)` and
`hooks.fault(point, cycle)`. `MlflowTracker` is the step's tracker (it forwards
to `alod.tracking`, which logs on rank 0 only); `MemoryTracker` keeps everything
in memory, so a test drives the phases without an MLflow store.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alod import tracking
from alod.faults import at_point
from alod.steps.common import pictures_safely


class MlflowTracker:
    """The cycle loop's tracker: the run and its nested per-cycle runs in MLflow (`alod.tracking`)."""

    detector_model = tracking.DETECTOR_MODEL

    def metric_steps(self, run_id: str, key: str) -> dict[int, float]:
        return tracking.metric_steps(run_id, key)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return tracking.get_run(run_id).data.tags

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        tracking.set_tags(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        tracking.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, artifact_dir: str) -> None:
        tracking.log_artifact(path, artifact_dir)

    def log_artifacts(self, folder: Path, artifact_dir: str) -> None:
        tracking.log_artifacts(folder, artifact_dir)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        tracking.log_dict(data, artifact_file)

    def log_image(self, image: Any, key: str, step: int) -> None:
        tracking.log_image(image, key=key, step=step)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        tracking.log_figure(figure, artifact_file)

    def set_waiting(self, run_id: str, cycle: int | None) -> None:
        tracking.set_waiting(run_id, cycle)

    def find_child_run(self, run_id: str, tags: Mapping[str, Any]) -> str | None:
        return tracking.find_child_run(run_id, tags)

    def download_child_artifact(self, run_id: str, tags: Mapping[str, Any], artifact: str, dst: Path) -> Path:
        return tracking.download_run_artifact(tracking.child_run(run_id, tags), artifact, dst)

    def nested_run(self, step: str, *, run_name: str, run_id: str | None,
                   tags: Mapping[str, Any]) -> contextlib.AbstractContextManager[str | None]:
        return tracking.run(step, run_name=run_name, nested=True, run_id=run_id, tags=tags)

    def register_detector(self, checkpoint: Path, version_tags: Mapping[str, Any], mAP50: float) -> tuple[str, bool]:
        """Register the checkpoint; returns (version, whether it became the champion)."""
        version = tracking.log_detector(checkpoint, registered_name=self.detector_model, version_tags=version_tags)
        return version.version, tracking.promote_if_better(self.detector_model, version.version, "mAP50", mAP50)


class MemoryTracker:
    """A tracker that only remembers: metrics, tags and artifact names per run, the images' keys and steps.

    `run_id` is the parent run; nested runs get ids `<run_id>/<n>` and become the active run while open.
    Logged artifacts are remembered as the local paths they were logged from."""

    detector_model = "memory-detector"

    def __init__(self, run_id: str = "memory-run"):
        self.metrics: dict[str, dict[str, dict[int, float]]] = {}
        self.tags: dict[str, dict[str, str]] = {run_id: {}}
        self.artifacts: dict[str, dict[str, Path]] = {}
        self.images: list[tuple[str, str, int]] = []  # (run, key, step)
        self.waiting: dict[str, int | None] = {}
        self.registered: list[tuple[Path, dict]] = []
        self._active = [run_id]

    @property
    def active(self) -> str:
        return self._active[-1]

    def metric_steps(self, run_id: str, key: str) -> dict[int, float]:
        return dict(self.metrics.get(run_id, {}).get(key, {}))

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.tags.get(run_id, {}))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.setdefault(self.active, {}).update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        run = self.metrics.setdefault(self.active, {})
        for k, v in metrics.items():  # what MLflow would keep (alod.tracking.log_metrics drops the rest)
            if v is not None and math.isfinite(float(v)):
                run.setdefault(k, {})[step] = float(v)

    def log_artifact(self, path: Path, artifact_dir: str) -> None:
        self.artifacts.setdefault(self.active, {})[f"{artifact_dir}/{Path(path).name}"] = Path(path)

    def log_artifacts(self, folder: Path, artifact_dir: str) -> None:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                self.artifacts.setdefault(self.active, {})[f"{artifact_dir}/{path.relative_to(folder)}"] = path

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.artifacts.setdefault(self.active, {})[artifact_file] = Path(artifact_file)

    def log_image(self, image: Any, key: str, step: int) -> None:
        self.images.append((self.active, key, step))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.artifacts.setdefault(self.active, {})[artifact_file] = Path(artifact_file)

    def set_waiting(self, run_id: str, cycle: int | None) -> None:
        self.waiting[run_id] = cycle

    def find_child_run(self, run_id: str, tags: Mapping[str, Any]) -> str | None:
        want = {k: str(v) for k, v in tags.items()}
        children = [r for r in self.tags if r.startswith(f"{run_id}/")
                    and want.items() <= self.tags[r].items()]
        return children[-1] if children else None

    def download_child_artifact(self, run_id: str, tags: Mapping[str, Any], artifact: str, dst: Path) -> Path:
        child = self.find_child_run(run_id, tags)
        if child is None or artifact not in self.artifacts.get(child, {}):
            raise tracking.TrackingError(f"run {run_id} has no child run with tags {dict(tags)} and {artifact}")
        return self.artifacts[child][artifact]

    @contextlib.contextmanager
    def nested_run(self, step: str, *, run_name: str, run_id: str | None,
                   tags: Mapping[str, Any]) -> Iterator[str]:
        child = run_id or f"{self.active}/{sum(r.startswith(f'{self.active}/') for r in self.tags) + 1}"
        self.tags.setdefault(child, {}).update({"alod.step": step, **{k: str(v) for k, v in tags.items()}})
        self._active.append(child)
        try:
            yield child
        finally:
            self._active.pop()

    def register_detector(self, checkpoint: Path, version_tags: Mapping[str, Any], mAP50: float) -> tuple[str, bool]:
        best = max((float(tags["mAP50"]) for _, tags in self.registered), default=float("-inf"))
        self.registered.append((Path(checkpoint), {k: str(v) for k, v in version_tags.items()}))
        return str(len(self.registered)), mAP50 > best


def skip_pictures(draw: Callable[[], None]) -> None:
    """A pictures hook that draws nothing (fast tests)."""


@dataclass
class CycleHooks:
    """Where the cycle loop reports: `tracker`, `pictures(draw)` (draws and logs, never fails the
    step) and `fault(point, cycle)` (the crash and concurrency tests' kill and delay points, `alod.faults`)."""

    tracker: Any = field(default_factory=MlflowTracker)
    pictures: Callable[[Callable[[], None]], None] = pictures_safely
    fault: Callable[[str, int], None] = at_point
