"""The engine runs where MLflow is not installed (a bare GPU machine, a notebook)."""

from __future__ import annotations

import subprocess
import sys


def test_engine_data_and_models_import_no_mlflow_or_click():
    modules = ("alod.engine.train", "alod.engine.infer", "alod.engine.evaluate", "alod.engine.distributed",
               "alod.engine.flops", "alod.models", "alod.data.bdd100k", "alod.data.dataset", "alod.data.synthetic")
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
            "bad = [m for m in ('mlflow', 'click') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
