"""Windowed runs (scheduler.engine_window): a streamed workload gives the same simulation as the whole workload,
with a bounded window of engine state and a summary from accumulated statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import scheduler.engine_window as engine_window
from predictor import Predictor
from predictor.errors import InputError
from scheduler.engine import EngineConfig, Simulator
from scheduler.metrics_stream import RequestTotals, _hist_quantile
from scheduler.workload import build_workload
from scheduler.workload_stream import stream_workload

MODEL, GPU = "llama-2-7b", "a100-80gb"


@pytest.fixture(scope="module")
def predictor():
    return Predictor.roofline_only()


@pytest.mark.parametrize("kind, kwargs", [
    ("poisson", {"rate": 7.0, "trace": "splitwise_code"}),
    ("gamma", {"rate": 3.0, "cv": 2.5, "prompt_len": 100, "output_dist": "Llama-2-7b-chat-hf"}),
    ("offline", {"prompt_len": 64, "output_len": 9}),
])
@pytest.mark.parametrize("chunk", [1, 333, 5000])
def test_streamed_workload_is_build_workload_in_pieces(kind, kwargs, chunk):
    whole = build_workload(kind, 2000, seed=5, **kwargs)
    pieces = list(stream_workload(kind, 2000, seed=5, **kwargs).chunks(chunk))
    assert len(pieces) == -(-2000 // chunk)
    for got, want in zip(zip(*pieces, strict=True), (whole.arrival_s, whole.prompt_tokens, whole.output_tokens),
                         strict=True):
        assert np.array_equal(np.concatenate(got), want)


@pytest.mark.parametrize("kind, kwargs, field", [
    ("trace", {}, "--workload"),
    ("concurrency", {}, "--workload"),
    ("poisson", {}, "--rate"),
    ("gamma", {"rate": 2.0, "cv": 0.0}, "--cv"),
    ("poisson", {"rate": 2.0, "output_dist": "no-such-model"}, "--output-dist"),
])
def test_stream_workload_rejects_bad_input_naming_the_field(kind, kwargs, field):
    with pytest.raises(InputError, match=f"^{field}"):
        stream_workload(kind, 100, **kwargs)


CONFIGS = {
    "preempting": EngineConfig(max_num_seqs=48, num_blocks=900),
    "kv budget": EngineConfig(max_num_seqs=64, num_blocks=1500, kv_budget_tokens=512),
    "contiguous, no chunking": EngineConfig(max_num_seqs=32, chunked_prefill=False, kv_allocation="contiguous_pow2"),
    "static": EngineConfig(max_num_seqs=32, policy="static"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_windowed_run_is_the_ordinary_run(predictor, monkeypatch, tmp_path, name):
    monkeypatch.setattr(engine_window, "CHUNK", 250)
    kwargs = {"rate": 9.0, "trace": "splitwise_conv", "seed": 2}
    n = 2500
    ordinary = Simulator(predictor, MODEL, GPU, 1, "fp16", CONFIGS[name]).run(build_workload("poisson", n, **kwargs))
    sim = Simulator(predictor, MODEL, GPU, 1, "fp16", CONFIGS[name])
    windowed = sim.run(stream_workload("poisson", n, **kwargs), stream_requests_to=tmp_path / "rows.parquet",
                       slo_ttft_ms=2000.0, slo_tpot_ms=40.0)
    assert len(sim.state.status) < n  # the engine never held every request
    rows = pd.read_parquet(tmp_path / "rows.parquet").sort_values("request_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, ordinary.requests)  # every request, every column, bit for bit
    assert len(windowed.requests) == 0
    want, got = ordinary.summary(2000.0, 40.0), windowed.summary(2000.0, 40.0)
    assert got["meta"].pop("windowed") is True
    assert set(got) == set(want)
    for key in want:
        if key.endswith("_ms") and key != "itl_ms":
            for stat, value in want[key].items():
                assert got[key][stat] == pytest.approx(value, rel=3e-3 if stat != "mean" else 1e-9), (key, stat)
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-12) if isinstance(want[key], float) else got[key] == want[key], key


def test_windowed_run_preempts_and_rejects_like_the_ordinary_run(predictor, monkeypatch, tmp_path):
    monkeypatch.setattr(engine_window, "CHUNK", 100)
    config = EngineConfig(max_num_seqs=64, num_blocks=400, max_model_len=2048)  # some prompts exceed the context
    kwargs = {"rate": 20.0, "trace": "splitwise_code", "seed": 1}
    ordinary = Simulator(predictor, MODEL, GPU, 1, "fp16", config).run(build_workload("poisson", 1200, **kwargs))
    windowed = Simulator(predictor, MODEL, GPU, 1, "fp16", config).run(stream_workload("poisson", 1200, **kwargs),
                                                                        stream_requests_to=tmp_path / "r.parquet")
    summary = ordinary.summary()
    assert summary["preemptions"] > 0 and summary["rejected"] > 0  # the case this test is about
    rows = pd.read_parquet(tmp_path / "r.parquet").sort_values("request_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, ordinary.requests)
    assert windowed.summary()["rejected"] == summary["rejected"]
    assert windowed.totals.reject_reasons == dict(pd.Series(ordinary.requests["reject_reason"][
        ordinary.requests["status"] == "rejected"]).value_counts())


def test_stopped_windowed_run_counts_every_request(predictor, monkeypatch):
    monkeypatch.setattr(engine_window, "CHUNK", 100)
    sim = Simulator(predictor, MODEL, GPU, 1, "fp16", EngineConfig())
    result = sim.run(stream_workload("poisson", 1000, rate=5.0, prompt_len=50, output_len=20),
                     stop=lambda: sim.now > 30.0)
    summary = result.summary()
    assert result.partial and summary["requests"] == 1000 and 0 < summary["finished"] < 1000


def test_windowed_summary_takes_only_the_slo_it_counted(predictor):
    result = Simulator(predictor, MODEL, GPU).run(stream_workload("poisson", 50, rate=2.0, prompt_len=50,
                                                                  output_len=5), slo_ttft_ms=100.0)
    assert 0.0 <= result.summary(100.0)["slo"]["attainment"] <= 1.0
    with pytest.raises(InputError, match="^slo: "):
        result.summary(200.0)


def test_histogram_percentiles_are_within_a_third_of_a_percent():
    rng = np.random.default_rng(0)
    for size in (1, 2, 17, 5000):
        values = rng.lognormal(-3.0, 2.0, size)  # seconds: microseconds to minutes
        totals = RequestTotals()
        totals.add({"status_code": np.full(size, 2), "reject_reason": np.zeros(size, object),
                    "preemptions": np.zeros(size, int), "arrival_s": np.zeros(size), "finish_s": values,
                    "output_tokens": np.full(size, 3), **{f"{m}_s": values for m in ("ttft", "tpot", "e2e", "queue")}})
        for q in (0.5, 0.9, 0.99):
            assert _hist_quantile(totals.counts["ttft"], q) == pytest.approx(np.quantile(values, q), rel=3e-3)
        assert totals.fields()["ttft_ms"]["mean"] == pytest.approx(values.mean() * 1e3, rel=1e-9)


def test_compaction_moves_every_per_request_array():
    from scheduler.engine_state import PER_REQUEST, _State

    state = _State(build_workload("poisson", 7, rate=1.0, prompt_len=3, output_len=2))
    arrays = {k for k, v in vars(state).items() if isinstance(v, np.ndarray) and v.shape[:1] == (7,)}
    assert arrays == set(PER_REQUEST)  # a new per-request array must be added to PER_REQUEST to survive compaction


@pytest.fixture
def cli_roofline(monkeypatch, predictor):
    from inference_sim import common

    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: predictor)


SIMULATE = ["simulate", "--model", MODEL, "--gpu", GPU, "--rate", "8", "--num-requests", "600", "--trace",
            "splitwise_code", "--max-num-seqs", "32", "--slo-ttft-ms", "800", "--json"]


def test_cli_windowed_simulation_matches_the_ordinary_one(capsys, cli_roofline, monkeypatch, tmp_path):
    import json

    from inference_sim import cli

    monkeypatch.setattr(engine_window, "CHUNK", 64)
    assert cli.main(SIMULATE) == 0
    ordinary = json.loads(capsys.readouterr().out)
    assert cli.main([*SIMULATE, "--windowed", "--out", str(tmp_path / "out")]) == 0
    windowed = json.loads(capsys.readouterr().out)
    assert windowed["meta"]["windowed"] is True
    for key in ("requests", "finished", "rejected", "rejected_reasons", "preemptions", "iterations", "batch_size"):
        assert windowed[key] == ordinary[key], key
    assert windowed["slo"]["attainment"] == ordinary["slo"]["attainment"]
    for stat in ("p50", "p90", "p99"):
        assert windowed["ttft_ms"][stat] == pytest.approx(ordinary["ttft_ms"][stat], rel=3e-3)
    assert len(pd.read_parquet(tmp_path / "out" / "requests.parquet")) == 600
    assert (tmp_path / "out" / "latency_cdf.png").stat().st_size > 0


@pytest.mark.parametrize("args, field", [(["--workload", "trace"], "--workload"),
                                          (["--concurrency", "4"], "--concurrency")])
def test_cli_windowed_refuses_what_it_cannot_stream(capsys, cli_roofline, args, field):
    from inference_sim import cli

    assert cli.main(["simulate", "--model", MODEL, "--gpu", GPU, "--rate", "2", "--windowed", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {field}: ")


def test_windowed_result_refuses_to_write_rows_it_does_not_keep(predictor, tmp_path):
    result = Simulator(predictor, MODEL, GPU).run(stream_workload("poisson", 20, rate=2.0, prompt_len=50, output_len=5))
    with pytest.raises(InputError, match="^requests: a windowed run keeps no per-request rows"):
        result.write_requests(tmp_path / "rows.parquet")
    assert not (tmp_path / "rows.parquet").exists()
