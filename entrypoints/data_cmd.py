"""`alod data`: check BDD100K label files and convert them to COCO."""

from __future__ import annotations

from pathlib import Path

import click

from alod.data.bdd100k import MISSING_IMAGE, UNREADABLE_IMAGE, check_labels, load_labels
from alod.data.coco import DEFAULT_SIZE, write_coco
from alod.data.frames import LabelError, LoadReport

SHOWN_WARNINGS = 5


class ImageSize(click.ParamType):
    """WIDTHxHEIGHT, e.g. 1280x720."""

    name = "WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            w, h = (int(v) for v in str(value).lower().split("x"))
            if w <= 0 or h <= 0:
                raise ValueError
        except ValueError:
            self.fail(f"{value!r} is not WIDTHxHEIGHT with positive integers, e.g. 1280x720", param, ctx)
        return w, h


@click.group()
def data() -> None:
    """Inspect and convert BDD100K label files."""


@data.command()
@click.argument("labels", type=click.Path(path_type=Path))
@click.option("--images", type=click.Path(path_type=Path), help="Image folder: report missing, unreadable, truncated or oversized images (headers only, no decode); clip boxes to real sizes.")
@click.option("--skip-unknown", is_flag=True, help="Skip labels of unknown categories instead of failing.")
@click.option("--image-size", type=ImageSize(), help="Clip boxes to this size where the file gives none (BDD100K: 1280x720).")
def check(labels: Path, images: Path | None, skip_unknown: bool, image_size: tuple[int, int] | None) -> None:
    """Validate LABELS (file or folder) and summarise what would be loaded."""
    try:
        _, report = check_labels(labels, images=images, skip_unknown=skip_unknown, image_size=image_size)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    _print_summary(report, images_checked=images is not None)
    if report.problems:
        click.echo(f"\n{len(report.problems)} problem(s): the labels are not usable as they are.", err=True)
        for p in report.problems:
            click.echo(f"  - {p}", err=True)
        raise SystemExit(1)
    click.echo("\nOK: labels are usable.")


@data.command("to-coco")
@click.argument("labels", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--image-size", type=ImageSize(), help=f"Size of images the file gives none for (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}); boxes are clipped to it.")
@click.option("--skip-unknown", is_flag=True, help="Skip labels of unknown categories instead of failing.")
def to_coco(labels: Path, out: Path, image_size: tuple[int, int] | None, skip_unknown: bool) -> None:
    """Convert LABELS to COCO JSON OUT with the official BDD100K conventions."""
    try:
        frames, report = load_labels(labels, skip_unknown=skip_unknown, image_size=image_size)
        coco = write_coco(frames, out, default_size=image_size or DEFAULT_SIZE)
    except LabelError as e:
        click.echo(f"{len(e.problems)} problem(s): nothing written.", err=True)
        for p in e.problems:
            click.echo(f"  - {p}", err=True)
        raise SystemExit(1) from None
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    crowd = sum(a["iscrowd"] for a in coco["annotations"])
    click.echo(
        f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations "
        f"({crowd} ignore regions as iscrowd=1), {len(coco['categories'])} categories"
    )
    if report.clipped:
        click.echo(f"clipped to the image: {report.clipped} boxes")
    if report.skipped:
        click.echo("skipped: " + ", ".join(f"{reason} {n}" for reason, n in sorted(report.skipped.items())))


def _print_summary(report: LoadReport, *, images_checked: bool) -> None:
    click.echo(f"files: {len(report.files)}")
    click.echo(f"frames: {report.frames}")
    click.echo(f"boxes: {report.boxes}")
    for name, n in sorted(report.boxes_per_category.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {name:<14} {n}")
    if report.ignored_per_category:
        click.echo(f"ignore regions: {sum(report.ignored_per_category.values())}")
        for name, n in sorted(report.ignored_per_category.items(), key=lambda kv: -kv[1]):
            click.echo(f"  {name:<14} {n}")
    if report.clipped:
        click.echo(f"boxes clipped to their image: {report.clipped}")
    if report.skipped:
        click.echo(f"skipped labels: {sum(report.skipped.values())}")
        for reason, n in sorted(report.skipped.items(), key=lambda kv: -kv[1]):
            click.echo(f"  {reason}: {n}")
    if images_checked:
        missing = sum(1 for p in report.problems if p.message.startswith(MISSING_IMAGE))
        unreadable = sum(1 for p in report.problems if p.message.startswith(UNREADABLE_IMAGE))
        click.echo(f"missing images: {missing}")
        click.echo(f"unreadable images: {unreadable}")
    click.echo(f"warnings: {len(report.warnings)}")
    for w in report.warnings[:SHOWN_WARNINGS]:
        click.echo(f"  - {w}")
    if len(report.warnings) > SHOWN_WARNINGS:
        click.echo(f"  ... and {len(report.warnings) - SHOWN_WARNINGS} more")
