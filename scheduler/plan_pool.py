"""Planner work in forked worker processes, with results identical to doing it in order in one process.

The planner's simulations are independent once their inputs are known (the candidates of one beam level, the
estimate draws of the chosen plan and of the baselines), but they share caches: the executor's simulation cache,
whose misses count towards the search budget (a number of simulations), and the planner's states. An
:class:`OrderedPool` runs a list of work items in worker processes forked from the planner (``fork``: they
inherit its predictor tables, simulators and caches at the moment of the fork). Each item records its
:class:`Effects`: every simulation-cache key it looked up, in order (hit or miss), the entries it computed (with
the engine simulations each cost), the planning states it computed and the evaluations it counted. The caller
replays the items in their order and :func:`merge` s each one: a key looked up and not yet in the cache is added
and its simulations counted — exactly what the item would have counted had it run here after the items
before it (the keys an item looks up do not depend on the cache: it only saves the work). So every result,
and the simulation count wherever the caller checks its budget, are those of the serial run; only the wall time
differs. Items a budget stop makes unnecessary are not merged (nor is anything they computed).

An item may be cut into segments (:meth:`scheduler.planner.Planner._segment`), merged or dropped one by one (the
beam search drops an evaluation of a plan an earlier item evaluated: every key of it is in the cache already).

One CPU (:func:`predictor.cpus.available_cpus`), one item, a platform without ``fork``, or a pool inside a
worker: the items run in this process, lazily, in order (their effects are already here: None to merge).
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

_JOB: tuple | None = None   # (planner, function, items) of the pool being forked: inherited by its workers
_IN_WORKER = False


@dataclass
class Effects:
    """What one work item (segment) did to the planner's caches (see the module docstring).

    Attributes
    ----------
    touched : list
        Simulation-cache keys looked up, in order.
    entries : dict
        key -> (cached value, engine simulations it cost), for the keys this worker computed.
    states : list
        (stages, state) planning states computed, in order.
    evaluations : int
        Plan evaluations counted.
    """

    touched: list
    entries: dict
    states: list
    evaluations: int


class Recorder:
    """Marks the planner's caches and counters, then collects what was done since (:class:`Effects`)."""

    def __init__(self, planner):
        self.planner = planner
        self.mark()

    def mark(self) -> None:
        p = self.planner
        p.executor.touched = []
        self._at = (len(p.executor._cache), len(p._states), p.evaluations)

    def cut(self) -> Effects:
        """Effects since the last mark (the planner's dicts keep insertion order and never drop keys); marks anew."""
        p, (cache_at, states_at, evaluations_at) = self.planner, self._at
        sims = p.executor._sims_by_key
        entries = {k: (v, sims[k]) for k, v in itertools.islice(p.executor._cache.items(), cache_at, None)}
        out = Effects(p.executor.touched, entries, list(itertools.islice(p._states.items(), states_at, None)),
                      p.evaluations - evaluations_at)
        self.mark()
        return out


def merge(planner, effects: Effects | None) -> None:
    """Replay one item's (segment's) ``effects`` on ``planner``, in order after the items before it (None: it ran
    here, nothing to do)."""
    if effects is None:
        return
    ex = planner.executor
    for key in effects.touched:
        if key not in ex._cache:
            value, sims = effects.entries[key]  # computed by this item, or else by one merged before it
            ex._cache[key] = value
            ex._sims_by_key[key] = sims
            ex.simulations += sims
    for stages, state in effects.states:
        planner._states.setdefault(stages, state)
    planner.evaluations += effects.evaluations


def _work(index: int):
    """Worker side: run item ``index``; return its value and its effects, one :class:`Effects` per segment."""
    planner, function, items = _JOB
    planner._recorder = Recorder(planner)
    planner._segments = []
    value = function(*items[index])
    return value, planner._segments + [planner._recorder.cut()]


