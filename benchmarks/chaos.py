"""Seeded chaos: `kill -9` at random moments of a multi-cycle run, resumed each time with the run id alone.

    python benchmarks/chaos.py --kills 20 --seed 0            # the README's figures
    python benchmarks/chaos.py --kills 5 --import-kills 3     # what tests/test_chaos.py runs

1. An uninterrupted reference: `alod cycle` (protocol pool, entropy: cycles after the first re-score the
   pool with the current model), timed.
2. The same command again, killed with SIGKILL (the whole process group) at `--kills` moments drawn
   uniformly from the reference's wall time, each time resumed with `alod cycle --resume-run-id RUN`
   (nothing else); the last resume runs to the end. Kill i comes (t_i - t_{i-1}) seconds after the
   resume is back at work (its output shows training, prediction or a finished cycle). The
   moments come from the wall clock, not from fault points: a kill lands in start-up, selection,
   scoring, training, evaluation, pictures or logging, wherever the process is.
3. Checks: the labeled set and every cycle's metrics (all but the timing ones) equal the reference's,
   bit for bit; no metric step twice on the run or its child runs; exactly one child run per cycle, all
   FINISHED, and no other run left behind; no temporary file left in work_dir or in the TMPDIR the
   commands ran with.
4. With the files oracle: a run waits for labels, `alod import-labels` is killed at random moments
   (`--import-kills`), imported again, and the labels must all be there, each once, with the cycle
   trained on exactly their boxes.

Prints a table and exits non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "alod-chaos"
TIMING = ("train_seconds", "images_per_second", "model_tflops_per_second", "mfu", "epoch_seconds")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("chaos-out"))
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--import-kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=48)
    ap.add_argument("--val", type=int, default=12)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--per-cycle", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    return ap.parse_args(argv)


class Chaos:
    def __init__(self, args):
        self.args = args
        self.out = args.out.resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out / "tmp"  # TMPDIR of every command: what a kill leaves there is counted
        self.tmp.mkdir(exist_ok=True)
        self.uri = f"sqlite:///{self.out / 'mlflow.db'}"
        self.rng = np.random.default_rng(args.seed)
        self.log = open(self.out / "commands.log", "a")

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ALOD_"))}
        return {**env, "MLFLOW_TRACKING_URI": self.uri, "TMPDIR": str(self.tmp), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), **(extra or {})}

    def start(self, *args, env=None):
        self.log.write(f"\n$ alod {' '.join(args)}\n")
        self.log.flush()
        self.started_at = (self.out / "commands.log").stat().st_size
        return subprocess.Popen([sys.executable, "-m", "entrypoints.cli", *args], cwd=self.out, env=self.env(env),
                                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, *args, env=None, check=True):
        proc = self.start(*args, env=env)
        proc.wait()
        if check and proc.returncode != 0:
            raise SystemExit(f"alod {' '.join(args)} failed ({proc.returncode}); see {self.out / 'commands.log'}")
        return proc.returncode

    def wait_for_work(self, proc, timeout: float = 600) -> None:
        """Until the command's output shows it training, predicting or finishing a cycle (a resume is
        then back where the previous process was: start-up and the run's state read back are behind it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            with open(self.out / "commands.log", "rb") as f:
                f.seek(self.started_at)
                if re.search(rb"epoch \d+:|predict:|cycle \d+/\d+|already done", f.read()):
                    return
            time.sleep(0.1)

    def kill_after(self, proc, delay: float) -> bool:
        """SIGKILL the command's process group after `delay` s; False if it ended first."""
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self.log.write(f"--- kill -9 after {delay:.2f} s\n")
            self.log.flush()
            return True

    def cycle_args(self, work: str, *extra):
        a = self.args
        return ["cycle", "--data", str(self.out / "data"), "--protocol", "pool", "--sampler", "entropy",
                "--cycles", str(a.cycles), "--per-cycle", str(a.per_cycle), "--epochs", str(a.epochs),
                "--arch", "tiny", "--batch-size", "4", "--workers", "0", "--lr", "0.04", "--register", "false",
                "--experiment-name", EXPERIMENT, "--work-dir", str(self.out / work), *extra]


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def cycle_runs(c, exp_name=EXPERIMENT, oracle=None):
    exp = c.get_experiment_by_name(exp_name)
    if exp is None:
        return []
    flt = "tags.`alod.step` = 'cycle'"
    return c.search_runs([exp.experiment_id], flt, order_by=["attributes.start_time ASC"])


