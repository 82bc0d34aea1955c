"""A run's local folder, `work_dir/runs/<run id>`: its layout, the artifact each file is
uploaded as, and the rule every reader follows: the local copy first (it is written before
every upload, so it is never older than the artifact from this machine), else the run's
artifact (another machine, or a lost work_dir).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    """A file of the run folder and the artifact path it is uploaded as (None: local only)."""

    local: str
    artifact: str | None = None

    @property
    def artifact_dir(self) -> str:
        """The artifact folder this file is logged to (tracking.log_artifact's artifact_path)."""
        if self.artifact is None:
            raise ValueError(f"{self.local} is not uploaded")
        return self.artifact.rpartition("/")[0]


LABELED = Entry("labeled.json", "state/labeled.json")  # image -> cycle it was labeled in
LABELS = Entry("labels.json", "labels/labels.json")  # files oracle: the labels people returned
AUTO = Entry("auto.json", "state/auto.json")  # sampler auto: the bandit's choices
RANKING = Entry("ranking.parquet")
PRETRAINED = Entry("pretrained.pt", "checkpoints/pretrained.pt")
RUN_LOCK = "run.lock"  # held by the command working on the run (alod.locks)
LABELS_LOCK = "labels.lock"  # held while the label store is merged
TMP = "tmp"  # the command's temporary files; emptied by the next resume


def cycle_checkpoint(cycle: int) -> Entry:
    """A cycle's checkpoint (its artifact lives on the cycle's child run)."""
    return Entry(f"cycle_{cycle:03d}.pt", f"checkpoints/cycle_{cycle:03d}.pt")


def cycle_state(cycle: int) -> Entry:
    return Entry(f"labeled_cycle_{cycle:03d}.json", f"state/cycles/labeled_cycle_{cycle:03d}.json")


@dataclass(frozen=True)
class RunFolder:
    work: Path
    run_id: str

    def __init__(self, work: str | os.PathLike, run_id: str) -> None:
        object.__setattr__(self, "work", Path(work))
        object.__setattr__(self, "run_id", str(run_id))

    @property
    def path(self) -> Path:
        return self.work / "runs" / self.run_id

    @property
    def downloads(self) -> Path:
        """Where artifacts of this run are downloaded to (outside the run folder: never mistaken for local state)."""
        return self.work / "downloads" / self.run_id

    def __truediv__(self, name: str | Entry) -> Path:
        return self.path / (name.local if isinstance(name, Entry) else name)

    def create(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def local_or_artifact(self, entry: Entry, *, artifact_run: str | None = None) -> Path | None:
        """The local copy of `entry`, else its artifact downloaded from `artifact_run` (default: this
        run), else None."""
        from alod import tracking

        local = self / entry
        if local.is_file():
            return local
        if entry.artifact is None:
            return None
        try:
            return tracking.download_run_artifact(artifact_run or self.run_id, entry.artifact, self.downloads)
        except tracking.TrackingError:
            return None
