"""`alod import-labels`: merge labels from annotators into a waiting `files`-oracle cycle run.

Order of writes, so that a kill at any point loses nothing: the merged store is
written locally (atomically) first, then uploaded to the run's artifacts, then
an import record is logged. Re-running the same import after a kill finds the
labels identical, changes nothing and uploads the store again.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from alod import annotation, locks, tracking
from alod.data.pool import LabeledState
from alod.faults import maybe_delay, maybe_fail
from alod.fileio import write_json_atomic
from alod.oracles import label_store_path, labeled_state_of_run, sync_label_store


class ImportLabelsError(ValueError):
    """The run cannot take labels (wrong run, nothing selected yet)."""


def import_labels(run_id: str, labels: str | Path, *, work_dir: str | Path = ".alod",
                  replace: bool = False) -> annotation.ImportReport:
    tracking.setup_client()
    run = tracking.get_run(run_id)
    if run.data.tags.get("alod.step") != "cycle":
        raise ImportLabelsError(f"run {run_id} is a {run.data.tags.get('alod.step')!r} run, not a cycle run")
    if run.data.params.get("oracle") != "files":
        raise ImportLabelsError(
            f"run {run_id} uses the {run.data.params.get('oracle', 'simulated')!r} oracle: it takes its labels "
            "from the ground truth; start the cycle with --oracle files to label by hand")
    work = Path(work_dir)
    # One import at a time per run: a second one waits, then merges on top of the first (without the
    # lock, the later write of labels.json dropped what the earlier import had just added).
    with locks.labels_lock(work, run_id):
        state_file = labeled_state_of_run(run_id, work)
        if state_file is None:
            raise ImportLabelsError(f"run {run_id} has selected no images yet: nothing to label")
        requested = LabeledState.load(state_file).to_dict()
        store = annotation.LabelStore.load(sync_label_store(run_id, work))
        found = annotation.read_labels_file(labels, requested)
        report = annotation.merge_labels(store, found.frames, requested, replace=replace, source=str(labels))
        report.skipped_boxes, report.format, report.cancelled = found.skipped_boxes, found.format, found.cancelled
        report.skipped_reasons = dict(found.report.skipped) if found.report is not None else {}
        report.renamed = {**found.renamed, **report.renamed}
        report.not_annotated = [n for n in found.not_annotated if n in requested and n not in store]

        local = label_store_path(run_id, work)
        maybe_delay("import_before_write")  # read and merged, not yet written
        store.save(local)
        maybe_fail("import_after_local", "import")
        tracking.log_artifact_to(run_id, local, "labels")
        maybe_fail("import_after_upload", "import")
        record = {"source": str(labels), "sha256": hashlib.sha256(Path(labels).read_bytes()).hexdigest()
                  if Path(labels).is_file() else None, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  **report.as_dict()}
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000_000:09d}"
        path = write_json_atomic(record, local.parent / "imports" / f"import_{stamp}.json", indent=1)
        tracking.log_artifact_to(run_id, path, "labels/imports")
    return report
