"""Plain progress lines on stderr for when it is not a terminal (a log file, CI, a pipe).

Rich's bars and spinners draw nothing there, so a long command would be silent for minutes. These helpers
print ordinary lines instead: a step's name when it starts (:meth:`ProgressLines.say`) and ``done/total``
counts at most every ``every_s`` seconds (:meth:`ProgressLines.update`), and for a step that reports nothing
itself, a ``<step>`` line every ``every_s`` seconds (:meth:`ProgressLines.heartbeat`), each with the
elapsed time. ``INFERENCE_SIM_PROGRESS_S`` sets the heartbeat interval in seconds (default 15).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator


def heartbeat_interval_s() -> float:
    """Seconds between heartbeat lines: ``$INFERENCE_SIM_PROGRESS_S`` if it is a positive number, else 15."""
    try:
        value = float(os.environ.get("INFERENCE_SIM_PROGRESS_S", ""))
    except ValueError:
        return 15.0
    return value if value > 0 else 15.0


class ProgressLines:
    """Progress as plain stderr lines, e.g. ``sweeping points: 12/40 (30%), 8 s``.

    Parameters
    ----------
    label : str
        What is progressing (``sweeping points``).
    enabled : bool
        Print only when True (pass ``not console.is_terminal``).
    every_s : float
        Least time between two count lines, seconds (the first and the last count always print).
    """

    def __init__(self, label: str, enabled: bool, every_s: float = 10.0):
        self.label = label
        self.enabled = enabled
        self.every_s = every_s
        self.start = time.monotonic()
        self._last: float | None = None
        self.current = ""

    def _print(self, text: str) -> None:
        print(f"{text}, {time.monotonic() - self.start:.0f} s", file=sys.stderr, flush=True)

    def say(self, message: str) -> None:
        """Print a step (``training: fitting the final model``)."""
        if self.enabled:
            self._print(f"{self.label}: {message}")

    def update(self, done: int, total: int | None) -> None:
        """Print ``done/total`` if ``every_s`` has passed since the last line, or at the start or the end."""
        if not self.enabled:
            return
        now = time.monotonic()
        final = total is not None and done >= total
        if self._last is not None and not final and now - self._last < self.every_s:
            return
        self._last = now
        share = f" ({done / total:.0%})" if total else ""
        self._print(f"{self.label}: {done}/{total if total is not None else '?'}{share}")

    def step(self, message: str) -> None:
        """Set the step the next heartbeat line names (printed by :meth:`heartbeat`, not at once)."""
        self.current = message

    @contextlib.contextmanager
    def heartbeat(self, step: str, every_s: float | None = None) -> Iterator[None]:
        """Print the current step (``step``, then whatever :meth:`step` set) every ``every_s`` seconds until the
        block ends (nothing if it ends sooner, so a command that fails at once still prints only its error)."""
        if not self.enabled:
            yield
            return
        self.current = step
        if every_s is None:
            every_s = heartbeat_interval_s()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every_s):
                self.say(self.current)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
