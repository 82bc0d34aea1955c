"""The team setup for real: PostgreSQL + an S3 endpoint (moto server) + `mlflow server`
on loopback, driven with `mlflow run` like a team member would.

One stack per module: PostgreSQL (system binaries, a temporary cluster), moto S3
with a bucket made through boto3, and `mlflow server` with proxied artifacts
behind basic auth. A second server on the same database server and bucket runs
direct S3 artifacts. Checked through MlflowClient, boto3 and SQL: runs, metrics,
registered versions, aliases and checkpoint objects; auth refusals; no secret in
anything stored or printed; a tracking-server crash in the middle of a cycle; the
champion served over REST by `mlflow models serve`.

Needs PostgreSQL's server binaries (`.ci/run` installs Debian's `postgresql`).
Without them these tests skip, unless ALOD_REQUIRE_TEAM_STACK=1 (CI) makes that
a failure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tools.teamstack import MlflowServer, Service, TeamStack, free_port, postgres_bin_dir

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "alod-team"
TRAIN, VAL = 48, 16
TINY = dict(arch="tiny", batch_size=4, workers=0, lr=0.04)
ALICE = ("alice", "alice-" + base64.b32encode(os.urandom(10)).decode().lower())
BOB = ("bob", "bob-" + base64.b32encode(os.urandom(10)).decode().lower())


def _require_postgres() -> None:
    if postgres_bin_dir() is None:
        message = "PostgreSQL server binaries not found (Debian: apt-get install -y postgresql)"
        if os.environ.get("ALOD_REQUIRE_TEAM_STACK"):
            pytest.fail(message)
        pytest.skip(message)


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from alod.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("team")
    write_dataset(root / "data", train=TRAIN, val=VAL, seed=0)
    return root


@pytest.fixture(scope="module")
def stack(root):
    """PostgreSQL + moto S3 + mlflow server (proxied artifacts, basic auth), users alice and bob."""
    _require_postgres()
    team = TeamStack(root / "logs", artifacts="proxied", auth=True)
    try:
        team.start()
        team.server.create_user(*ALICE)
        team.server.create_user(*BOB)
        yield team
    finally:
        team.stop()


@pytest.fixture(scope="module")
def logs():
    """Everything the client commands printed (scanned for secrets at the end)."""
    return []


def client_env(server: MlflowServer, user: tuple[str, str] | None, extra: dict | None = None) -> dict:
    """A clean client environment: no MLflow/AWS/PG settings but those of this server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "PG"))}
    env.update(server.client_env(*(user or (None, None)), s3=extra.pop("s3", None) if extra else None))
    env.update(extra or {})
    # `mlflow run --env-manager local` runs `python ...` from PATH: make it this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def mlflow_run_cmd(root: Path, entry: str, **params) -> list[str]:
    params.setdefault("data", str(root / "data"))
    params.setdefault("work_dir", str(root / "work"))
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local",
           "--experiment-name", EXPERIMENT]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return cmd


