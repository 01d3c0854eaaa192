"""scene.parallel.ordered_thread_map: input order, inline with one worker, errors and early close."""
from __future__ import annotations

import threading
import time

import pytest

from scene.parallel import ordered_thread_map


def test_results_come_back_in_input_order_from_several_threads():
    seen = set()

    def slow_square(x):
        seen.add(threading.get_ident())
        time.sleep(0.02 if x % 3 == 0 else 0.001)  # later items finish first
        return x * x

    assert list(ordered_thread_map(slow_square, range(20), workers=3)) == [x * x for x in range(20)]
    assert len(seen) > 1


def test_one_worker_runs_inline_on_the_calling_thread():
    caller = threading.get_ident()
    assert list(ordered_thread_map(lambda x: threading.get_ident() == caller, range(4), workers=1)) == [True] * 4


def test_an_exception_surfaces_at_its_position():
    def fail_on_three(x):
        if x == 3:
            raise ValueError("bad item 3")
        return x

    results = ordered_thread_map(fail_on_three, range(6), workers=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(results)


def test_closing_early_starts_no_more_than_the_window():
    started = []

    def record(x):
        started.append(x)
        time.sleep(0.01)
        return x

    results = ordered_thread_map(record, range(1000), workers=2, window=4)
    assert next(results) == 0
    results.close()
    assert len(started) <= 6
