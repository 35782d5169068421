"""Heavy modules imported on first use, so a command that never touches them does not pay their import.

``from predictor.lazy import pandas as pd`` gives an object that imports pandas the first time one of its
attributes is read (pandas' import is a large share of a short command's start-up) and forwards to it from then
on. The simulate path keeps pandas out of its hot loops, so the forwarding costs nothing there; everything else
sees plain pandas.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for module ``name`` and imports it when an attribute is first read."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        return getattr(self._module or self.load(), attr)

    def load(self) -> ModuleType:
        """The module, imported now if it is not yet (e.g. before forking workers that would each import it)."""
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return self._module

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r} ({'loaded' if self._module is not None else 'not loaded'})>"


pandas = LazyModule("pandas")
