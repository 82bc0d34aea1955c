"""alod.tracking against a real SQLite store: the champion alias."""

from __future__ import annotations

from pathlib import Path

import pytest

from alod import tracking

MODEL = "alod-detector-test"


@pytest.fixture()
def registry(tmp_path, sqlite_tracking):
    from mlflow import MlflowClient

    with sqlite_tracking(tmp_path):
        client = MlflowClient()
        client.create_registered_model(MODEL)

        def version(mAP50: float) -> str:
            v = client.create_model_version(MODEL, source=str(tmp_path), tags={"mAP50": str(mAP50)})
            return str(v.version)

        yield client, version


def champion(client) -> str:
    return str(client.get_model_version_by_alias(MODEL, tracking.CHAMPION).version)


def test_champion_moves_only_to_a_better_version(registry):
    client, version = registry
    first, worse, better = version(0.30), version(0.20), version(0.40)
    assert tracking.promote_if_better(MODEL, first, "mAP50", 0.30)
    assert not tracking.promote_if_better(MODEL, worse, "mAP50", 0.20)
    assert champion(client) == first
    assert tracking.promote_if_better(MODEL, better, "mAP50", 0.40)
    assert champion(client) == better


def test_a_worse_version_set_at_the_same_moment_does_not_keep_the_champion(registry, monkeypatch):
    """Two runs side by side both read 'no champion yet'; the worse one's alias lands right after the
    better one's. The better one looks again and takes the alias back."""
    client, version = registry
    better, worse = version(0.40), version(0.20)
    original = tracking.set_alias
    raced = []

    def set_alias_then_the_other_run_sets_its_own(name, alias, v):
        original(name, alias, v)
        if not raced:
            raced.append(v)
            original(name, alias, worse)  # the other process, which read the holder before either set

    monkeypatch.setattr(tracking, "set_alias", set_alias_then_the_other_run_sets_its_own)
    assert tracking.promote_if_better(MODEL, better, "mAP50", 0.40)
    assert champion(client) == better


def test_downloads_of_different_runs_into_one_folder_keep_each_runs_file(tmp_path, sqlite_tracking):
    """`alod run --jobs 2`: two cycle processes fetch their rankings (same artifact path, different
    runs) into one work folder; each must read its own run's file, whole (CI once read 0 bytes)."""
    import threading

    import mlflow

    with sqlite_tracking(tmp_path):
        mlflow.set_experiment("downloads")
        runs = {}
        for name, size in (("a", 300_000), ("b", 200_000)):
            body = (name * size).encode()
            src = tmp_path / name / "ranking.parquet"
            src.parent.mkdir()
            src.write_bytes(body)
            with mlflow.start_run() as run:
                mlflow.log_artifact(str(src), "ranking")
            runs[run.info.run_id] = body

        shared = tmp_path / "work" / "downloads"
        first, second = list(runs)
        path_first = tracking.download_run_artifact(first, "ranking/ranking.parquet", shared)
        path_second = tracking.download_run_artifact(second, "ranking/ranking.parquet", shared)
        assert path_first.read_bytes() == runs[first] and path_second.read_bytes() == runs[second]

        wrong = []

        def fetch(run_id: str) -> None:
            for _ in range(15):
                got = tracking.download_run_artifact(run_id, "ranking/ranking.parquet", shared).read_bytes()
                if got != runs[run_id]:
                    wrong.append((run_id, len(got)))

        threads = [threading.Thread(target=fetch, args=(run_id,)) for run_id in list(runs) * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []
        assert not [p for p in shared.iterdir() if p.name.startswith(".partial")]


def test_download_into_a_relative_folder(tmp_path, sqlite_tracking, monkeypatch):
    """work_dir defaults to the relative `.alod`: the `make demo` rank step once failed on it."""
    import mlflow

    with sqlite_tracking(tmp_path):
        mlflow.set_experiment("downloads")
        src = tmp_path / "ranking.parquet"
        src.write_bytes(b"rows")
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(src), "ranking")
        monkeypatch.chdir(tmp_path)
        path = tracking.download_run_artifact(run.info.run_id, "ranking/ranking.parquet", Path(".alod") / "downloads")
        assert path.read_bytes() == b"rows"
        assert path.resolve().is_relative_to(tmp_path.resolve() / ".alod" / "downloads")
