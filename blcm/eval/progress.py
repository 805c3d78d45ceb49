"""The seconds a section takes (speed and the report's timings) and its progress bar."""

from __future__ import annotations

import time


class Timer:
    """Seconds spent inside ``with timer:``, summed over every use."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start


def progress_bar(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


def no_progress_bar(items, desc: str):
    return items
