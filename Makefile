# The two commands of the README: `make demo` and `make test`.
# Each sets up .venv on first use (torch pinned to the build this project is tested with).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ALOD := $(PY) -m entrypoints.cli
DEMO_DATA ?= demo-data
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db

.PHONY: setup test test-fast demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# Test files run in parallel (pytest-xdist, one file per worker at a time so module
# fixtures are built once), one OpenMP thread per worker: 6.8 instead of 10.6 minutes
# on 2 cores. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# The embedded default: synthetic BDD100K-format target scenes (the `urban` domain: every class
# common enough to learn from the pool), the tiny CPU detector starting
# from its shipped weights (trained on the synthetic source domain), local SQLite tracking, the
# study's protocol (pretrain: the starting weights as they are; rank from the registry; cycles,
# each warm-started from the last: --reset false), random against entropy, side by side (--jobs 2).
demo: setup
	$(ALOD) synth $(DEMO_DATA) --train 400 --val 150 --seed 0 --domain urban
	$(ALOD) run --data $(DEMO_DATA) --arch tiny --samplers random,entropy --seeds 0 \
		--pretrain-epochs 0 --epochs 1 --min-iterations 250 --roi-samples 32 --batch-size 4 --lr 0.04 \
		--cycles 4 --per-cycle 25 --batches 4 --batch-images 100 --reset false --workers 0 --jobs 2 \
		--experiment-name alod-demo
	@echo
	@echo "Open the MLflow UI:  $(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI)"
	@echo "then http://127.0.0.1:5000 -> experiment alod-demo -> Training runs -> search tags.\`alod.step\` = 'cycle' -> Chart view (mAP50 by step; README: Comparing samplers)."

# Serve a registered detector over REST on 127.0.0.1 (see README, "Serving"). `mlflow models
# serve` starts `uvicorn` from PATH, so the venv's bin folder goes first on it.
MODEL ?= models:/alod-detector@champion
PORT ?= 5001
.PHONY: serve
serve: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/mlflow models serve -m "$(MODEL)" \
		--env-manager local -h 127.0.0.1 -p $(PORT)

clean:
	rm -rf $(VENV) $(DEMO_DATA) mlflow.db mlruns mlartifacts .alod compare

# A throwaway team stack on 127.0.0.1 in the foreground: PostgreSQL (system binaries) + moto S3 +
# `mlflow server` with proxied artifacts and basic auth; prints the client's `export` lines,
# Ctrl-C stops and deletes everything. TEAM_ARGS="--artifacts direct", "--port 0", "" (no auth).
TEAM_ARGS ?= --auth --user alice
.PHONY: team-server
team-server: setup
	$(PY) -m tools.teamstack $(TEAM_ARGS)
