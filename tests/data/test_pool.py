import pytest

from alod.data.pool import LabeledState


def test_state_roundtrip_and_truncation(tmp_path):
    state = LabeledState()
    state.add(["a", "b"], 1)
    state.add(["c"], 2)
    path = state.save(tmp_path / "labeled.json")
    back = LabeledState.load(path)
    assert back.to_dict() == {"a": 1, "b": 1, "c": 2}
    assert back.labeled(up_to_cycle=1) == ["a", "b"]
    assert back.truncated(1).to_dict() == {"a": 1, "b": 1}
    assert back.selected_in(2) == ["c"] and back.last_cycle == 2


def test_state_refuses_relabeling(tmp_path):
    state = LabeledState({"a": 1})
    with pytest.raises(ValueError, match="already labeled"):
        state.add(["a"], 2)


def test_state_load_names_file_on_garbage(tmp_path):
    bad = tmp_path / "labeled.json"
    bad.write_text('{"a": "one"}')
    with pytest.raises(ValueError, match="labeled.json"):
        LabeledState.load(bad)
