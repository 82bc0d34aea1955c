"""Training, inference and evaluation loops."""

import os


def progress_bars(requested: bool = True) -> bool:
    """Whether to draw tqdm bars: as requested, unless ALOD_PROGRESS=0 (set in processes that run side by
    side, whose bars would overwrite each other on one terminal)."""
    return requested and os.environ.get("ALOD_PROGRESS", "1") != "0"