def mlflow_run(root: Path, env: dict, logs: list, entry: str, **params) -> str:
    proc = subprocess.run(mlflow_run_cmd(root, entry, **params), cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    logs.append(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"mlflow run -e {entry} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return _run_id(proc.stdout + proc.stderr)


def _run_id(output: str) -> str:
    return re.findall(r"Run \(ID '([0-9a-f]+)'\)", output)[-1]


@pytest.fixture
def as_user(monkeypatch, tmp_path):
    """Point this process's MLflow client at a server as a user (None: anonymous)."""
    import mlflow

    previous = mlflow.get_tracking_uri()

    def use(server: MlflowServer, user: tuple[str, str] | None, s3=None):
        for key in [k for k in os.environ if k.startswith(("MLFLOW_", "AWS_"))]:
            monkeypatch.delenv(key)
        if user is None:  # anonymous means anonymous: no ~/.mlflow/credentials either
            monkeypatch.setenv("HOME", str(tmp_path))
        for key, value in server.client_env(*(user or (None, None)), s3=s3).items():
            monkeypatch.setenv(key, value)
        mlflow.set_tracking_uri(server.url)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=server.url)

    yield use
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def pipeline(stack, root, logs):
    """pretrain -> rank -> cycle as alice, through `mlflow run`, against the proxied+auth server."""
    env = client_env(stack.server, ALICE)
    pre = mlflow_run(root, env, logs, "pretrain", fraction=0.25, epochs=1, **TINY)
    rank = mlflow_run(root, env, logs, "rank", sampler="boxcount", batches=3, batch_images=16, workers=0)
    cycle = mlflow_run(root, env, logs, "cycle", ranking=rank, cycles=2, per_cycle=8, epochs=1, **TINY)
    return {"pretrain": pre, "rank": rank, "cycle": cycle}


@pytest.fixture(scope="module")
def direct(stack, root, logs):
    """A second server on the same PostgreSQL and bucket with direct S3 artifacts (clients hold keys)."""
    server = stack.add_server("direct")
    env = client_env(server, None, {"s3": stack.s3})
    pre = mlflow_run(root, env, logs, "pretrain", fraction=0.25, epochs=1, work_dir=root / "work-direct", **TINY)
    return {"server": server, "pretrain": pre}


def _children(client, run_id: str) -> dict[int, object]:
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    return {int(c.data.tags["alod.cycle"]): c for c in children}


def _steps(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def _prefix(server: MlflowServer) -> str:
    return server.artifact_uri.split("/", 3)[3] + "/"


class FlakyProxy:
    """A TCP forwarder on 127.0.0.1 in front of the S3 endpoint that can go bad: while `down`,
    it accepts connections and closes them at once (counted in `dropped`)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.down = False
        self.dropped = 0
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                continue
            if self.down:
                self.dropped += 1
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def _wait_for_child(client, exp_id: str, before: set, proc, cycle: int = 1, timeout: float = 300):
    """Poll until the cycle run and its child run for `cycle` exist; returns (parent, child)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        new = [r for r in client.search_runs([exp_id]) if r.info.run_id not in before]
        parent = next((r for r in new if r.data.tags.get("alod.step") == "cycle"), None)
        child = next((r for r in new if r.data.tags.get("alod.cycle") == str(cycle)), None)
        if child is not None:
            return parent, child
        time.sleep(0.2)
    return None, None


# --- no processes ----------------------------------------------------------------


def test_storage_errors_worth_a_retry():
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
    )

    from alod import tracking

    def client_error(status, code):
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    def wrapped(inner):
        try:
            raise inner
        except ClientError as e:
            try:
                raise S3UploadFailedError(f"Failed to upload: {e}")
            except S3UploadFailedError as outer:
                return outer

    assert tracking._transient_storage_error(EndpointConnectionError(endpoint_url="http://s3"))
    assert tracking._transient_storage_error(ConnectionClosedError(endpoint_url="http://s3"))
    assert tracking._transient_storage_error(wrapped(client_error(503, "SlowDown")))
    assert not tracking._transient_storage_error(wrapped(client_error(403, "AccessDenied")))
    assert not tracking._transient_storage_error(ValueError("no"))

    calls, sleeps = [], []
    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise EndpointConnectionError(endpoint_url="http://s3")
        return "ok"

    from unittest import mock

    with mock.patch.object(tracking.time, "sleep", sleeps.append):
        assert tracking._retry(flaky) == "ok"
        with pytest.raises(S3UploadFailedError):
            tracking._retry(lambda: (_ for _ in ()).throw(wrapped(client_error(403, "AccessDenied"))))
    assert len(calls) == 3 and sleeps == [1.0, 2.0]



def test_server_command_has_no_secrets_and_picks_the_artifact_mode(tmp_path):
    common = dict(backend_uri="postgresql+psycopg://alod@127.0.0.1:5432/mlflow", artifact_uri="s3://b/p",
                  server_env={"PGPASSWORD": "pg-secret-123", "AWS_SECRET_ACCESS_KEY": "aws-secret-123"},
                  port=5000, log_dir=tmp_path)
    proxied = MlflowServer(artifacts="proxied", auth_database_uri="postgresql+psycopg://alod@127.0.0.1:5432/u",
                           **common)
    cmd = proxied.command()
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://b/p" and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    direct = MlflowServer(artifacts="direct", **common).command()
    assert direct[direct.index("--default-artifact-root") + 1] == "s3://b/p" and "--no-serve-artifacts" in direct
    assert "--app-name" not in direct
    env = proxied._env()
    for secret in ("pg-secret-123", "aws-secret-123", proxied.admin_password):
        assert not any(secret in arg for arg in cmd + direct)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == proxied.admin_password
    assert proxied.admin_password not in (tmp_path / "basic_auth-5000.ini").read_text()
    # A client gets S3 settings only in direct mode.
    assert "AWS_SECRET_ACCESS_KEY" not in proxied.client_env("u", "p")


# --- the stack ---------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_lands_in_postgres_and_the_bucket(stack, pipeline, as_user):
    client = as_user(stack.server, ALICE)
    for step in ("pretrain", "rank", "cycle"):
        run = client.get_run(pipeline[step])
        assert run.info.status == "FINISHED" and run.data.tags["alod.step"] == step
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: clients never see s3://
    assert sorted(_steps(client, pipeline["pretrain"], "mAP50")) == [1]
    assert _steps(client, pipeline["cycle"], "labeled_images") == {1: 8, 2: 16}
    assert sorted(_steps(client, pipeline["cycle"], "mAP50")) == [1, 2]
    children = _children(client, pipeline["cycle"])
    assert sorted(children) == [1, 2] and all(c.info.status == "FINISHED" for c in children.values())

    pretrained = client.get_model_version_by_alias("alod-pretrained", "champion")
    assert pretrained.run_id == pipeline["pretrain"]
    detector = client.get_model_version_by_alias("alod-detector", "champion")
    assert detector.run_id == pipeline["cycle"] and detector.tags["cycle"] == "2"
    assert client.get_run(pipeline["rank"]).data.tags["alod.model_version"] == str(pretrained.version)

    keys = stack.s3.keys(_prefix(stack.server))
    def has(suffix):
        return any(k.endswith(suffix) for k in keys)
    assert has(f"/{pipeline['pretrain']}/artifacts/checkpoints/pretrained.pt")
    assert has(f"/{pipeline['rank']}/artifacts/ranking/ranking.parquet")
    assert has(f"/{pipeline['cycle']}/artifacts/state/labeled.json")
    for cycle, child in children.items():
        assert has(f"/{child.info.run_id}/artifacts/checkpoints/cycle_{cycle:03d}.pt")
    # The registered models' files (MLmodel, the checkpoint copied in) are objects too.
    assert sum(k.endswith("/MLmodel") for k in keys) >= 2 and has("/artifacts/cycle_002.pt")
    s3 = stack.s3.client()
    head = s3.head_object(Bucket=stack.s3.bucket, Key=next(k for k in keys if k.endswith("cycle_002.pt")))
    assert head["ContentLength"] > 10_000

    # The runs are rows in PostgreSQL (the server's backend), not in some local file.
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                         password=stack.postgres.password, dbname="mlflow_proxied_auth") as conn:
        ids = {r[0] for r in conn.execute("select run_uuid from runs")}
        versions = conn.execute("select count(*) from model_versions").fetchone()[0]
    assert set(pipeline.values()) <= ids and versions == 2
    # Fully proxied: the clients never fetched from S3 themselves (no presigned URLs used).
    assert "X-Amz-Signature=" not in (stack.log_dir / "s3.log").read_text(errors="replace")


