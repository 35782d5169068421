"""Efficiency metrics (issue 11, item 1): MFU, MBU, attained rates, roofline distance and bottleneck, per
iteration, per run (per phase and op group) and per request; in the simulate, predict and roofline commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

import inference_sim.cli as cli
from inference_sim import common
from predictor.analysis import roofline_report
from predictor.efficiency import aggregate_batch
from scheduler.engine import EngineConfig, Simulator
from scheduler.workload import Workload, build_workload

CONF = ("llama-2-7b", "a100-80gb", 1, "fp16")


@pytest.fixture
def shared_cli(monkeypatch, hybrid):
    """The CLI on the session's predictor (its tables are already built)."""
    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: hybrid)


def _random_aggregates(seed: int, n: int = 200) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    chunks = rng.integers(0, 6, n)
    new = np.where(chunks > 0, chunks * rng.integers(1, 2000, n), 0)
    kv = new + chunks * rng.integers(0, 4000, n)
    samples = np.minimum(chunks, rng.integers(0, 6, n))
    dseqs = rng.integers(0, 300, n)
    dctx = dseqs * rng.integers(1, 8000, n)
    keep = (new + dseqs) > 0
    return tuple(a[keep] for a in (chunks, new, kv, samples, dseqs, dctx))


def test_group_times_add_up_to_the_iteration_time_and_scalar_work_matches_the_tables(hybrid):
    bound = hybrid.bind(*CONF)
    args = _random_aggregates(0)
    work = bound.phase_work(*args)
    total = sum(w["time_ms"] for groups in work.values() for w in groups.values())
    expected = np.array([bound.iteration_ms(*(int(a[i]) for a in args)) for i in range(len(args[0]))])
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    flops = sum(w["flops"] for groups in work.values() for w in groups.values())
    nbytes = sum(w["bytes"] for groups in work.values() for w in groups.values())
    roof = sum(w["roofline_ms"] for groups in work.values() for w in groups.values())
    scalar = np.array([bound.work_scalar(*(int(a[i]) for a in args)) for i in range(len(args[0]))])
    np.testing.assert_allclose(scalar[:, 0], flops, rtol=1e-9)
    np.testing.assert_allclose(scalar[:, 1], nbytes, rtol=1e-9)
    np.testing.assert_allclose(scalar[:, 2], roof, rtol=1e-9)


def test_decode_steps_work_is_the_vectorised_twin_of_the_scalar(hybrid):
    bound = hybrid.bind(*CONF)
    contexts = 5000 + 37 * np.arange(50)
    flops, nbytes, roof = bound.decode_steps_work(37, contexts)
    scalar = np.array([bound.work_scalar(0, 0, 0, 0, 37, int(c)) for c in contexts])
    np.testing.assert_allclose(np.c_[flops, nbytes, roof], scalar, rtol=1e-9)


@pytest.mark.parametrize("args, phase, bound_by", [
    ((0, 0, 0, 0, 2, 2000), "decode", "memory"),         # small-batch decode streams the weights
    ((1, 8192, 8192, 1, 0, 0), "prefill", "compute"),    # a long prompt is GEMM-bound
])
def test_bottleneck_and_utilisations_are_physical(hybrid, args, phase, bound_by):
    eff = hybrid.bind(*CONF).efficiency(*args)
    m = eff[phase]
    assert m["bottleneck"] == bound_by
    assert 0 < m["mfu"] < 1 and 0 < m["mbu"] < 1
    assert m["roofline_distance"] >= 1.0  # the hybrid predictor is slower than the ideal on this GPU
    other = "decode" if phase == "prefill" else "prefill"
    assert other not in eff


def test_at_the_roofline_no_op_kind_exceeds_the_peak_or_the_bandwidth():
    for batch, length in ((1, 128), (64, 4096), (8, 1024)):
        report = roofline_report("llama-2-70b", "h100-sxm", tp=4, batch_size=batch, input_len=length)
        for phase in ("prefill", "decode"):
            eff = report[phase]["efficiency"]
            for m in [eff, *eff["op_kinds"].values()]:
                assert m["mfu"] <= 1 + 1e-9 and m["mbu"] <= 1 + 1e-9
            # every op is at its bound, so the iteration saturates one resource on average
            assert max(eff["compute_share"] + eff["network_share"], eff["memory_share"]) > 0.5


def _run(predictor, wl, **config):
    return Simulator(predictor, *CONF, config=EngineConfig(**config)).run(wl)


def test_run_efficiency_is_the_same_fast_forwarded_or_stepped(hybrid):
    wl = build_workload("poisson", 300, rate=3.0, seed=4)
    fast, step = _run(hybrid, wl), _run(hybrid, wl, fast_forward=False)
    a, b = fast.summary()["efficiency"], step.summary()["efficiency"]
    for key in ("time_ms", "flops", "bytes", "roofline_ms", "mfu", "mbu"):
        assert a["overall"][key] == pytest.approx(b["overall"][key], rel=1e-9)
        assert a["decode"][key] == pytest.approx(b["decode"][key], rel=1e-9)
    for col in ("mfu", "mbu", "roofline_distance"):
        np.testing.assert_allclose(fast.requests[col], step.requests[col], rtol=1e-9)


