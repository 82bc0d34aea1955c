"""Two hosts on one machine: the README's multi-node recipe, run for real.

Each node is its own network namespace with its own address and host name (`ip netns`, a veth
pair each into a bridge, `unshare --uts`; `/etc/netns/<ns>/hosts` names node0, node1 and the
tracking host). The tracking host is this namespace: `mlflow server` on the bridge's address.
Node 0 runs the `alod` command as launcher with `--nnodes 2 --rdzv-endpoint node0:29400`; node 1
starts its workers exactly as "Scaling out" says, from the lines the launcher prints. Gloo, one
process per node.

Checked for `rank` and for `cycle`: one MLflow run per command, the ranking equal to nproc=1, the
labeled state and the per-cycle counts equal to nproc=1, the metrics of two nodes equal to one node
with two processes (the same world size, so bit for bit on CPU); then node 1's worker is killed
mid-epoch under `--max-restarts 1`: both nodes restart their workers, the run finishes with every
step logged once and the same metrics as without the kill.

Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) for the namespaces; skips saying why otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "alod-multinode"
TINY = ["--arch", "tiny", "--workers", "0", "--lr", "0.04"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Hosts:
    """node0 and node1 (own network + UTS namespaces) on a bridge whose address is the tracking host."""

    def __init__(self) -> None:
        tag = f"al{os.getpid() % 100000}"
        self.subnet = f"10.216.{os.getpid() % 250}"
        self.bridge = f"br-{tag}"
        self.ns = [f"{tag}-n0", f"{tag}-n1"]
        self.addr = [f"{self.subnet}.1", f"{self.subnet}.2"]
        self.tracking_addr = f"{self.subnet}.254"
        self.procs: list[subprocess.Popen] = []

    def create(self) -> None:
        if shutil.which("ip") is None or shutil.which("unshare") is None:
            pytest.skip("`ip` (iproute2) or `unshare` (util-linux) not found: cannot make two test hosts")
        probe = _ip("netns", "add", self.ns[0], check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot create network namespaces here (needs root or CAP_SYS_ADMIN): "
                        f"{probe.stderr.strip()}")
        _ip("netns", "add", self.ns[1])
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.tracking_addr}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        hosts = (f"127.0.0.1 localhost\n{self.addr[0]} node0\n{self.addr[1]} node1\n"
                 f"{self.tracking_addr} tracking-host\n")
        for i, ns in enumerate(self.ns):
            host, peer = f"{self.bridge}-h{i}", f"{self.bridge}-v{i}"
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            _ip("link", "set", host, "master", self.bridge)
            _ip("link", "set", host, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[i]}/24", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)  # `ip netns exec` mounts it over /etc/hosts

    def start(self, node: int, command: str, env: dict, log: Path) -> subprocess.Popen:
        """A shell command on node `node` (its own host name), output to `log`."""
        script = f"hostname node{node} && cd {REPO} && {command}"
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[node], "unshare", "--uts", "bash", "-c", script],
                                env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def destroy(self) -> None:
        for ns in self.ns:  # everything still running on the hosts (torchrun's workers have their own session)
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)
        for i, ns in enumerate(self.ns):
            _ip("netns", "del", ns, check=False)  # takes its end of the veth pair along
            _ip("link", "del", f"{self.bridge}-h{i}", check=False)  # and the bridge's end, where it stays
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        _ip("link", "del", self.bridge, check=False)


@pytest.fixture(scope="module")
def hosts():
    h = Hosts()
    try:
        h.create()
        yield h
    finally:
        h.destroy()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from alod.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("multinode")
    write_dataset(root / "data", train=32, val=8, seed=0)
    return root


@pytest.fixture(scope="module")
def server(hosts, root):
    """`mlflow server` on the tracking host (SQLite behind one server is fine; proxied artifacts)."""
    port = 5000
    url = f"http://{hosts.tracking_addr}:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "mlflow-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
                             "--host", hosts.tracking_addr, "--port", str(port), "--workers", "2",
                             "--allowed-hosts", f"tracking-host:{port},{hosts.tracking_addr}:{port}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"mlflow server did not start:\n{(root / 'mlflow-server.log').read_text()[-3000:]}")
        time.sleep(1)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = url
    import mlflow

    mlflow.set_tracking_uri(url)
    try:
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def node_env(server: str, extra: dict | None = None) -> dict:
    """A user's shell on a node: the tracking URI exported (README), nothing of this test's MLflow state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ALOD_"))}
    return {**env, "MLFLOW_TRACKING_URI": server.replace(server.split("//")[1].split(":")[0], "tracking-host"),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **(extra or {})}


def alod_cmd(*args: str) -> str:
    return " ".join([f"{sys.executable} -m entrypoints.cli", *map(_quote, args)])


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(str(s))


