"""`alod import-labels`: labels from annotators into a run waiting on the files oracle."""

from __future__ import annotations

from pathlib import Path

import click

from alod.params import ImportLabelsParams
from entrypoints.options import friendly_errors, options_for


@click.command(name="import-labels")
@options_for(ImportLabelsParams)
@friendly_errors
def import_labels(run_id: str, labels: Path, replace: bool, work_dir: str) -> None:
    """Merge LABELS into cycle run RUN_ID.

    LABELS as the tools export them: Label Studio JSON, JSON-MIN or COCO (the
    downloaded zip or its result.json), CVAT COCO 1.0 or CVAT for images 1.1
    (the zip, or its annotations.xml); or BDD100K /
    Scalabel JSON, a folder of per-image files, COCO JSON. The format is read
    from the content. Images the file lists but nobody annotated stay without labels.
    """
    from alod.steps.import_labels import import_labels as run_import

    report = run_import(run_id, labels, work_dir=work_dir, replace=replace)
    click.echo(report.summary())
    if report.missing:
        click.echo(f"run {run_id} keeps waiting; import the rest, then resume it.")
    else:
        where = "" if work_dir == ".alod" else f" --work-dir {work_dir}"
        click.echo(f"every selected image has labels: resume the run with "
                   f"`alod cycle --resume-run-id {run_id}{where}`")