def test_run_totals_match_the_iteration_log_and_requests_see_their_iterations(hybrid):
    wl = build_workload("poisson", 200, rate=2.0, seed=1)
    result = _run(hybrid, wl)
    eff = result.summary()["efficiency"]
    busy_ms = result.iterations["duration_s"].sum() * 1e3
    assert eff["overall"]["time_ms"] == pytest.approx(busy_ms, rel=1e-9)
    assert eff["prefill"]["time_ms"] + eff["decode"]["time_ms"] == pytest.approx(busy_ms, rel=1e-9)
    assert eff["prefill"]["bottleneck"] == "compute" and eff["decode"]["bottleneck"] == "memory"
    assert eff["prefill"]["mfu"] > eff["decode"]["mfu"] and eff["decode"]["mbu"] > eff["prefill"]["mbu"]
    req = result.requests[result.requests["status"] == "finished"]
    assert result.requests.loc[result.requests["status"] == "rejected", "mfu"].isna().all()
    assert req["mfu"].between(0, 1).all() and req["mbu"].between(0, 1).all()
    assert (req["roofline_distance"] >= 1).all()
    groups = eff["groups"]["decode"]
    assert {"gemm", "attn_decode"} <= set(groups)


def test_a_lone_request_sees_the_whole_run(hybrid):
    wl = Workload(arrival_s=np.zeros(1), prompt_tokens=np.array([700]), output_tokens=np.array([40]))
    result = _run(hybrid, wl)
    eff = result.summary()["efficiency"]["overall"]
    r = result.requests.iloc[0]
    assert r["mfu"] == pytest.approx(eff["mfu"], rel=1e-9)
    assert r["mbu"] == pytest.approx(eff["mbu"], rel=1e-9)
    assert r["roofline_distance"] == pytest.approx(eff["roofline_distance"], rel=1e-9)


def test_the_contention_hook_stretches_iterations_and_lowers_utilisation(hybrid):
    wl = build_workload("offline", 40, prompt_len=300, output_len=50, seed=0)
    base = Simulator(hybrid, *CONF)
    slow = Simulator(hybrid, *CONF)
    calls = []

    def stretch(engine, start_s, dt_ms, flops, nbytes):
        calls.append((flops, nbytes))
        return 2.0 * dt_ms

    slow.stretch = stretch
    a, b = base.run(wl).summary(), slow.run(wl).summary()
    assert calls and all(f > 0 and n > 0 for f, n in calls)
    assert b["makespan_s"] == pytest.approx(2 * a["makespan_s"], rel=1e-6)
    assert b["efficiency"]["overall"]["mbu"] == pytest.approx(a["efficiency"]["overall"]["mbu"] / 2, rel=1e-6)


def test_aggregate_batch_matches_the_mean_chunk_convention():
    b = aggregate_batch([2], [300], [1300], [1], [4], [4000])
    assert b.prefill_attention_pairs[0] == pytest.approx(2 * 150 * (500 + 75))
    assert b.sample_tokens[0] == 5 and b.tokens[0] == 304


@pytest.mark.parametrize("args, key", [
    (["simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "poisson", "--rate", "2",
      "--num-requests", "50", "--json"], lambda d: d["efficiency"]["decode"]["mbu"]),
    (["predict", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--prefill", "512:0", "--decode", "100,200",
      "--json"], lambda d: d["efficiency"]["prefill"]["mfu"]),
    (["roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--json"],
     lambda d: d["decode"]["efficiency"]["mbu"]),
])
def test_commands_report_efficiency(capsys, shared_cli, args, key):
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    value = key(json.loads(out))
    assert 0 < value <= 1


def test_simulate_prints_efficiency_per_phase(capsys, shared_cli):
    code = cli.main(["simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "offline",
                     "--num-requests", "20", "--prompt-len", "500", "--output-len", "20"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "decode" in out and "MBU" in out and "bound by memory" in out


def test_time_by_group_adds_up_and_points_at_the_collectives_on_a_pcie_tp_group(hybrid):
    eff = hybrid.bind("llama-2-7b", "l40s", 4, "fp16").efficiency(1, 2048, 2048, 1, 0, 0)
    shares = eff["prefill"]["time_by_group"]
    assert sum(shares.values()) == pytest.approx(1.0, rel=1e-9)
    assert max(shares, key=shares.get) == "collective"
    assert eff["prefill"]["bottleneck"] == "network"
    mixed = hybrid.bind(*CONF).efficiency([1, 0], [500, 0], [500, 0], [1, 0], [0, 8], [0, 8000])
    for phase in ("prefill", "decode"):
        assert sum(mixed[phase]["time_by_group"].values()) == pytest.approx(1.0, rel=1e-9)


def test_an_engine_profile_s_step_overhead_is_the_report_s_overhead(hybrid):
    """Under an engine profile a step is its scaled kernels plus the profile's overhead (base + per sequence):
    the report's overhead is exactly that, its kernel time the rest (it was once the predictor's unscaled kernel
    time, which hid the profile's overhead whenever its kernels ran faster than the predictor's)."""
    from predictor.overhead import OverheadModel
    from scheduler.engine_profiles import EngineProfile

    profile = EngineProfile("test", "t", kernel_scale=0.5, roofline_scale=0.3,
                            overhead=OverheadModel(base_ms=2.0, per_seq_ms=0.01, multi_gpu_ms=0.0))
    result = Simulator(hybrid, *CONF, config=EngineConfig(), profile=profile).run(
        build_workload("poisson", 100, rate=4.0, seed=0, trace="splitwise_conv"))
    steps = result.iterations
    overall = result.efficiency["overall"]
    assert overall["time_ms"] == pytest.approx(steps["duration_s"].sum() * 1e3, rel=1e-9)
    expected_ms = (2.0 + 0.01 * (steps["decode_seqs"] + steps["prefill_seqs"])).sum()
    assert overall["time_ms"] - overall["kernel_ms"] == pytest.approx(expected_ms, rel=1e-9)
    assert overall["overhead_share"] == pytest.approx(expected_ms / overall["time_ms"], rel=1e-9)