def wait(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise AssertionError(f"timed out:\n{log.read_text()[-6000:]}")
    return log.read_text()


def wait_for_lines(log: Path, proc: subprocess.Popen, names: tuple[str, ...], timeout: float = 300) -> dict:
    """The `NAME=value` lines the launcher prints for the other nodes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        found = {}
        for line in text.splitlines():
            for name in names:
                if line.startswith(f"{name}="):
                    found[name] = line[len(name) + 1:]
        if len(found) == len(names):
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"node 0 never printed {names}:\n{text[-6000:]}")


def two_nodes(hosts, server, root: Path, name: str, args: list[str], params_env: str, module: str,
              node1_extra_env: dict | None = None, max_restarts: int = 0) -> tuple[str, str, str]:
    """Node 0: the command as launcher. Node 1: the README's worker command from what node 0 printed.
    Returns (run id, node 0's output, node 1's output)."""
    log0, log1 = root / f"{name}-node0.log", root / f"{name}-node1.log"
    node0 = hosts.start(0, alod_cmd(*args, "--nnodes", "2", "--rdzv-endpoint", "node0:29400",
                                    *(["--max-restarts", str(max_restarts)] if max_restarts else [])),
                        node_env(server), log0)
    printed = wait_for_lines(log0, node0, (params_env, "ALOD_RUN_ID"))
    params = root / f"{name}-params.json"
    params.write_text(printed[params_env])
    run_id = printed["ALOD_RUN_ID"]
    # README, "Scaling out", node 1 (with --nproc_per_node 1 and this run's restarts)
    node1_cmd = (f'TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 ALOD_RUN_ID={run_id} {params_env}="$(cat {params})" \\\n'
                 f"python -m torch.distributed.run --nproc_per_node 1 --nnodes 2 --rdzv_backend c10d "
                 f"--rdzv_endpoint node0:29400 --rdzv_id {run_id} --max_restarts {max_restarts} -m {module}")
    node1 = hosts.start(1, node1_cmd, node_env(server, node1_extra_env), log1)
    out0, out1 = wait(node0, log0), wait(node1, log1)
    assert node0.returncode == 0, f"node 0:\n{out0[-5000:]}\nnode 1:\n{out1[-5000:]}"
    assert node1.returncode == 0, f"node 1:\n{out1[-5000:]}\nnode 0:\n{out0[-5000:]}"
    return run_id, out0, out1


def one_node(hosts, server, root: Path, name: str, args: list[str]) -> str:
    log = root / f"{name}.log"
    out = wait(hosts.start(0, alod_cmd(*args), node_env(server), log), log)
    assert hosts.procs[-1].returncode == 0, out[-5000:]
    return out


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def runs(step: str) -> list:
    exp = client().get_experiment_by_name(EXPERIMENT)
    return [] if exp is None else client().search_runs([exp.experiment_id], f"tags.`alod.step` = '{step}'")


def history(run_id: str, key: str) -> dict:
    entries = client().get_metric_history(run_id, key)
    steps = [m.step for m in entries]
    assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {sorted(steps)}"
    return {m.step: m.value for m in entries}


def artifact(run_id: str, path: str, dst: Path) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


@pytest.fixture(scope="module")
def ranked(hosts, server, root):
    """pretrain (epochs 0: the starting weights registered), then rank with nproc=1 and with two nodes."""
    common = ["--data", str(root / "data"), "--experiment-name", EXPERIMENT, "--work-dir", str(root / "work")]
    one_node(hosts, server, root, "pretrain", ["pretrain", *common, *TINY, "--epochs", "0"])
    rank = ["rank", *common, "--sampler", "boxcount", "--batches", "2", "--batch-images", "16", "--workers", "0"]
    one_node(hosts, server, root, "rank-1", rank)
    single = runs("rank")[0].info.run_id
    before = {r.info.run_id for r in runs("rank")}
    run_id, out0, out1 = two_nodes(hosts, server, root, "rank-2", rank, "ALOD_RANK_PARAMS", "alod.steps.rank")
    new = [r for r in runs("rank") if r.info.run_id not in before]
    return {"single": single, "two": run_id, "new": new, "out0": out0, "out1": out1}


def test_rank_on_two_nodes_equals_one_process(ranked, root, tmp_path):
    assert [r.info.run_id for r in ranked["new"]] == [ranked["two"]]  # one run for the two nodes
    run = client().get_run(ranked["two"])
    assert run.info.status == "FINISHED"
    assert "2 process(es)" in ranked["out0"] + ranked["out1"]  # gloo across the two namespaces
    one = pd.read_parquet(artifact(ranked["single"], "ranking/ranking.parquet", tmp_path / "1"))
    two = pd.read_parquet(artifact(ranked["two"], "ranking/ranking.parquet", tmp_path / "2"))
    assert len(two) == 32 and two["image"].is_unique
    pd.testing.assert_frame_equal(one, two)


def _cycle_args(root: Path, rank_id: str, work: str) -> list[str]:
    return ["cycle", "--data", str(root / "data"), "--ranking", rank_id, "--cycles", "2", "--per-cycle", "8",
            "--epochs", "3", *TINY, "--batch-size", "2", "--register", "false", "--experiment-name", EXPERIMENT,
            "--work-dir", str(root / work)]


COUNTS = ("labeled_images", "labeled_boxes", "images_scored", "train_epochs")


@pytest.fixture(scope="module")
def cycled(hosts, server, root, ranked):
    rank_id = ranked["single"]
    one_node(hosts, server, root, "cycle-1", _cycle_args(root, rank_id, "work") + ["--nproc", "1"])
    single = max(runs("cycle"), key=lambda r: r.info.start_time).info.run_id
    one_node(hosts, server, root, "cycle-local2", _cycle_args(root, rank_id, "work") + ["--nproc", "2"])
    local2 = max(runs("cycle"), key=lambda r: r.info.start_time).info.run_id
    before = {r.info.run_id for r in runs("cycle")}
    two, _, _ = two_nodes(hosts, server, root, "cycle-2", _cycle_args(root, rank_id, "work"),
                          "ALOD_CYCLE_PARAMS", "alod.steps.cycle")
    created = [r.info.run_id for r in runs("cycle") if r.info.run_id not in before]
    return {"single": single, "local2": local2, "two": two, "created": created}


def _children(run_id: str) -> dict[str, str]:
    exp = client().get_run(run_id).info.experiment_id
    return {c.data.tags["alod.cycle"]: c.info.run_id
            for c in client().search_runs([exp], f"tags.mlflow.parentRunId = '{run_id}'")}


def _check_complete(run_id: str) -> None:
    assert client().get_run(run_id).info.status == "FINISHED"
    for key in ("mAP50", "loss", *COUNTS):
        assert sorted(history(run_id, key)) == [1, 2], key
    children = _children(run_id)
    assert sorted(children) == ["1", "2"]
    for child in children.values():
        assert sorted(history(child, "loss")) == [1, 2, 3]


def test_cycle_on_two_nodes(cycled, tmp_path):
    two = cycled["two"]
    assert cycled["created"] == [two]  # one MLflow run for both nodes
    _check_complete(two)
    state = json.loads(artifact(two, "state/labeled.json", tmp_path / "s2").read_text())
    assert state == json.loads(artifact(cycled["single"], "state/labeled.json", tmp_path / "s1").read_text())
    for key in COUNTS:  # what does not depend on the number of processes
        assert history(two, key) == history(cycled["single"], key), key
    # two nodes x 1 process = one node x 2 processes: the same world size, the same numbers
    for key in ("mAP50", "mAP50_95", "loss", "train_image_iterations"):
        assert history(two, key) == history(cycled["local2"], key), key


def test_killed_node1_workers_restart_and_finish(hosts, server, root, cycled, ranked, tmp_path):
    """Node 1's worker dies (os._exit, like kill -9) in the middle of cycle 1's second epoch; both agents
    restart their workers (--max-restarts 1), which resume from the epoch checkpoint in the same run."""
    marker = root / "node1-fault-fired"
    before = {r.info.run_id for r in runs("cycle")}
    run_id, out0, out1 = two_nodes(
        hosts, server, root, "cycle-kill", _cycle_args(root, ranked["single"], "work"), "ALOD_CYCLE_PARAMS",
        "alod.steps.cycle", node1_extra_env={"ALOD_FAULT": "train_step:1.1", "ALOD_FAULT_ONCE": str(marker)},
        max_restarts=1)
    assert marker.exists() and "ALOD_FAULT: killing" in out1, out1[-3000:]
    assert re.search(r"(?i)restart", out0 + out1), "no worker restart seen"
    assert [r.info.run_id for r in runs("cycle") if r.info.run_id not in before] == [run_id]
    _check_complete(run_id)  # every epoch and cycle step logged once, the child runs reopened
    for key in ("mAP50", "loss", *COUNTS):  # the epoch redone from its checkpoint: nothing changed
        assert history(run_id, key) == history(cycled["two"], key), key
    state = json.loads(artifact(run_id, "state/labeled.json", tmp_path / "k").read_text())
    assert state == json.loads(artifact(cycled["single"], "state/labeled.json", tmp_path / "s").read_text())


def test_pretrain_on_two_nodes_equals_two_processes_on_one(hosts, server, root):
    """pretrain takes the same launcher as rank and cycle: node 0's command opens the run, node 1 starts the
    printed worker command, and two nodes x 1 process train exactly as one node x 2 processes."""
    args = ["pretrain", "--data", str(root / "data"), "--experiment-name", EXPERIMENT, "--work-dir",
            str(root / "work"), *TINY, "--epochs", "2", "--fraction", "0.5", "--batch-size", "2", "--register",
            "false"]
    one_node(hosts, server, root, "pretrain-local2", [*args, "--nproc", "2"])
    local2 = max(runs("pretrain"), key=lambda r: r.info.start_time).info.run_id
    before = {r.info.run_id for r in runs("pretrain")}
    two, _, _ = two_nodes(hosts, server, root, "pretrain-2", args, "ALOD_PRETRAIN_PARAMS", "alod.steps.pretrain")
    assert [r.info.run_id for r in runs("pretrain") if r.info.run_id not in before] == [two]  # one run
    assert client().get_run(two).info.status == "FINISHED"
    for key in ("loss", "mAP50", "mAP50_95"):  # each epoch once (history() asserts it), the same numbers
        assert sorted(history(two, key)) == [1, 2], key
        assert history(two, key) == history(local2, key), key
