"""Planner work in forked worker processes, with results identical to doing it in order in one process.

The planner's simulations are independent once their inputs are known (the candidates of one beam level, the
estimate draws of the chosen plan and of the baselines), but they share caches: the executor's simulation cache
(whose misses count towards the search budget, a number of simulations) and the planner's states. A
:class:`OrderedPool` runs a list of work items in worker processes forked from the planner (``fork``: they
inherit its predictor tables, simulators and caches at the moment of the fork), each item recording its
effects as :class:`Effects` — the cache entries it added (with the simulations each cost), the states it
computed, the evaluations it counted. The caller replays the items in their order and merges each one's
effects: an entry already present (computed by an earlier item, possibly in another worker) is not counted
again. Every result, and the simulation count at every point where the caller checks its budget, are then
those of the serial run (the simulations are deterministic; only the wall time differs). Items a budget stop
makes unnecessary are simply not merged.

One CPU (:func:`predictor.cpus.available_cpus`), one item, a platform without ``fork``, or a pool inside a
worker: the items run in this process, lazily, in order (no effects to merge).
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

_JOB: tuple | None = None   # (planner, function, items) of the pool being forked: inherited by its workers
_IN_WORKER = False


@dataclass
class Effects:
    """What one work item added to the planner: cache ``entries`` (key, value, simulations), planning ``states``
    (stages, state) and ``evaluations`` counted."""

    entries: list
    states: list
    evaluations: int


class Recorder:
    """Marks the planner's caches and counters, then collects what was added since (:class:`Effects`)."""

    def __init__(self, planner):
        self.planner = planner
        self.mark()

    def mark(self) -> None:
        p = self.planner
        self._at = (len(p.executor._cache), len(p._states), p.evaluations)

    def cut(self) -> Effects:
        """Effects since the last mark (the planner's dicts keep insertion order and never drop keys); marks anew."""
        p, (cache_at, states_at, evaluations_at) = self.planner, self._at
        sims = p.executor._sims_by_key
        entries = [(k, v, sims[k]) for k, v in itertools.islice(p.executor._cache.items(), cache_at, None)]
        states = list(itertools.islice(p._states.items(), states_at, None))
        out = Effects(entries, states, p.evaluations - evaluations_at)
        self.mark()
        return out


def merge(planner, effects: Effects | None) -> None:
    """Add one item's effects to ``planner`` (entries not yet cached count their simulations); None: nothing."""
    if effects is None:
        return
    ex = planner.executor
    for key, value, sims in effects.entries:
        if key not in ex._cache:
            ex._cache[key] = value
            ex._sims_by_key[key] = sims
            ex.simulations += sims
    for stages, state in effects.states:
        planner._states.setdefault(stages, state)
    planner.evaluations += effects.evaluations


def _work(index: int):
    """Worker side: run item ``index``; return its value and its :class:`Effects`."""
    planner, function, items = _JOB
    planner._recorder = Recorder(planner)
    value = function(*items[index])
    return value, planner._recorder.cut()


def _init_worker() -> None:
    global _IN_WORKER
    _IN_WORKER = True


def _fork_pool(planner, function: Callable, items: Sequence[tuple], processes: int):
    """A ``fork`` pool of ``processes`` workers for ``items`` (forked now: the job is theirs from the start)."""
    global _JOB
    _JOB = (planner, function, items)
    try:
        return multiprocessing.get_context("fork").Pool(processes, initializer=_init_worker)
    finally:
        _JOB = None


class OrderedPool:
    """Maps a planner method over work items in up to ``workers`` processes (see the module docstring).

    Parameters
    ----------
    planner : scheduler.planner.Planner
    workers : int
        Processes to use at most (1: everything in this process).
    """

    def __init__(self, planner, workers: int):
        self.planner = planner
        self.workers = max(1, int(workers))

    def _parallel(self, items: int, least: int = 2) -> bool:
        return (self.workers > 1 and items >= least and not _IN_WORKER
                and "fork" in multiprocessing.get_all_start_methods())

    def _serial(self, function: Callable, items: Sequence[tuple]) -> Iterator[tuple[object, None]]:
        planner = self.planner
        for item in items:
            outer, planner._recorder = planner._recorder, None  # effects accrue to an enclosing work item, if any
            try:
                value = function(*item)
            finally:
                planner._recorder = outer
            yield value, None

    def map(self, function: Callable, items: Sequence[tuple]) -> Iterator[tuple[object, Effects | None]]:
        """Yield ``(function(*item), effects)`` for each item, in order, for :func:`merge` (effects are None when
        the item ran in this process: they are already here)."""
        if not self._parallel(len(items)):
            yield from self._serial(function, items)
            return
        with _fork_pool(self.planner, function, items, min(self.workers, len(items))) as pool:
            yield from pool.imap(_work, range(len(items)), chunksize=1)

    def start(self, function: Callable, items: Sequence[tuple]) -> Background:
        """Run ``items`` in one worker process from now on, beside this one (in this process, later, when there
        is one CPU); collect them with :meth:`Background.results`."""
        if not self._parallel(len(items), least=1):
            return Background(None, lambda: list(self._serial(function, items)))
        pool = _fork_pool(self.planner, function, items, 1)
        return Background(pool, pool.map_async(_work, range(len(items)), chunksize=1).get)


class Background:
    """Work items started by :meth:`OrderedPool.start`."""

    def __init__(self, pool, get: Callable[[], list]):
        self._pool, self._get = pool, get

    def results(self) -> list[tuple[object, Effects | None]]:
        """``(value, effects)`` of each item, in order (waits for the worker)."""
        try:
            return self._get()
        finally:
            if self._pool is not None:
                self._pool.terminate()
                self._pool.join()