def histories(c, run_id):
    run = c.get_run(run_id)
    out, twice = {}, []
    for key in run.data.metrics:
        entries = c.get_metric_history(run_id, key)
        steps = [m.step for m in entries]
        if len(steps) != len(set(steps)):
            twice.append(key)
        out[key] = {m.step: m.value for m in entries}
    return out, twice


def children(c, run_id):
    exp = c.get_run(run_id).info.experiment_id
    return c.search_runs([exp], f"tags.mlflow.parentRunId = '{run_id}'")


def stale_temp_files(*folders):
    pattern = re.compile(r"^\..+\.tmp\d*$")
    found = []
    for folder in folders:
        if folder.is_dir():
            for p in folder.rglob("*"):
                in_tmp = p.parent.name == "tmp" and (p.parent == folder or p.parent.parent.parent.name == "runs")
                if pattern.match(p.name) or (in_tmp and not p.name.startswith("torchinductor")):
                    found.append(p)
    return found


def _refused_unlogged(ch: Chaos) -> bool:
    ch.log.flush()
    return "has no logged parameters" in (ch.out / "commands.log").read_text()[-3000:]


def chaos_cycle(ch: Chaos) -> dict:
    args = ch.args
    c = client(ch.uri)
    started = time.perf_counter()
    proc = ch.start(*ch.cycle_args("work-ref"))
    ch.wait_for_work(proc)
    startup = time.perf_counter() - started  # the uninterrupted run's start-up, before its first work
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed; see {ch.out / 'commands.log'}")
    ref_seconds = time.perf_counter() - started
    ref_id = cycle_runs(c)[-1].info.run_id
    # The kill moments: uniform over the reference run's wall time, in order. Kill 1 comes t_1 s after
    # the start; kill i comes (t_i - t_{i-1}) s after the resume is back at work (its output shows
    # training, prediction or a finished cycle: start-up and reading the run's state back are behind
    # it), so the kills walk through the run roughly as the moments walk through the reference.
    moments = np.sort(ch.rng.uniform(0, ref_seconds, args.kills))
    print(f"reference run {ref_id}: {ref_seconds:.1f} s (start-up {startup:.1f} s); kill moments {np.round(moments, 1).tolist()}", flush=True)

    known = {r.info.run_id for r in cycle_runs(c)}
    run_id, kills, attempts, delays = None, 0, 0, []
    fresh_starts, abandoned = 0, []
    previous = 0.0
    while True:
        if run_id is None:
            proc = ch.start(*ch.cycle_args("work"))
        else:
            proc = ch.start("cycle", "--resume-run-id", run_id, "--work-dir", str(ch.out / "work"))
        attempts += 1
        if kills < args.kills:
            delay = float(moments[kills] - previous)
            if kills:
                # back at work = past the start-up, which the reference's clock counts once
                delay = max(0.0, float(moments[kills]) - max(previous, startup))
                ch.wait_for_work(proc)
            if ch.kill_after(proc, delay):
                previous = float(moments[kills])
                kills += 1
                delays.append(delay)
            elif proc.returncode != 0:
                if run_id is not None and _refused_unlogged(ch):
                    # killed between opening the run and logging its parameters: nothing to resume
                    abandoned.append(run_id)
                    known.add(run_id)
                    run_id = None
                    continue
                raise SystemExit(f"a resume failed ({proc.returncode}) without a kill; see {ch.out / 'commands.log'}")
            else:
                break  # finished before the kill: done
        else:
            proc.wait()
            if proc.returncode != 0:
                raise SystemExit(f"the last resume failed ({proc.returncode}); see {ch.out / 'commands.log'}")
            break
        if run_id is None:
            new = [r for r in cycle_runs(c) if r.info.run_id not in known]
            if new:
                run_id = new[0].info.run_id
            else:
                fresh_starts += 1  # killed before the run existed: start again
        print(f"  kill {kills}/{args.kills} at moment {previous:.1f} s (after {delays[-1]:.1f} s)", flush=True)
    if kills < args.kills:
        print(f"note: the run finished after {kills} kills (draws longer than the time left)", flush=True)

    new_runs = [r for r in cycle_runs(c) if r.info.run_id not in known]
    ref_h, _ = histories(c, ref_id)
    got_h, twice = histories(c, run_id)
    problems = []
    if [r.info.run_id for r in new_runs] != [run_id]:
        problems.append(f"cycle runs made by the chaos run: {[r.info.run_id for r in new_runs]} (expected one)")
    if c.get_run(run_id).info.status != "FINISHED":
        problems.append(f"status {c.get_run(run_id).info.status}")
    compared = sorted(k for k in ref_h if not k.startswith(TIMING))
    differ = [k for k in compared if got_h.get(k) != ref_h[k]]
    if differ:
        problems.append(f"metrics differ from the uninterrupted run: {differ[:8]}"
                        + "".join(f"\n    {k}: {got_h.get(k)} vs {ref_h[k]}" for k in differ[:4]))
    if twice:
        problems.append(f"metric steps logged twice: {twice}")
    kids = children(c, run_id)
    cycles = sorted(int(k.data.tags.get("alod.cycle", -1)) for k in kids)
    if cycles != list(range(1, args.cycles + 1)):
        problems.append(f"child runs per cycle: {cycles} (orphaned or missing child runs)")
    for k in kids:
        if k.info.status != "FINISHED":
            problems.append(f"child run {k.info.run_id} (cycle {k.data.tags.get('alod.cycle')}) is {k.info.status}")
        _, twice_k = histories(c, k.info.run_id)
        if twice_k:
            problems.append(f"child run cycle {k.data.tags.get('alod.cycle')}: steps logged twice: {twice_k}")
    ref_kids = {k.data.tags["alod.cycle"]: histories(c, k.info.run_id)[0] for k in children(c, ref_id)}
    for k in kids:
        mine, theirs = histories(c, k.info.run_id)[0], ref_kids.get(k.data.tags["alod.cycle"], {})
        bad = [key for key in theirs if not key.startswith(TIMING) and mine.get(key) != theirs[key]]
        if bad:
            problems.append(f"child run cycle {k.data.tags['alod.cycle']}: per-epoch {bad} differ")
    ref_state = json.loads((ch.out / "work-ref" / "runs" / ref_id / "labeled.json").read_text())
    state = json.loads((ch.out / "work" / "runs" / run_id / "labeled.json").read_text())
    lost = sorted(set(ref_state) - set(state))
    if state != ref_state:
        problems.append(f"labeled state differs: {len(lost)} image(s) missing, "
                        f"{len(set(state) - set(ref_state))} extra, "
                        f"{sum(state.get(n) != v for n, v in ref_state.items())} with another cycle")
    stale = stale_temp_files(ch.out / "work", ch.tmp)
    if stale:
        problems.append(f"{len(stale)} stale temporary file(s): {[str(p) for p in stale[:5]]}")
    return {"kills": kills, "attempts": attempts, "fresh_starts": fresh_starts, "abandoned_runs": abandoned,
            "labels_lost": len(lost), "startup_seconds": round(startup, 1),
            "moments": [round(float(m), 2) for m in moments],
            "labeled": len(state), "reference_seconds": round(ref_seconds, 1),
            "delays": [round(d, 2) for d in delays], "problems": problems, "run_id": run_id, "ref_id": ref_id}


