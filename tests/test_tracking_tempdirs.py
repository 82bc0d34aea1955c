"""Registry and artifact downloads leave no temporary folders behind (they used to pile up in /tmp:
one `alod-model-*` per `alod predict`, `alod evaluate --model-uri`, `load_registered_detector`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from alod import tracking


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    """resolve + download without a tracking store: the download writes a .pt file where it is told."""
    monkeypatch.setattr(tempfile_module(), "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tracking, "resolve_model_version", lambda uri: SimpleNamespace(name="m", version="1"))

    def download(artifact_uri=None, dst_path=None, **_):
        out = Path(dst_path) / "model"
        (out / "artifacts").mkdir(parents=True)
        (out / "artifacts" / "checkpoint.pt").write_bytes(b"x")
        return str(out)

    monkeypatch.setattr(tracking.mlflow.artifacts, "download_artifacts", download)
    return tmp_path / "tmp"


def tempfile_module():
    import tempfile

    return tempfile


def test_registered_checkpoint_removes_its_folder(fake_registry):
    with tracking.registered_checkpoint("models:/m/1") as (path, version):
        assert path.is_file() and version.version == "1"
        assert path.is_relative_to(fake_registry)
    assert list(fake_registry.iterdir()) == []


def test_caller_owned_destination_is_kept(fake_registry, tmp_path):
    path, _ = tracking.download_registered_checkpoint("models:/m/1", tmp_path / "mine")
    assert path.is_file() and path.is_relative_to(tmp_path / "mine")
    assert list(fake_registry.iterdir()) == []


def test_default_destination_is_removed_at_exit(tmp_path):
    """Without `dst` (library callers of old), the folder lives until the process exits."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = textwrap.dedent(f"""
        import tempfile; from pathlib import Path; from types import SimpleNamespace
        tempfile.tempdir = {str(tmp)!r}
        from alod import tracking
        tracking.resolve_model_version = lambda uri: SimpleNamespace(name="m", version="1")
        def download(artifact_uri=None, dst_path=None, **_):
            (Path(dst_path) / "artifacts").mkdir(parents=True)
            (Path(dst_path) / "artifacts" / "c.pt").write_bytes(b"x")
            return dst_path
        tracking.mlflow.artifacts.download_artifacts = download
        path, _ = tracking.download_registered_checkpoint("models:/m/1")
        assert path.is_file()
        print(path)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).relative_to(tmp).parts[0].startswith("alod-model-")
    assert [p for p in tmp.iterdir() if p.name.startswith("alod-")] == []


def test_predict_command_leaves_no_model_folder(fake_registry, monkeypatch, tmp_path):
    """The commands read the checkpoint, then the folder goes (the model is in memory)."""
    from click.testing import CliRunner

    import alod.models as models
    from entrypoints.cli import cli

    seen = []

    def fake_load(path, *a, **k):
        seen.append(Path(path))
        assert Path(path).is_file()
        raise ValueError("stop here: the checkpoint was read")

    monkeypatch.setattr(models, "detector_from_checkpoint", fake_load)
    image = tmp_path / "a.jpg"
    image.write_bytes(b"not read")
    result = CliRunner().invoke(cli, ["predict", "--model-uri", "models:/m/1", str(image), "--out",
                                      str(tmp_path / "p.json")])
    assert "stop here" in result.output and seen
    assert [p for p in fake_registry.iterdir() if p.name.startswith("alod-")] == []
