"""Files generated from the parameter declarations (alod.params): MLproject and the README's tables.

    python -m entrypoints.generated          # rewrite both
    python -m entrypoints.generated --check  # exit 1 when either is stale (what the tests check)

Each entry point's MLproject parameters, their types and defaults, and the
command line that passes them to the `alod` command come from the step's params
dataclass, as do the README tables between the `<!-- parameters: NAME -->` and
`<!-- /parameters -->` markers. Edit the declarations, then run this.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from alod import params
from alod.params import CycleParams, ImportLabelsParams, MainParams, PretrainParams, RankParams

ROOT = Path(__file__).resolve().parents[1]

# MLproject entry point -> (alod command, params class)
ENTRY_POINTS: dict[str, tuple[str, type]] = {
    "pretrain": ("pretrain", PretrainParams),
    "rank": ("rank", RankParams),
    "cycle": ("cycle", CycleParams),
    "import_labels": ("import-labels", ImportLabelsParams),
    "main": ("run", MainParams),
}

MLPROJECT_HEADER = """\
# Generated from alod/params.py by `python -m entrypoints.generated`: edit the declarations there.
name: alod

# `mlflow run .` builds python_env.yaml with virtualenv (pyenv + pip), no conda needed. For a
# conda environment instead: conda env create -f conda.yaml, activate it, add --env-manager local.
python_env: python_env.yaml

# Defaults reproduce the original study on BDD100K (70 % pretraining, 14 batches
# of 5 000, 1 000 images per cycle, 50 epochs, model reset each cycle,
# fasterrcnn_resnet50_fpn). The README shows the small CPU settings of the demo.
# MLflow acts on the types `path` and `uri` only; `int`, `float` and `string` document the value.
entry_points:
"""


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in params.step_fields(cls, user=True) if params.info(f).mlproject]


def _mlproject_type(f: dataclasses.Field, hint) -> str:
    spec, kind = params.info(f), params.base_type(hint)
    if spec.mlproject_type:
        return spec.mlproject_type
    return {int: "int", float: "float"}.get(kind, "string")


def _default(f: dataclasses.Field):
    """What MLproject passes, and the README shows, when the parameter is left out."""
    spec = params.info(f)
    return spec.mlproject_default if spec.mlproject_default is not None else params.default_of(f)


def _text(value) -> str | None:
    """A default as text on a command line: true/false, comma-separated lists; None stays None."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return None if value is None else str(value)


def _mlproject_default(f: dataclasses.Field) -> str:
    value = _default(f)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return f'"{_text(value) or ""}"'  # strings, booleans and lists quoted; no default: ""


def _wrap(words: list[str], indent: str, width: int = 110) -> str:
    lines, line = [], indent
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += word + " "
    lines.append(line.rstrip())
    return "\n".join(lines)


def mlproject_text() -> str:
    out = [MLPROJECT_HEADER]
    for entry, (command, cls) in ENTRY_POINTS.items():
        hints = params.type_hints(cls)
        out.append(f"  {entry}:\n    parameters:\n")
        words = ["python -m entrypoints.cli " + command]  # an option stays on one line with its value
        for f in _fields(cls):
            spec = params.info(f)
            kind = _mlproject_type(f, hints[f.name])
            if spec.argument:
                out.append(f"      {f.name}: {kind}\n")
                words.append("{" + f.name + "}")
            else:
                out.append(f"      {f.name}: {{type: {kind}, default: {_mlproject_default(f)}}}\n")
                words.append(params.option_name(f.name, spec) + " {" + f.name + "}")
        out.append("    command: >-\n" + _wrap(words, "      ") + "\n\n")
    return "".join(out).rstrip() + "\n"


def _readme_default(f: dataclasses.Field) -> str:
    if params.info(f).shown_default:
        return f"({params.info(f).shown_default})"
    text = _text(_default(f))
    return "(none)" if text is None else '""' if text == "" else text


def readme_table(cls: type) -> str:
    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    for f in _fields(cls):
        meaning = params.info(f).help.replace("|", "\\|")
        rows.append(f"| {f.name} | {_readme_default(f)} | {meaning} |")
    return "\n".join(rows)


_MARKED = re.compile(r"(<!-- parameters: (\w+) -->\n)(.*?)(<!-- /parameters -->)", re.S)


def readme_text(readme: str) -> str:
    def table(m: re.Match) -> str:
        if m.group(2) not in ENTRY_POINTS:
            raise ValueError(f"README marks parameters of {m.group(2)!r}, not an entry point "
                             f"({', '.join(ENTRY_POINTS)})")
        return m.group(1) + readme_table(ENTRY_POINTS[m.group(2)][1]) + "\n" + m.group(4)
    readme = _MARKED.sub(table, readme)
    return _SAMPLERS.sub(lambda m: m.group(1) + samplers_table() + "\n" + m.group(3), readme)


def samplers_table() -> str:
    from alod.active.bandit import AUTO, AUTO_DESCRIPTION
    from alod.active.samplers import SAMPLERS

    rows = ["| sampler | score |", "|---|---|"]
    rows += [f"| `{name}` | {s.description} |" for name, s in SAMPLERS.items()]
    rows.append(f"| `{AUTO}` | {AUTO_DESCRIPTION} |")
    return "\n".join(rows)


_SAMPLERS = re.compile(r"(<!-- samplers -->\n)(.*?)(<!-- /samplers -->)", re.S)


def stale() -> list[str]:
    """The generated files whose content differs from what the declarations give."""
    found = []
    if (ROOT / "MLproject").read_text() != mlproject_text():
        found.append("MLproject")
    readme = (ROOT / "README.md").read_text()
    if readme_text(readme) != readme:
        found.append("README.md")
    return found


def main(argv: list[str]) -> int:
    if "--check" in argv:
        old = stale()
        if old:
            print(f"stale: {', '.join(old)}; run `python -m entrypoints.generated`", file=sys.stderr)
            return 1
        return 0
    (ROOT / "MLproject").write_text(mlproject_text())
    readme = ROOT / "README.md"
    readme.write_text(readme_text(readme.read_text()))
    print("wrote MLproject and the README's parameter tables")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
