"""The oracles: who labels what a cycle selected."""

from __future__ import annotations

import numpy as np
import pytest

from alod import annotation
from alod.data.frames import Frame
from alod.data.pool import LabeledState
from alod.oracles import ORACLE_TYPES, FilesOracle, SimulatedOracle, oracle_for
from alod.params import ORACLES


def _frame(name: str, boxes: int = 1) -> Frame:
    return Frame(name=name, boxes=np.array([[0, 0, 4, 4]] * boxes, np.float32).reshape(-1, 4), labels=[1] * boxes,
                 width=8, height=8)


TRUTH = {n: _frame(n, i + 1) for i, n in enumerate(["a", "b", "c"])}


def test_every_oracle_the_step_accepts_is_registered():
    assert tuple(ORACLE_TYPES) == ORACLES
    with pytest.raises(ValueError, match="oracle must be one of"):
        oracle_for("people", ground_truth=TRUTH, labels_file=None)


def test_the_simulated_oracle_labels_with_the_ground_truth():
    oracle = oracle_for("simulated", ground_truth=TRUTH, labels_file=None)
    assert isinstance(oracle, SimulatedOracle)
    state = LabeledState({"b": 1, "a": 2})
    assert oracle.missing(state) == {}
    assert oracle.labeled_frames(state) == [TRUTH["b"], TRUTH["a"]]


def test_the_files_oracle_reports_what_people_have_not_labeled_yet(tmp_path):
    store_file = annotation.LabelStore([TRUTH["a"]]).save(tmp_path / "labels.json")
    oracle = oracle_for("files", ground_truth=TRUTH, labels_file=store_file)
    assert isinstance(oracle, FilesOracle) and set(oracle.labels_of) == {"a"}
    state = LabeledState({"a": 1, "b": 1, "c": 2})
    assert oracle.missing(state) == {1: ["b"], 2: ["c"]}
    assert oracle_for("files", ground_truth=TRUTH, labels_file=None).missing(state) == {1: ["a", "b"], 2: ["c"]}
    assert [f.name for f in oracle.labeled_frames(LabeledState({"a": 1}))] == ["a"]


def test_a_box_budget_is_refused_where_the_oracle_cannot_count_boxes_before_labeling():
    from alod.steps.cycle import CycleInputError, CycleParams, run_cycles

    assert SimulatedOracle.knows_boxes_before_labeling and not FilesOracle.knows_boxes_before_labeling
    # refused before opening a run or reading data (data=None would fail later, differently)
    with pytest.raises(CycleInputError, match="budget_boxes needs the box count"):
        run_cycles(CycleParams(protocol="pool", oracle="files", budget_boxes=10))


def test_the_files_oracle_prepares_the_runs_label_store(tmp_path, sqlite_tracking):
    from alod import tracking

    with sqlite_tracking(tmp_path):
        tracking.setup("oracles")
        with tracking.run("cycle") as run_id:
            assert SimulatedOracle.prepare_run(run_id, tmp_path) is None
            path = FilesOracle.prepare_run(run_id, tmp_path)
    store = annotation.LabelStore.load(path)
    assert path.endswith("labels.json") and run_id in path and not store.frames