@pytest.mark.slow
def test_auth_refuses_anonymous_and_wrong_passwords(stack, pipeline, as_user):
    from mlflow.exceptions import MlflowException

    server = stack.server
    anonymous = as_user(server, None)
    with pytest.raises(MlflowException, match="401|nauthorized|UNAUTHENTICATED"):
        anonymous.search_experiments()
    wrong = as_user(server, (ALICE[0], ALICE[1] + "x"))
    with pytest.raises(MlflowException, match="401|nauthorized|UNAUTHENTICATED"):
        wrong.get_run(pipeline["cycle"])
    # Artifacts go through the same door in proxied mode.
    url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code == 401

    alice = as_user(server, ALICE)
    assert alice.get_experiment_by_name(EXPERIMENT) is not None
    # bob reads (default permission READ) but may not write into alice's experiment.
    bob = as_user(server, BOB)
    assert bob.get_run(pipeline["cycle"]).info.status == "FINISHED"
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED|ermission"):
        bob.set_tag(pipeline["cycle"], "bob.was.here", "1")


@pytest.mark.slow
def test_direct_s3_artifacts(stack, direct, as_user, tmp_path):
    server = direct["server"]
    client = as_user(server, None, s3=stack.s3)
    run = client.get_run(direct["pretrain"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(f"s3://{stack.s3.bucket}/mlflow_direct/")
    keys = stack.s3.keys("mlflow_direct/")
    assert any(k.endswith(f"/{direct['pretrain']}/artifacts/checkpoints/pretrained.pt") for k in keys)
    version = client.get_model_version_by_alias("alod-pretrained", "champion")
    assert version.run_id == direct["pretrain"]
    # Reading back goes straight to S3 too: the registered checkpoint, as `alod rank` fetches it.
    from alod import tracking

    path, got = tracking.download_registered_checkpoint("models:/alod-pretrained@champion", tmp_path / "m")
    assert got.version == version.version and path.stat().st_size > 10_000
    # The two servers share the database server and the bucket but not their runs.
    proxied = as_user(stack.server, ALICE)
    assert proxied.get_experiment_by_name(EXPERIMENT).experiment_id  # its own experiment
    assert not any(k.startswith(_prefix(stack.server)) for k in keys)


@pytest.mark.slow
def test_tracking_server_crash_mid_cycle_loses_nothing(stack, pipeline, root, logs, as_user):
    """SIGKILL the tracking server while cycle 1 trains, restart it seconds later on the same
    port: the run rides it out (HTTP retries with backoff) and finishes with both cycles."""
    client = as_user(stack.server, ALICE)
    env = client_env(stack.server, ALICE)
    cmd = mlflow_run_cmd(root, "cycle", ranking=pipeline["rank"], cycles=2, per_cycle=4, epochs=2,
                         register="false", work_dir=root / "work-restart", **TINY)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    before = {r.info.run_id for r in client.search_runs([exp_id])}
    out = root / "restart.log"
    with open(out, "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        parent, child = _wait_for_child(client, exp_id, before, proc)
        assert child is not None, out.read_text()[-3000:]
        assert proc.poll() is None and not _steps(client, parent.info.run_id, "mAP50")  # cycle 1 in flight
        crashed_at = time.time()
        stack.server.restart(down_seconds=3, sig=signal.SIGKILL)
        restarted_at = time.time()
        rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = out.read_text()
    logs.append(output)
    assert rc == 0, output[-4000:]
    run_id = parent.info.run_id
    assert _run_id(output) == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    mAP = client.get_metric_history(run_id, "mAP50")
    assert sorted(m.step for m in mAP) == [1, 2]  # each once: no cycle lost or repeated
    assert _steps(client, run_id, "labeled_images") == {1: 4, 2: 8}
    # Cycle 1's result was produced and logged while/after the server was down.
    assert min(m.timestamp for m in mAP) / 1000 > crashed_at - 1
    children = _children(client, run_id)
    assert sorted(children) == [1, 2] and all(c.info.status == "FINISHED" for c in children.values())
    assert len(_steps(client, children[1].info.run_id, "loss")) == 2  # one point per epoch
    keys = stack.s3.keys(_prefix(stack.server))
    for cycle, c in children.items():
        assert any(k.endswith(f"/{c.info.run_id}/artifacts/checkpoints/cycle_{cycle:03d}.pt") for k in keys)
    # The labeled state made it too: the first 4 of the undisturbed run's cycle 2 (same ranking, seed).
    import mlflow

    def state(rid, dst):
        return json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=rid, artifact_path="state/labeled.json", dst_path=str(dst))).read_text())

    mine, undisturbed = state(run_id, root / "dl-a"), state(pipeline["cycle"], root / "dl-b")
    assert sorted(mine.values()) == [1] * 4 + [2] * 4
    assert [n for n, c in mine.items() if c == 2] == [n for n, c in undisturbed.items() if c == 2][:4]
    assert restarted_at - crashed_at >= 3


