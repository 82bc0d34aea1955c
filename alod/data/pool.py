"""Label state of the active-learning pool: which image was labeled in which cycle.

Following baal's `labelled_map`, the state stores the cycle at which each image
was labeled, so the labeled set of any earlier cycle can be recovered exactly.
It is written atomically (temp file + rename) so a kill at any point leaves
either the old or the new state on disk, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from alod.fileio import write_json_atomic


class LabeledState:
    def __init__(self, labeled: dict[str, int] | None = None):
        self._cycle_of: dict[str, int] = dict(labeled or {})

    def __len__(self) -> int:
        return len(self._cycle_of)

    def __contains__(self, name: str) -> bool:
        return name in self._cycle_of

    def add(self, names: Iterable[str], cycle: int) -> None:
        for name in names:
            if name in self._cycle_of:
                raise ValueError(
                    f"image {name!r} is already labeled (cycle {self._cycle_of[name]}); "
                    f"cycle {cycle} must not select it again"
                )
            self._cycle_of[name] = cycle

    def cycle_of(self, name: str) -> int | None:
        return self._cycle_of.get(name)

    def labeled(self, up_to_cycle: int | None = None) -> list[str]:
        """Labeled images in selection order (cycle, then insertion order)."""
        items = self._cycle_of.items()
        if up_to_cycle is not None:
            items = [(n, c) for n, c in items if c <= up_to_cycle]
        return [n for n, _ in sorted(items, key=lambda item: item[1])]

    def selected_in(self, cycle: int) -> list[str]:
        return [n for n, c in self._cycle_of.items() if c == cycle]

    @property
    def last_cycle(self) -> int:
        return max(self._cycle_of.values(), default=0)

    def truncated(self, up_to_cycle: int) -> "LabeledState":
        return LabeledState({n: c for n, c in self._cycle_of.items() if c <= up_to_cycle})

    def to_dict(self) -> dict[str, int]:
        return dict(self._cycle_of)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(self._cycle_of, path, indent=0)

    @classmethod
    def load(cls, path: str | Path) -> "LabeledState":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read labeled state: {e}") from e
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in raw.items()
        ):
            raise ValueError(f"{path}: labeled state must map image name -> cycle number")
        return cls(raw)
