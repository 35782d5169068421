"""The lean engine run the planner uses (:meth:`Simulator.timings`) gives exactly the per-request times of a full
run."""

from __future__ import annotations

import numpy as np
import pytest

from predictor import Predictor
from predictor.parallel import ParallelConfig
from scheduler.engine import EngineConfig, Simulator
from scheduler.engine_profiles import EngineProfile
from scheduler.engine_timings import ServeTimings
from scheduler.workload import Workload, build_workload

MODEL, GPU = "llama-2-7b", "a100-80gb"


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load()


def _offline(n: int, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(np.zeros(n), rng.integers(16, 3000, n), rng.integers(1, 600, n))


def _assert_same(timings: ServeTimings, result) -> None:
    c = result.columns
    np.testing.assert_array_equal(timings.status_code, c["status_code"])
    for name in ("first_token_s", "finish_s", "tpot_s"):
        assert np.array_equal(getattr(timings, name), c[name], equal_nan=True), name


CASES = {
    "offline_default": ({}, None, 1, lambda: _offline(150, 0)),
    "poisson_default": ({}, None, 1, lambda: build_workload("poisson", 200, seed=1, rate=6.0, trace="splitwise_conv")),
    "preemption": ({"num_blocks": 300}, None, 1, lambda: _offline(120, 2)),
    "whole_prefill": ({"chunked_prefill": False}, None, 1, lambda: _offline(100, 3)),
    "static": ({"policy": "static", "max_num_seqs": 32}, None, 1, lambda: _offline(80, 4)),
    "kv_budget": ({"kv_budget_tokens": 512, "num_blocks": 400}, None, 1, lambda: _offline(100, 5)),
    "contiguous": ({"kv_allocation": "contiguous", "max_model_len": 4096}, None, 1, lambda: _offline(100, 6)),
    "rejected_too_long": ({"max_model_len": 1024}, None, 1, lambda: _offline(60, 7)),
    "pipeline": ({}, None, ParallelConfig(tp=1, pp=2), lambda: _offline(80, 8)),
    "profile_closed_loop": ({}, "vllm", 1, lambda: build_workload("concurrency", 100, seed=0, concurrency=16,
                                                                    prompt_len=512, output_len=64)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_timings_equal_the_full_runs_columns(predictor, case):
    config, profile, tp, workload = CASES[case]
    prof = (EngineProfile("p", "test", kernel_scale=0.6, roofline_scale=0.4, admission_base_ms=40.0,
                          admission_per_client_ms=0.5) if profile else None)
    sim = Simulator(predictor, MODEL, GPU, tp, "fp16", EngineConfig(**config), profile=prof)
    wl = workload()
    lean = sim.timings(wl)
    full = sim.run(wl, record_iterations=False)
    _assert_same(lean, full)
    # and a full run after a lean one on the same engine is the run of a fresh engine (nothing left swapped)
    fresh = Simulator(predictor, MODEL, GPU, tp, "fp16", EngineConfig(**config), profile=prof).run(wl)
    assert repr(sim.run(wl).summary()) == repr(fresh.summary())  # repr: NaN entries compare equal


def test_rejected_requests_are_flagged_with_the_rejected_code(predictor):
    sim = Simulator(predictor, MODEL, GPU, 1, "fp16", EngineConfig(max_model_len=1024))
    wl = Workload(np.zeros(3), np.array([100, 2000, 100]), np.array([10, 10, 1]))
    t = sim.timings(wl)
    np.testing.assert_array_equal(t.status_code, [2, 3, 2])  # 2000 + 10 tokens exceed the 1,024 context
    assert np.isnan(t.first_token_s[1]) and np.isnan(t.tpot_s[2])  # one output token: no TPOT
