"""MLproject and the click commands agree: every parameter reaches an option, and
its default is the option's default (so `mlflow run` and `alod` start the same run,
and a resume can tell a default from a choice)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml

from entrypoints.cli import cli
from entrypoints.options import MLPROJECT_DATA_DEFAULT

MLPROJECT = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())


def _same(mlproject_default, option: click.Option) -> bool:
    if option.default is None:
        return mlproject_default in ("", None)
    value = option.type_cast_value(click.Context(click.Command("x")), str(mlproject_default))
    return value == option.default or str(value) == str(option.default)


# `mlflow run` needs a data root to default to; `alod` has none, because it also takes
# explicit label and image paths instead of a root. A resume reads it as "not chosen".
CLI_HAS_NO_DEFAULT = {"data": MLPROJECT_DATA_DEFAULT}


@pytest.mark.parametrize("entry", sorted(MLPROJECT["entry_points"]))
def test_every_parameter_reaches_an_option_with_the_same_default(entry: str) -> None:
    spec = MLPROJECT["entry_points"][entry]
    words = spec["command"].split()
    assert words[:3] == ["python", "-m", "entrypoints.cli"], spec["command"]
    command = cli
    for word in words[3:]:  # the (sub)command path
        if word.startswith("-") or "{" in word:
            break
        command = command.commands[word]
    options = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    arguments = {p.name for p in command.params if isinstance(p, click.Argument)}
    passed = []
    for before, word in zip(words, words[1:]):
        name = re.fullmatch(r"\{(\w+)\}", word)
        if name is None:
            continue
        passed.append(name.group(1))
        if not before.startswith("--"):
            assert name.group(1) in arguments, f"{entry}: {word} is not an argument of `alod {command.name}`"
            continue
        assert before in options, f"{entry}: {before} is not an option of `alod {command.name}`"
        default = spec["parameters"][name.group(1)].get("default")
        if name.group(1) in CLI_HAS_NO_DEFAULT:
            assert default == CLI_HAS_NO_DEFAULT[name.group(1)], (entry, default)
            continue
        assert _same(default, options[before]), (
            f"{entry}: MLproject default {name.group(1)}={default!r} but `alod {command.name} {before}` "
            f"defaults to {options[before].default!r}")
    assert sorted(passed) == sorted(spec["parameters"]), "every MLproject parameter is passed exactly once"


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
# where the README documents each entry point's parameters
README_SECTIONS = {"pretrain": "### pretrain", "rank": "### rank", "cycle": "### cycle", "main": "### main",
                   "import_labels": "## People as the oracle"}


@pytest.mark.parametrize("entry", sorted(MLPROJECT["entry_points"]))
def test_readme_documents_every_parameter(entry: str) -> None:
    heading = README_SECTIONS[entry]
    start = README.index(heading + "\n")
    end = re.search(r"\n#{2,3} ", README[start + len(heading):])  # the next heading
    section = README[start:start + len(heading) + end.start()] if end else README[start:]
    # parameter names as the tables' first column lists them ("epochs, batch_size, lr"), or in the text
    table_names = {n.strip() for row in re.findall(r"^\| ([^|]+) \|", section, re.M) for n in row.split(",")}
    for name in MLPROJECT["entry_points"][entry]["parameters"]:
        spellings = {name, "--" + name.replace("_", "-")}  # MLproject's and alod's
        assert name in table_names or any(re.search(rf"(?<![\w-]){re.escape(w)}\b", section) for w in spellings), (
            f"README {heading}: {name} undocumented")
