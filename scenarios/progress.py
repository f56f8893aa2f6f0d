"""Progress of a suite run: a live bar on a terminal, a few plain lines in a log.

On a terminal (``stream.isatty()``) this is a tqdm bar. Otherwise (CI, ``nohup``, a batch
scheduler's log file) tqdm's carriage-return updates would flood the log, so one line is written
per tenth of the cases or at most every ``log_interval_s`` seconds, whichever comes later, plus
the last one: ``milling: 40/100 cases (40 %), 1 errored, 3:12 elapsed, ~4:48 left``.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Counts finished cases of ``total``; ``write`` prints a message without breaking the bar."""

    def __init__(self, name: str, total: int, done: int = 0, enabled: bool = True, stream: TextIO | None = None,
                 log_interval_s: float = 30.0):
        self.name, self.total, self.done, self.errored = name, total, done, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.log_interval_s = log_interval_s
        self._start = time.monotonic()
        self._first = done
        self._last_line = -1.0
        self._last_done = done
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc=name, unit="case", file=self.stream)

    def update(self, errored: bool) -> None:
        self.done += 1
        self.errored += int(errored)
        if self._bar is not None:
            self._bar.update(1)
            if self.errored:
                self._bar.set_postfix(errored=self.errored)
        elif self.enabled:
            now = time.monotonic()
            step = max(self.total // 10, 1)
            due = self.done - self._last_done >= step and now - self._last_line >= self.log_interval_s
            if due or self.done == self.total or self._last_line < 0:
                self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        rate = (self.done - self._first) / elapsed if elapsed > 0 else 0.0
        left = f", ~{_clock((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total else ""
        pct = 100.0 * self.done / max(self.total, 1)
        print(f"{self.name}: {self.done}/{self.total} cases ({pct:.0f} %), {self.errored} errored, "
              f"{_clock(elapsed)} elapsed{left}", file=self.stream, flush=True)
        self._last_line, self._last_done = now, self.done

    def status(self, text: str) -> None:
        """A short status after the bar's counts (e.g. the closest case so far); a log gets none (write lines)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text[:80])

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        elif self.enabled:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
