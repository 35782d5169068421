"""Closed-loop serving runs: the steady-state statistics a benchmark client reports, and scoring them
against measured serving results (``inference-sim evaluate --serving``).

A benchmark such as ``vllm bench serve --max-concurrency C`` keeps C requests outstanding and reports mean
and median TTFT / TPOT. The simulated counterpart runs a :class:`scheduler.workload.Workload` with
``concurrency = C`` and reads the statistics over the measurement window (the first and last C requests
are warm-up and drain; :func:`scheduler.workload.measurement_window`).
"""

from __future__ import annotations

import numpy as np

from scheduler.workload import measurement_window


def closed_loop_summary(result, concurrency: int) -> dict:
    """Steady-state statistics of a closed-loop run over its measurement window.

    Parameters
    ----------
    result : scheduler.metrics.SimResult
    concurrency : int
        Clients of the closed loop.

    Returns
    -------
    dict
        ``requests`` (in the window), mean and median TTFT / TPOT / E2E (ms; TTFT from the client's
        send), ``requests_per_s`` and ``output_tokens_per_s`` (window requests over the window's span, from
        its first send to its last completion).
    """
    c = result.columns
    ids = measurement_window(len(c["arrival_s"]), concurrency)
    finish = c["finish_s"][ids]
    done = np.isfinite(finish)
    ids = ids[done]
    out = {"concurrency": int(concurrency), "requests": int(len(ids))}
    for key in ("ttft", "tpot", "e2e"):
        values = c[f"{key}_s"][ids] * 1e3
        values = values[np.isfinite(values)]
        out[f"mean_{key}_ms"] = float(values.mean()) if len(values) else float("nan")
        out[f"median_{key}_ms"] = float(np.median(values)) if len(values) else float("nan")
    span = float(c["finish_s"][ids].max() - c["arrival_s"][ids].min()) if len(ids) else 0.0
    out["requests_per_s"] = len(ids) / span if span > 0 else float("nan")
    out["output_tokens_per_s"] = float(c["output_tokens"][ids].sum()) / span if span > 0 else float("nan")
    return out