def chaos_import(ch: Chaos) -> dict:
    """The files oracle: kill `alod import-labels` at random moments, import again, resume."""
    from alod.data.bdd100k import load_labels, save_frames, split_paths

    args = ch.args
    c = client(ch.uri)
    work = ch.out / "work-files"
    cyc = ch.cycle_args("work-files", "--oracle", "files")
    cyc[cyc.index("--cycles") + 1] = "1"
    cyc[cyc.index("--sampler") + 1] = "random"
    ch.run(*cyc)
    run_id = cycle_runs(c)[-1].info.run_id
    batch = sorted(json.loads((work / "runs" / run_id / "labeled.json").read_text()))
    truth = {f.name: f for f in load_labels(split_paths(ch.out / "data", "train")[0])[0]}
    labels = ch.out / "import.json"
    save_frames([truth[n] for n in batch], labels)
    # how long an import takes, to draw kill moments from
    probe = ch.out / "probe.json"
    save_frames([], probe)
    started = time.perf_counter()
    ch.run("import-labels", run_id, str(probe), "--work-dir", str(work), check=False)
    import_seconds = time.perf_counter() - started
    kills = 0
    for _ in range(args.import_kills):
        proc = ch.start("import-labels", run_id, str(labels), "--work-dir", str(work))
        if ch.kill_after(proc, float(ch.rng.uniform(0, import_seconds * 1.2))):
            kills += 1
    ch.run("import-labels", run_id, str(labels), "--work-dir", str(work))
    ch.run("cycle", "--resume-run-id", run_id, "--work-dir", str(work))
    problems = []
    import mlflow

    mlflow.set_tracking_uri(ch.uri)
    stored = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="labels/labels.json",
                                                      dst_path=str(ch.out / "dl-labels")))
    names = [f.name for f in load_labels(stored)[0]]
    if sorted(names) != batch:
        problems.append(f"stored labels: {len(names)} for {len(batch)} selected images")
    boxes = {m.step: m.value for m in c.get_metric_history(run_id, "labeled_boxes")}
    if boxes != {1: sum(truth[n].num_trainable for n in batch)}:
        problems.append(f"labeled_boxes {boxes}, expected {sum(truth[n].num_trainable for n in batch)}")
    _, twice = histories(c, run_id)
    if twice:
        problems.append(f"steps logged twice: {twice}")
    stale = stale_temp_files(work)
    if stale:
        problems.append(f"{len(stale)} stale temporary file(s): {[str(p) for p in stale[:5]]}")
    return {"kills": kills, "import_seconds": round(import_seconds, 1), "labels_lost": len(set(batch) - set(names)),
            "problems": problems}