@pytest.mark.slow
def test_s3_hiccup_mid_cycle_loses_nothing(stack, pipeline, direct, root, logs, as_user):
    """Direct artifacts: the S3 endpoint drops every connection while cycle 1 uploads its
    checkpoint; boto3's retries and alod's backoff ride it out and both cycles land."""
    import mlflow

    as_user(stack.server, ALICE)  # the ranking made in the pipeline, as a file
    ranking = mlflow.artifacts.download_artifacts(run_id=pipeline["rank"], artifact_path="ranking/ranking.parquet",
                                                  dst_path=str(root / "hiccup-ranking"))
    server = direct["server"]
    client = as_user(server, None, s3=stack.s3)
    proxy = FlakyProxy(stack.s3.port)
    env = client_env(server, None, {"s3": stack.s3})
    env["MLFLOW_S3_ENDPOINT_URL"] = proxy.endpoint
    work = root / "work-hiccup"
    cmd = mlflow_run_cmd(root, "cycle", ranking=ranking, cycles=2, per_cycle=4, epochs=1,
                         register="false", work_dir=work, **TINY)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    before = {r.info.run_id for r in client.search_runs([exp_id])}
    out = root / "hiccup.log"
    with open(out, "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        parent, child = _wait_for_child(client, exp_id, before, proc)
        assert child is not None, out.read_text()[-3000:]
        proxy.down = True
        went_down = time.monotonic()
        # Stay down until the checkpoint upload has failed a few times (and at least 3 s).
        while proc.poll() is None and time.monotonic() - went_down < 60 and (
                proxy.dropped < 3 or time.monotonic() - went_down < 3):
            time.sleep(0.1)
        proxy.down = False
        dropped = proxy.dropped
        rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proxy.close()
    output = out.read_text()
    logs.append(output)
    assert rc == 0, output[-4000:]
    assert dropped >= 3
    run_id = parent.info.run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(_steps(client, run_id, "mAP50")) == [1, 2]
    children = _children(client, run_id)
    keys = stack.s3.keys("mlflow_direct/")
    for cycle, c in children.items():
        assert any(k.endswith(f"/{c.info.run_id}/artifacts/checkpoints/cycle_{cycle:03d}.pt") for k in keys)
    assert sorted(children) == [1, 2]
    # The labeled state was written locally first and is in the bucket too.
    assert (work / "runs" / run_id / "labeled.json").is_file()
    assert any(k.endswith(f"/{run_id}/artifacts/state/labeled.json") for k in keys)


@pytest.mark.slow
def test_serve_champion_over_rest(stack, pipeline, root, logs, as_user):
    port = free_port()
    env = client_env(stack.server, ALICE)
    serve = Service("mlflow models serve", [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/alod-detector@champion",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        root / "logs" / "serve.log", env=env, cwd=root)
    image = next((root / "data" / "images" / "100k" / "val").glob("*.jpg"))
    body = json.dumps({"dataframe_split": {"columns": ["image"],
                                           "data": [[base64.b64encode(image.read_bytes()).decode()]]}})
    serve.start()
    try:
        def ready():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                return r.status == 200

        serve.wait_until(ready, 240, f"port {port}")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=120) as r:
            answer = json.loads(r.read())
    finally:
        serve.stop()
    logs.append(serve.log_tail(10**7))
    predictions = answer["predictions"]
    assert len(predictions) == 1
    row = predictions[0]
    assert set(row) >= {"boxes", "labels", "scores"}
    assert len(row["boxes"]) == len(row["labels"]) == len(row["scores"])
    from alod.data.categories import ID_TO_NAME

    assert set(row["labels"]) <= set(ID_TO_NAME.values())
    assert all(len(b) == 4 and b[0] <= b[2] and b[1] <= b[3] for b in row["boxes"])

    # The same model loaded in-process gives the same answer.
    import mlflow
    import pandas as pd

    as_user(stack.server, ALICE)
    local = mlflow.pyfunc.load_model("models:/alod-detector@champion").predict(
        pd.DataFrame({"image": [base64.b64encode(image.read_bytes()).decode()]}))
    assert len(local.iloc[0]["boxes"]) == len(row["boxes"])
    assert local.iloc[0]["scores"] == pytest.approx(row["scores"], abs=1e-5)


@pytest.mark.slow
def test_no_secret_in_params_tags_artifacts_or_logs(stack, pipeline, direct, logs, root, as_user):
    """Scan everything both servers stored and everything printed for the stack's secrets."""
    secrets = {
        "AWS access key": stack.s3.access_key, "AWS secret key": stack.s3.secret_key,
        "PostgreSQL password": stack.postgres.password, "admin password": stack.server.admin_password,
        "alice's password": ALICE[1], "bob's password": BOB[1],
        "Flask secret key": stack.server._secret_key,
    }
    assert all(len(s) >= 12 for s in secrets.values())

    def scan(where: str, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else text.encode(errors="replace")
        for name, secret in secrets.items():
            assert secret.encode() not in data, f"{name} found in {where}"

    stored = 0
    for server, user in ((stack.server, ALICE), (direct["server"], None)):
        client = as_user(server, user, s3=stack.s3)
        experiments = client.search_experiments()
        for run in client.search_runs([e.experiment_id for e in experiments], max_results=1000):
            scan(f"params/tags of run {run.info.run_id}", json.dumps([run.data.params, run.data.tags]))
            stored += 1
        for model in client.search_registered_models():
            scan(f"registered model {model.name}", json.dumps([model.tags, model.description or ""]))
            for v in client.search_model_versions(f"name='{model.name}'"):
                scan(f"{model.name} v{v.version}", json.dumps([v.tags, v.description or "", v.source]))
    assert stored >= 7
    # Every artifact of both servers: every object in the bucket, byte for byte.
    s3 = stack.s3.client()
    keys = stack.s3.keys()
    assert len(keys) > 20
    for key in keys:
        scan(f"s3://{stack.s3.bucket}/{key}", s3.get_object(Bucket=stack.s3.bucket, Key=key)["Body"].read())
    # Everything the clients printed, and the services' own logs.
    assert len(logs) >= 5
    for i, text in enumerate(logs):
        scan(f"client output #{i}", text)
    for path in (root / "logs").iterdir():
        scan(f"service log {path.name}", path.read_bytes())
