"""A lean run of the serving-engine simulator: per-request times only, for callers that read nothing else.

:meth:`scheduler.engine.Simulator.run` builds a full :class:`~scheduler.metrics.SimResult` (a per-request
table, the run statistics, an efficiency report). The multi-LLM planner (:mod:`scheduler.execution`) runs
thousands of short simulations and reads four arrays of each: status, first-token and finish times, TPOT.
:func:`serve_timings` runs the same event loop (same scheduling, same iteration times: the values are
identical, see ``tests/test_engine_timings.py``) without what only the result needs:

* no efficiency recorder (its per-phase work tables), no running statistics (KV use, batch sizes) and no
  time-between-tokens histogram;
* no per-iteration work (FLOPs, bytes, roofline time) unless a contention hook (``stretch``) reads it;
* no result table, metadata or summary.

Times are seconds from the start of the run, as in the full result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.engine_state import IterationLog
from scheduler.metrics import tpot_s


@dataclass(frozen=True)
class ServeTimings:
    """Per-request outcome of a run (arrays in workload order).

    Attributes
    ----------
    status_code : np.ndarray
        0 waiting, 1 running, 2 finished, 3 rejected (:data:`scheduler.metrics.STATUS`).
    first_token_s, finish_s : np.ndarray
        Times (s) of the first token and of the last one (NaN when never reached).
    tpot_s : np.ndarray
        (finish − first token) / (output tokens − 1) in s; NaN for one-token outputs.
    """

    status_code: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    tpot_s: np.ndarray


def serve_timings(sim, workload) -> ServeTimings:
    """Simulate ``workload`` on ``sim`` (a :class:`scheduler.engine.Simulator`) and return per-request times only.

    Same event loop and values as ``sim.run(workload).columns``; the engine's statistics and efficiency of
    this run are not kept (``sim.stats`` and ``sim.efficiency`` stay empty).
    """
    state = sim.begin(workload, lean=True)  # no per-iteration work, statistics or token-gap histogram
    sim._stream = None
    sim._loop(state, IterationLog(), len(workload), False, None, None)
    return ServeTimings(state.status.copy(), state.first_token.copy(), state.finish.copy(),
                        tpot_s(state.first_token, state.finish, state.output))
