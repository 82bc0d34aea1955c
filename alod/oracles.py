"""Who labels the images a cycle selected: the ground truth (`simulated`) or people (`files`).

An oracle answers the cycle loop with one interface: `labels_of` (image name ->
labels, for whatever is labeled), `missing(state)` (selected images it has no
labels for yet, by cycle), `labeled_frames(state)` (the training labels of every
selected image), `request(...)` (ask for the missing ones) and
`labels_arrived(...)` (the request is answered).

The `files` oracle keeps what people returned in the run's label store
(`labels/labels.json`); `alod import-labels` merges into it and the cycle step
reads it, both through `sync_label_store` here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alod import annotation, locks, run_folder, tracking
from alod.data.frames import Frame
from alod.data.pool import LabeledState
from alod.run_folder import RunFolder


class SimulatedOracle:
    """The ground truth of the pool: every selected image is labeled the moment it is selected."""

    name = "simulated"
    # The launcher's questions, answered before the run starts (class level: no oracle is open yet).
    knows_boxes_before_labeling = True  # budget_boxes can count an image's boxes before buying it
    needs_ranking_model = False  # the ranking model is fetched only for pictures (optional)

    @staticmethod
    def prepare_run(run_id: str, work: Path) -> str | None:
        """The labels file the workers open (None: the ground truth needs none)."""
        return None

    def __init__(self, ground_truth: Mapping[str, Frame]):
        self.labels_of = ground_truth

    @classmethod
    def open(cls, *, ground_truth: Mapping[str, Frame], labels_file: str | Path | None) -> "SimulatedOracle":
        return cls(ground_truth)

    def missing(self, state: LabeledState) -> dict[int, list[str]]:
        return {}

    def labeled_frames(self, state: LabeledState) -> list[Frame]:
        return [self.labels_of[n] for n in state.labeled()]

    def request(self, cycle: int, picked: Sequence[str], missing: Mapping[int, list[str]], **export: Any) -> None:
        raise RuntimeError("the simulated oracle labels every image it is shown: there is nothing to request")

    def labels_arrived(self, tracker: Any, run_id: str) -> None:
        pass


class FilesOracle:
    """Labels people made, imported into an `annotation.LabelStore`; a cycle without all of them waits."""

    name = "files"
    knows_boxes_before_labeling = False  # an image's boxes are known only once people return them
    needs_ranking_model = True  # it pre-annotates cycle 1's batch, before the run has a model of its own

    @staticmethod
    def prepare_run(run_id: str, work: Path) -> str | None:
        """The run's label store as a local file, merged under the labels lock (an import may be running)."""
        with locks.labels_lock(work, run_id):
            return str(sync_label_store(run_id, work))

    def __init__(self, store: annotation.LabelStore):
        self.store = store

    @classmethod
    def open(cls, *, ground_truth: Mapping[str, Frame], labels_file: str | Path | None) -> "FilesOracle":
        return cls(annotation.LabelStore.load(labels_file) if labels_file else annotation.LabelStore())

    @property
    def labels_of(self) -> Mapping[str, Frame]:
        return self.store.frames

    def missing(self, state: LabeledState) -> dict[int, list[str]]:
        return annotation.missing_labels(self.store, state.to_dict())

    def labeled_frames(self, state: LabeledState) -> list[Frame]:
        return [self.store.frames[n] for n in state.labeled()]

    def request(self, cycle: int, picked: Sequence[str], missing: Mapping[int, list[str]], *, images: Path,
                out: Path, predictions: dict | None, model_version: str, url_prefix: str | None, data: str,
                tracker: Any, run_id: str) -> None:
        """Export the cycle's batch to `out` (pre-annotated with `predictions`), upload it, mark the run
        waiting for cycle `cycle`."""
        annotation.export_batch(picked, images, out, predictions=predictions, url_prefix=url_prefix,
                                model_version=model_version)
        if not url_prefix:
            print(annotation.empty_prefix_warning(images, data), flush=True)
        tracker.log_artifacts(out, f"annotation/cycle_{cycle:03d}")
        tracker.set_waiting(run_id, cycle)
        for waiting_cycle, names in sorted(missing.items()):
            print(f"cycle {waiting_cycle}: {len(names)} selected image(s) need labels", flush=True)

    def labels_arrived(self, tracker: Any, run_id: str) -> None:
        tracker.set_waiting(run_id, None)


ORACLE_TYPES = {cls.name: cls for cls in (SimulatedOracle, FilesOracle)}


def oracle_for(name: str, *, ground_truth: Mapping[str, Frame], labels_file: str | Path | None):
    """The oracle called `name`: the ground truth, or the label store in `labels_file` (none yet: empty)."""
    if name not in ORACLE_TYPES:
        raise ValueError(f"oracle must be one of {tuple(ORACLE_TYPES)}, got {name!r}")
    return ORACLE_TYPES[name].open(ground_truth=ground_truth, labels_file=labels_file)


# --- the run's label store (the files oracle's side of `alod import-labels`) ---------------------


def label_store_path(run_id: str, work: Path) -> Path:
    return RunFolder(work, run_id) / run_folder.LABELS


def sync_label_store(run_id: str, work: Path) -> Path:
    """The run's bought labels as a local file: the artifact's, plus anything only here.

    The local copy is written before every upload, so it is never older than the
    artifact from this machine; labels only in the local copy (an upload that
    failed) win and are uploaded again.
    """
    local = label_store_path(run_id, work)
    store = annotation.LabelStore()
    try:
        remote = tracking.download_run_artifact(run_id, run_folder.LABELS.artifact, RunFolder(work, run_id).downloads)
        store = annotation.LabelStore.load(remote)
    except tracking.TrackingError:
        pass  # nothing imported yet (or only locally)
    mine = annotation.LabelStore.load(local) if local.is_file() else annotation.LabelStore()
    unsent = [n for n in mine.frames if n not in store or not annotation.same_labels(mine.frames[n], store.frames[n])]
    store.frames.update(mine.frames)
    store.save(local)
    if unsent:
        tracking.log_artifact_to(run_id, local, run_folder.LABELS.artifact_dir)
    return local


def labeled_state_of_run(run_id: str, work: Path) -> Path | None:
    """The labeled state of an interrupted run (what it selected, so what people are asked to label):
    local copy first, else its artifact."""
    return RunFolder(work, run_id).local_or_artifact(run_folder.LABELED)
