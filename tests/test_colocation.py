"""Models sharing a GPU: the contention model's invariants, memory partitions, and the planner's co-location option.

The roofline-only predictor keeps the arithmetic exact and the module fast (a few seconds).
"""

from __future__ import annotations

import numpy as np
import pytest

from predictor.errors import InputError
from predictor.gpus import get_gpu
from predictor.models import get_model
from predictor.precision import parse_dtype
from scheduler.app import Application
from scheduler.colocation import ColocatedSimulator, Contention, max_attained_rates, partition_memory
from scheduler.engine import EngineConfig, Simulator
from scheduler.planner import Planner
from scheduler.workload import Workload

A100 = "a100-80gb"
TOL = 1e-9


def offline(n: int, prompt: int, output: int, name: str = "w") -> Workload:
    return Workload(np.zeros(n), np.full(n, prompt), np.full(n, output), name=name)


def poisson(n: int, rate: float, prompt: int, output: int, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(np.cumsum(rng.exponential(1 / rate, n)), np.full(n, prompt), np.full(n, output), name="p")


def run_recorded(predictor, models, workloads, contention="shared"):
    """Run co-located, also recording every iteration (start, duration, FLOPs, bytes) through the stretch hook."""
    sim = ColocatedSimulator(predictor, models, A100, contention=contention)
    iterations = []
    for k, engine in enumerate(sim.sims):
        engine_iterate = engine._iterate

        def spy(state, log, record, decodes, prefills, engine=engine, inner=engine_iterate, k=k):
            hook = engine.stretch

            def recording(eng, start, dt, flops, nbytes):
                actual = hook(eng, start, dt, flops, nbytes)
                iterations.append((k, start, actual / 1e3, dt / 1e3, flops, nbytes))
                return actual

            engine.stretch = recording
            try:
                return inner(state, log, record, decodes, prefills)
            finally:
                engine.stretch = hook

        engine._iterate = spy
    out = sim.run(workloads, record_segments=True)
    return sim, out, np.array(iterations)


@pytest.fixture(scope="module")
def shared_run(roofline):
    """llama-2-7b (Poisson load) and phi-2 (offline batch) on one A100-80GB."""
    return run_recorded(roofline, ["llama-2-7b", "phi-2"],
                        [poisson(120, 8.0, 300, 60, 0), offline(80, 200, 40)])


# --- the physical invariants ------------------------------------------------------------------------------
def test_colocated_models_never_exceed_bandwidth_or_peak(shared_run):
    sim, out, it = shared_run
    peak_flops, bw = out.peaks
    assert len(it) > 100 and set(it[:, 0]) == {0, 1}
    # at every instant (rate profiles of the contention model)
    bytes_rate, flops_rate = max_attained_rates(out.segments)
    assert bytes_rate <= bw * (1 + TOL) and flops_rate <= peak_flops * (1 + TOL)
    # over the whole run and over sliding windows, from the iterations the engines actually ran
    end = float((it[:, 1] + it[:, 2]).max())
    assert it[:, 5].sum() / end <= bw and it[:, 4].sum() / end <= peak_flops
    for window_s in (0.005, 0.05, 0.5):
        b, f = max_attained_rates(out.segments, window_s)
        assert b <= bw * (1 + TOL) and f <= peak_flops * (1 + TOL)
    # the segments carry exactly each iteration's bytes and FLOPs
    seg_bytes = sum((s.end_s - s.start_s) * s.bytes_per_s for s in out.segments)
    assert seg_bytes == pytest.approx(it[:, 5].sum(), rel=1e-9)


def test_no_contention_mode_can_exceed_the_gpu(roofline):
    _, out, _ = run_recorded(roofline, ["llama-2-7b", "llama-2-7b"], [offline(64, 300, 50), offline(64, 300, 50)],
                             contention="none")
    assert max_attained_rates(out.segments)[0] > out.peaks[1]  # why "none" is for comparison only


def test_memory_partitions_sum_within_gpu_memory(shared_run):
    sim, out, _ = shared_run
    gpu_bytes = get_gpu(A100).memory_bytes
    used = 0.0
    for engine, plan in zip(sim.sims, out.memory, strict=True):
        assert engine.num_blocks == plan.num_blocks
        used += (plan.weights_bytes + plan.activation_bytes + plan.overhead_bytes
                 + engine.num_blocks * engine.config.block_size * engine.kv_bytes_per_token)
    assert used <= 0.9 * gpu_bytes


def test_models_that_do_not_fit_together_raise_one_line_input_error(roofline):
    with pytest.raises(InputError) as excinfo:
        ColocatedSimulator(roofline, ["llama-2-13b", "llama-2-13b", "llama-2-13b"], A100)
    assert "do not fit together" in str(excinfo.value) and "\n" not in str(excinfo.value)
    with pytest.raises(InputError, match="contention"):
        ColocatedSimulator(roofline, ["phi-2"], A100, contention="bogus")


def test_kv_shares_split_the_free_memory():
    fp16 = parse_dtype("fp16")
    models = [get_model("llama-2-7b"), get_model("llama-2-7b")]
    even = partition_memory(models, get_gpu(A100), 1, fp16)
    skew = partition_memory(models, get_gpu(A100), 1, fp16, kv_shares=[0.75, 0.25])
    assert even[0].num_blocks == even[1].num_blocks
    assert skew[0].num_blocks == pytest.approx(3 * skew[1].num_blocks, rel=0.01)
    assert skew[0].num_blocks + skew[1].num_blocks <= even[0].num_blocks * 2 + 1


# --- the contention model by hand ------------------------------------------------------------------------
def test_shared_fluid_model_by_hand():
    # capacities 1 byte/s and 1 FLOP/s: A alone needs 0.6 B/s for 10 s; B, started at 5 s, needs 0.6 B/s
    # for 10 s: it gets 0.4 until A ends (speed 2/3 for 5 s: 10/3 s of its work), then runs at full speed
    c = Contention("shared", 1.0, 1.0, record=True)
    assert c.duration_ms(0, 0.0, 10_000, 0.0, 6.0) == pytest.approx(10_000)
    assert c.duration_ms(1, 5.0, 10_000, 0.0, 6.0) == pytest.approx((5 + 10 - 10 / 3) * 1e3)
    assert max_attained_rates(c.segments_)[0] == pytest.approx(1.0)


def test_memory_bound_beside_compute_bound_does_not_stretch():
    c = Contention("shared", 1.0, 1.0)
    c.duration_ms(0, 0.0, 10_000, 1.0, 7.0)    # decode-like: MBU 0.7, MFU 0.1
    assert c.duration_ms(1, 0.0, 10_000, 8.0, 2.0) == pytest.approx(10_000)  # prefill-like: MFU 0.8, MBU 0.2
    c2 = Contention("shared", 1.0, 1.0)
    c2.duration_ms(0, 0.0, 10_000, 1.0, 7.0)
    assert c2.duration_ms(1, 0.0, 10_000, 1.0, 7.0) > 10_000  # two memory-bound: Σ MBU = 1.4 > 1


def test_interleaved_durations_add():
    c = Contention("interleaved", 1.0, 1.0)
    assert c.duration_ms(0, 0.0, 10_000, 0.0, 1.0) == pytest.approx(10_000)
    assert c.duration_ms(1, 2.0, 5_000, 0.0, 1.0) == pytest.approx(8_000 + 5_000)


# --- end to end ----------------------------------------------------------------------------------------
def test_colocation_is_slower_per_model_than_alone_and_modes_are_ordered(roofline):
    workloads = [offline(64, 300, 80), offline(64, 300, 80)]
    spans = {}
    for mode in ("none", "shared", "interleaved"):
        out = ColocatedSimulator(roofline, ["llama-2-7b", "llama-2-7b"], A100, contention=mode).run(workloads)
        spans[mode] = out.makespan_s
    same_memory = ColocatedSimulator(roofline, ["llama-2-7b", "llama-2-7b"], A100).memory[0].num_blocks
    alone = Simulator(roofline, "llama-2-7b", A100, config=EngineConfig(num_blocks=same_memory)).run(
        workloads[0]).summary()["makespan_s"]
    assert spans["none"] == pytest.approx(alone, rel=1e-9)      # no contention: exactly as alone
    assert alone < spans["shared"] <= spans["interleaved"] + 1e-9
    assert spans["interleaved"] == pytest.approx(2 * alone, rel=0.05)  # strictly alternating: durations add


# --- planner ---------------------------------------------------------------------------------------------
def two_llms_one_gpu(colocation: bool) -> dict:
    return {"name": "coloc", "topology": "ensemble", "node": {"gpu": A100, "count": 1},
            "prompts": {"fixed": 200, "count": 40},
            "models": [{"name": "a", "model": "llama-2-7b", "output_lengths": {"fixed": 80}},
                       {"name": "b", "model": "phi-2", "output_lengths": {"fixed": 60}}],
            "samples": 1, "seed": 0, "search": {"colocation": colocation, "time_budget_s": 30}}


def test_planner_without_colocation_never_shares_gpus(roofline):
    result = Planner(Application.from_dict(two_llms_one_gpu(False)), roofline).run(baselines=False)
    for stage in result.chosen.plan.stages:
        assert all(not p.group for p in stage.placements) and len(stage.placements) == 1


def test_planner_colocation_option_shares_a_gpu_and_wins_when_models_outnumber_gpus(roofline):
    off = Planner(Application.from_dict(two_llms_one_gpu(False)), roofline).run(baselines=False)
    on = Planner(Application.from_dict(two_llms_one_gpu(True)), roofline).run(baselines=False)
    first = on.chosen.plan.stages[0].placements
    assert {p.llm for p in first} == {"a", "b"} and all(p.group == ("a", "b") and p.gpus == (0,) for p in first)
    assert on.chosen.mean_s < off.chosen.mean_s
    # every request of both LLMs finishes
    assert all(np.isfinite(v).all() for v in on.execution.finish_s.values())