def _init_worker() -> None:
    """In each worker: pools nest no further; Ctrl-C is the parent's to handle, and SIGTERM (how the parent's pool
    ends its workers) kills at once — not the CLI's handler, inherited through the fork, which would raise in a
    worker waiting on the pool's queue and leave it (and the parent joining it) hanging."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _fork_pool(planner, function: Callable, items: Sequence[tuple], processes: int):
    """A ``fork`` pool of ``processes`` workers for ``items`` (forked now: the job is theirs from the start)."""
    global _JOB
    from predictor.lazy import pandas

    pandas.load()  # imported once here, not once in every worker (the items build op tables and results)
    _JOB = (planner, function, items)
    gc.freeze()  # the workers' garbage collector then leaves the inherited objects (and their pages) alone
    try:
        return multiprocessing.get_context("fork").Pool(processes, initializer=_init_worker)
    finally:
        gc.unfreeze()
        _JOB = None


STOP_TIMEOUT_S = 10.0  # how long ending a pool may take before its workers are killed and it is left behind


def stop(pool) -> bool:
    """End ``pool`` (``terminate`` and ``join``) within :data:`STOP_TIMEOUT_S`; True when it ended in time.

    ``multiprocessing.Pool.terminate`` can wait forever: a worker killed while it was writing a result leaves a
    partial message in the pipe, and the pool's result thread never stops reading it. A search stopped by its
    budget terminates busy workers, so the pool is ended from a daemon thread; past the timeout its workers are
    killed and its (daemon) handler threads abandoned. Every result the caller kept had arrived whole."""
    ender = threading.Thread(target=lambda: (pool.terminate(), pool.join()), daemon=True)
    ender.start()
    ender.join(STOP_TIMEOUT_S)
    if not ender.is_alive():
        return True
    for worker in getattr(pool, "_pool", []):  # the workers (CPython's Pool keeps them here)
        if worker.exitcode is None:
            worker.kill()
    return False


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

    def _serial(self, function: Callable, items: Sequence[tuple]) -> Iterator[tuple[object, list[None]]]:
        planner = self.planner
        for item in items:
            # effects accrue to the enclosing work item, if any (this may be a worker running one)
            outer = planner._recorder, planner._segments
            planner._recorder, planner._segments = None, []
            try:
                value = function(*item)
                segments = [None] * (len(planner._segments) + 1)
            finally:
                planner._recorder, planner._segments = outer
            yield value, segments

    def map(self, function: Callable, items: Sequence[tuple],
            processes: int | None = None) -> Iterator[tuple[object, list[Effects | None]]]:
        """Yield ``(function(*item), segments)`` for each item, in order: the effects of each of its segments, for
        :func:`merge` (None when the item ran in this process). At most ``processes`` workers (default: all);
        one runs the items here. Close the iterator to stop early."""
        processes = self.workers if processes is None else min(processes, self.workers)
        if processes < 2 or not self._parallel(len(items)):
            yield from self._serial(function, items)
            return
        pool = _fork_pool(self.planner, function, items, min(processes, len(items)))
        try:
            yield from pool.imap(_work, range(len(items)), chunksize=1)
        finally:
            stop(pool)

    def start(self, function: Callable, items: Sequence[tuple], processes: int = 1) -> Background:
        """Run ``items`` in up to ``processes`` worker processes from now on, beside this one (in this process,
        later, when there is one CPU); collect them with :meth:`Background.results`."""
        if not self._parallel(len(items), least=1):
            return Background(None, lambda: list(self._serial(function, items)))
        pool = _fork_pool(self.planner, function, items, max(1, min(processes, self.workers, len(items))))
        return Background(pool, pool.map_async(_work, range(len(items)), chunksize=1))


class Background:
    """Work items started by :meth:`OrderedPool.start`."""

    def __init__(self, pool, pending):
        self._pool, self._pending = pool, pending

    def busy(self) -> bool:
        """Whether a worker is still running the items (False in this process: they run at :meth:`results`)."""
        return self._pool is not None and not self._pending.ready()

    def results(self) -> list[tuple[object, list[Effects | None]]]:
        """``(value, effects)`` of each item, in order (waits for the worker)."""
        try:
            return self._pending.get() if self._pool is not None else self._pending()
        finally:
            if self._pool is not None:
                stop(self._pool)