def main(argv=None) -> int:
    args = parse_args(argv)
    ch = Chaos(args)
    from alod.data.synthetic import write_dataset

    if not (ch.out / "data").is_dir():
        write_dataset(ch.out / "data", train=args.train, val=args.val, seed=0)
    started = time.perf_counter()
    result = {"cycle": chaos_cycle(ch)}
    if args.import_kills:
        result["import"] = chaos_import(ch)
    result["seconds"] = round(time.perf_counter() - started, 1)
    (ch.out / "chaos.json").write_text(json.dumps(result, indent=1))
    cyc = result["cycle"]
    print(f"\nchaos (seed {args.seed}): {args.cycles} cycles x {args.per_cycle} images, {args.epochs} epochs, "
          f"reference {cyc['reference_seconds']} s, kill moments uniform over it")
    print("| what | kills survived | labels lost | problems |\n|---|---|---|---|")
    print(f"| cycle run (kill -9, resume with the run id) | {cyc['kills']} | {cyc['labels_lost']} of "
          f"{cyc['labeled']} | {len(cyc['problems'])} |")
    if "import" in result:
        imp = result["import"]
        print(f"| import-labels (files oracle) | {imp['kills']} | {imp['labels_lost']} | {len(imp['problems'])} |")
    problems = cyc["problems"] + result.get("import", {}).get("problems", [])
    for p in problems:
        print(f"PROBLEM: {p}")
    print(f"total {result['seconds']} s; details in {ch.out / 'chaos.json'}, commands in {ch.out / 'commands.log'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
