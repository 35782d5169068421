"""Input errors with one-line, user-facing messages.

Every public boundary (CLI options, config files, catalogue lookups) raises :class:`InputError`
for bad input. The message names the field, the offending value and what is allowed, on one line,
so the CLI can print it verbatim and exit with code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(ValueError):
    """Bad user input. ``str(err)`` is a single line fit to show to a user."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ModelDoesNotFitError(InputError):
    """The model's weights (plus the minimum KV cache) exceed the usable GPU memory."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Closest names to ``name`` among ``choices`` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:  # fall back to substring matches, e.g. "70b" → every 70B model
        hits = [c for c in lowered if name.lower() in c][:n]
    return [lowered[h] for h in hits]


def unknown_name(field: str, value: str, choices: Iterable[str]) -> InputError:
    """An :class:`InputError` for an unknown catalogue name, suggesting the closest ones."""
    choices = sorted(choices)
    near = closest(value, choices)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return InputError(f"{field}: unknown value {value!r}; {hint}allowed: {', '.join(choices)}")


def require_positive(field: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise :class:`InputError` unless ``value`` is a finite positive (or non-negative) number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{field}: expected a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise InputError(f"{field}: expected a finite number, got {value!r}")
    if allow_zero and v < 0:
        raise InputError(f"{field}: must be >= 0, got {value!r}")
    if not allow_zero and v <= 0:
        raise InputError(f"{field}: must be > 0, got {value!r}")
