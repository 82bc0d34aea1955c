"""`alod synth`: write synthetic driving scenes in the BDD100K layout (the embedded demo data)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import click

from alod.data.categories import CATEGORIES
from alod.data.synthetic import DEFAULT_SIZE, DOMAINS, write_dataset
from entrypoints.data_cmd import ImageSize


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", type=click.IntRange(min=0), default=500, show_default=True, help="Training images.")
@click.option("--val", type=click.IntRange(min=0), default=100, show_default=True, help="Validation images.")
@click.option("--test", type=click.IntRange(min=0), default=0, show_default=True, help="Test images (0: no test split).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Same seed, same files, byte for byte.")
@click.option("--size", type=ImageSize(), default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}", show_default=True,
              help="Image size WIDTHxHEIGHT (at least 16x16).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes rendering in parallel; the output does not depend on it.")
@click.option("--domain", type=click.Choice(sorted(DOMAINS)), default="target", show_default=True,
              help="target: every class and condition in BDD100K's proportions (4 classes rare); urban: "
                   "the same classes and conditions on city and residential streets, every class common "
                   "enough to learn from a few hundred images (the demo's and the benchmark's pool); "
                   "source: what the shipped starting weights were trained on (no rider, train, motorcycle, "
                   "bicycle or traffic sign; no night, rain, fog or snow).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing split data in OUT even if alod did not generate it.")
def synth(out: Path, train: int, val: int, test: int, seed: int, size: tuple[int, int], workers: int,
          domain: str, overwrite: bool) -> None:
    """Write synthetic driving scenes to OUT in the BDD100K layout.

    Images go to OUT/images/100k/<split>/ and det_20 labels to
    OUT/labels/det_20/det_<split>.json, ready for `--data OUT`.
    """
    from alod.data.bdd100k import load_labels
    from alod.data.frames import LabelError

    if min(size) < 16:
        raise click.BadParameter(f"{size[0]}x{size[1]} is too small; use at least 16x16", param_hint="'--size'")
    if train + val + test == 0:
        raise click.UsageError("nothing to write: --train, --val and --test are all 0")
    start = time.perf_counter()
    try:
        written = write_dataset(out, train=train, val=val, test=test, seed=seed, size=size, workers=workers,
                                overwrite=overwrite, domain=domain)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    seconds = time.perf_counter() - start

    boxes: dict[str, Counter] = {}
    ignored: dict[str, int] = {}
    for split, path in written.items():
        try:
            frames, report = load_labels(path)
        except LabelError as e:  # the generator wrote something the reader refuses: a bug
            raise click.ClickException(f"generated labels do not load back: {e}") from None
        boxes[split] = report.boxes_per_category
        ignored[split] = sum(report.ignored_per_category.values())
        tod = Counter(f.attributes.get("timeofday") for f in frames)
        click.echo(f"{split:5s}: {len(frames):6d} images, {report.boxes:7d} boxes, {ignored[split]} ignore regions "
                   f"({', '.join(f'{k} {v}' for k, v in tod.most_common())})  -> {path}")
    splits = list(written)
    click.echo("\nboxes per category:")
    click.echo(f"  {'category':14s}" + "".join(f"{s:>9s}" for s in splits) + "    share")
    total = sum(sum(c.values()) for c in boxes.values()) or 1
    for name in CATEGORIES:
        n = sum(boxes[s].get(name, 0) for s in splits)
        click.echo(f"  {name:14s}" + "".join(f"{boxes[s].get(name, 0):9d}" for s in splits) + f"  {100 * n / total:6.2f}%")
    n_images = train + val + test
    click.echo(f"\n{n_images} images ({size[0]}x{size[1]}, seed {seed}, {domain} domain: "
               f"{DOMAINS[domain].description}) in {seconds:.1f} s "
               f"({n_images / seconds:.0f} images/s, {workers} worker{'s' if workers > 1 else ''}) -> {out}")
