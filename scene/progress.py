"""Progress and cancellation hooks shared by every pipeline (DESIGN §3). No Qt here."""
from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol


class Progress(Protocol):
    def report(self, stage: str, done: int, total: int, message: str = "") -> None: ...

    def should_stop(self) -> bool: ...


class Cancelled(Exception):
    """Raised by pipelines that stop at a step boundary when asked to."""


class NullProgress:
    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        pass

    def should_stop(self) -> bool:
        return False


class CallbackProgress:
    """Forwards reports to a callable; a thread-safe flag answers should_stop()."""

    def __init__(self, callback: Optional[Callable[[str, int, int, str], None]] = None):
        self._callback = callback
        self._stop = threading.Event()

    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        if self._callback is not None:
            self._callback(stage, done, total, message)

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def clear_stop(self) -> None:
        """Answer should_stop() with False again (a flag reused, e.g. SLAM's interrupt of a local BA)."""
        self._stop.clear()


class RecordingProgress(CallbackProgress):
    """Keeps every report (for tests and logs)."""

    def __init__(self, stop_after: Optional[int] = None):
        super().__init__(None)
        self.reports: list[tuple[str, int, int, str]] = []
        self._stop_after = stop_after

    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        self.reports.append((stage, done, total, message))
        if self._stop_after is not None and len(self.reports) >= self._stop_after:
            self.request_stop()


class TqdmProgress:
    """A tqdm bar per stage for the command line."""

    def __init__(self, disable: bool = False):
        self._bars: dict = {}
        self._disable = disable

    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total or None, desc=stage, unit="it", disable=self._disable,
                                           leave=True)
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
