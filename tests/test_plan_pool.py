"""The planner's worker processes (:mod:`scheduler.plan_pool`) change nothing but the wall time: a plan made with two
workers is the plan made in one process — same stages, estimates, baselines, evaluation and simulation counts."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler import plan_pool
from scheduler.app import Application
from scheduler.planner import Planner
from tests.test_colocation import two_llms_one_gpu
from tests.test_planner import chain_spec, four_gpu_spec


@pytest.fixture
def forks(monkeypatch):
    """The worker pools forked, as (planner method, processes): a parallel run that never forked would prove nothing."""
    calls = []
    real = plan_pool._fork_pool

    def spy(planner, function, items, processes):
        calls.append((function.__name__, processes))
        return real(planner, function, items, processes)

    monkeypatch.setattr(plan_pool, "_fork_pool", spy)
    return calls


def _outcome(result) -> dict:
    out = result.to_dict()
    out.pop("search_time_s")  # wall time: the only thing allowed to differ
    out["gantt"] = [(iv.llm, str(iv.config), iv.gpus, iv.load_s, iv.serve_s, iv.end_s)
                    for iv in result.execution.intervals]
    return out


SPECS = {"chain": lambda: chain_spec(samples=3), "four_gpus": lambda: four_gpu_spec([[0, 1], [2, 3]]),
         "colocation": lambda: two_llms_one_gpu(True) | {"samples": 2}}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_two_workers_make_the_plan_of_one_process(roofline, forks, name):
    serial = Planner(Application.from_dict(SPECS[name]()), roofline, workers=1).run()
    assert forks == []
    parallel = Planner(Application.from_dict(SPECS[name]()), roofline, workers=2).run()
    assert forks[:2] == [("_rates", 2), ("_work_item", 1)]  # the LLMs' rates, then the baselines beside the search
    assert _outcome(parallel) == _outcome(serial)


def test_a_search_stopped_by_its_simulation_budget_is_the_same_with_workers(roofline, forks):
    # the budget is checked after each expansion: a pooled level must stop at the same one, with the same count
    spec = four_gpu_spec(None)
    runs = [Planner(Application.from_dict(spec), roofline, workers=w, max_simulations=8).run(baselines=b)
            for w in (1, 2) for b in (False, True)]
    assert runs[0].stopped_by == "simulations"
    assert ("_expand", 2) in forks
    assert _outcome(runs[2]) == _outcome(runs[0]) and _outcome(runs[3]) == _outcome(runs[1])


def test_merged_effects_count_each_simulation_once(roofline):
    app = Application.from_dict(chain_spec())
    worker, parent = (Planner(app, roofline, workers=1) for _ in range(2))
    worker._prepare()
    parent._prepare()
    recorder = plan_pool.Recorder(worker)
    before = worker.executor.simulations
    span = worker._makespan(worker.naive_plan(), worker.samples[0])
    effects = recorder.cut()
    new = worker.executor.simulations - before
    assert new > 0 and sum(sims for _, sims in effects.entries.values()) == new
    start = parent.executor.simulations
    plan_pool.merge(parent, effects)
    plan_pool.merge(parent, effects)  # a second copy (another worker computed the same) adds nothing
    assert parent.executor.simulations == start + new
    # the merged entries are the ones the parent would have computed: no new simulation, the same makespan
    assert parent._makespan(parent.naive_plan(), parent.samples[0]) == span
    assert parent.executor.simulations == start + new


def test_one_worker_runs_everything_in_this_process(roofline, forks):
    planner = Planner(Application.from_dict(chain_spec()), roofline, workers=1)
    planner._prepare()
    values = [v for v, effects in planner.pool.map(planner._work_item, [("draw", planner.naive_plan(), 0)] * 2)]
    assert forks == [] and values[0] == values[1] and np.isfinite(values[0])


def test_workers_die_on_sigterm_even_under_the_clis_handler(roofline, forks):
    """The CLI turns SIGTERM into an exception; workers inherit that handler through the fork. A pool ends its
    workers with SIGTERM, so each worker must take the default action again (else one raising while it waits on
    the pool's queue leaves the others, and the parent joining them, hanging) and leave Ctrl-C to the parent."""
    import signal

    from inference_sim import signals

    planner = Planner(Application.from_dict(chain_spec()), roofline, workers=2)
    previous = signals.install()
    try:
        handlers = [v for v, _ in planner.pool.map(lambda: (signal.getsignal(signal.SIGTERM),
                                                             signal.getsignal(signal.SIGINT)), [(), ()])]
    finally:
        signals.restore(previous)
    assert len(forks) == 1
    assert handlers == [(signal.SIG_DFL, signal.SIG_IGN)] * 2


def test_beam_levels_in_a_pool_search_exactly_like_one_process(roofline, forks):
    # without baselines no worker runs beside the search, so every level with several expansions uses a pool
    spec = four_gpu_spec(None)
    serial = Planner(Application.from_dict(spec), roofline, workers=1).run(baselines=False)
    pooled = Planner(Application.from_dict(spec), roofline, workers=2).run(baselines=False)
    assert forks.count(("_expand", 2)) >= 2  # at least two search levels in a pool
    assert _outcome(pooled) == _outcome(serial)


def test_a_pool_that_cannot_end_is_left_behind_with_its_workers_killed(monkeypatch):
    import multiprocessing
    import threading
    import time

    class Stuck:  # a pool whose terminate never returns (CPython's can wait forever on a half-written result)
        def __init__(self):
            self.release = threading.Event()
            self._pool = [multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))]
            self._pool[0].start()

        def terminate(self):
            self.release.wait()

        def join(self):
            pass

    monkeypatch.setattr(plan_pool, "STOP_TIMEOUT_S", 0.2)
    stuck = Stuck()
    t0 = time.perf_counter()
    assert plan_pool.stop(stuck) is False
    assert time.perf_counter() - t0 < 5
    stuck._pool[0].join(5)
    assert stuck._pool[0].exitcode is not None  # killed, not left running
    stuck.release.set()
    pool = multiprocessing.get_context("fork").Pool(1)
    assert plan_pool.stop(pool) is True
