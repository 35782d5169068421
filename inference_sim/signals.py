"""SIGTERM handled like Ctrl-C: the command stops, keeps what it can, cleans up, and exits 143.

A process killed with SIGTERM's default action dies at once, skipping every ``finally`` — temporary files
stay behind and partial results are lost. :func:`install` replaces that action with a handler that raises
:class:`Terminated` (a :class:`KeyboardInterrupt`), so the code paths that already handle Ctrl-C (partial
results, temporary-file cleanup) handle SIGTERM too; :func:`interrupted_exit_code` then tells the CLI to exit
with 143 (128 + SIGTERM) rather than 130 (128 + SIGINT).
"""

from __future__ import annotations

import signal
import threading

EXIT_SIGINT = 130
EXIT_SIGTERM = 143
_state = {"terminated": False}


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _on_sigterm(signum, frame) -> None:
    _state["terminated"] = True
    raise Terminated


def install():
    """Handle SIGTERM as an interruption (main thread only; elsewhere a no-op); return the previous handler."""
    _state["terminated"] = False
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def restore(previous) -> None:
    """Put back the handler :func:`install` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def exit_code(code: int) -> int:
    """The process exit code: an interruption (130) becomes 143 when SIGTERM caused it."""
    return EXIT_SIGTERM if code == EXIT_SIGINT and _state["terminated"] else code
