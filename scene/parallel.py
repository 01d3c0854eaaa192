"""Run independent pipeline steps on a few threads, results in input order (no Qt, no state kept).

For steps whose heavy parts release the GIL (OpenCV estimators, BLAS, nogil numba): on 2 cores two workers
keep both busy. At most ``window`` steps are in flight, so a cancel is honoured within a few steps and
memory stays flat.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def ordered_thread_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None,
                       window: int | None = None) -> Iterator[R]:
    """``fn`` over ``items`` on ``workers`` threads, yielded in input order; with one worker, inline.

    Closing the generator early (a cancel) drops the steps not yet started; exceptions surface in order.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1:
        for item in items:
            yield fn(item)
        return
    window = window or 2 * workers
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
