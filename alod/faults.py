"""Fault injection for the crash-and-resume tests.

`ALOD_FAULT=point:cycle` (e.g. `after_metrics:2`) kills the process with
SIGKILL-like abruptness (os._exit, no cleanup, no finally blocks) when the
cycle loop reaches that point; unset, this costs one dict lookup.

`ALOD_DELAY=point:seconds` (e.g. `import_before_write:3`) sleeps there instead: the concurrency
tests widen a race window with it, so that a missing lock shows every time, not once in a while.
"""

from __future__ import annotations

import os

POINTS = ("select", "after_select", "after_export", "evaluate", "after_train", "after_metrics", "train_step",  # train_step: "epoch.step"
          "epoch_saved",  # epoch_saved: the epoch (0-based) whose checkpoint was just written
          "import_after_local", "import_after_upload")  # import points: cycle "import"


def maybe_fail(point: str, cycle: int | str) -> None:
    spec = os.environ.get("ALOD_FAULT")
    if not spec:
        return
    want_point, _, want_cycle = spec.partition(":")
    if want_point == point and str(cycle) == want_cycle:
        # With ALOD_FAULT_ONCE=path the fault fires once (a restarted worker must survive).
        once = os.environ.get("ALOD_FAULT_ONCE")
        if once:
            if os.path.exists(once):
                return
            open(once, "w").close()
        print(f"ALOD_FAULT: killing the process at {point} of cycle {cycle}", flush=True)
        os._exit(137)


def at_point(point: str, cycle: int | str) -> None:
    """A named point of the cycle loop: `ALOD_DELAY` sleeps there, `ALOD_FAULT` kills there."""
    maybe_delay(point)
    maybe_fail(point, cycle)


def maybe_delay(point: str) -> None:
    spec = os.environ.get("ALOD_DELAY")
    if not spec:
        return
    want_point, _, seconds = spec.partition(":")
    if want_point == point:
        import time

        time.sleep(float(seconds))
