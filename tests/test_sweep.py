"""Capacity planning (scheduler.sweep and ``inference-sim sweep``): spec validation, skipped points, the Pareto
front, the cheapest point meeting the SLO, the rate bisection, identical results locally and on a 2-worker Dask
LocalCluster, Ctrl-C partial results, and the command line.

Sweeps here are tiny (tens of requests per point, llama-2-7b on GPUs whose iteration tables the other test
modules build too); one LocalCluster serves the whole module.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from pandas.testing import assert_frame_equal

import inference_sim.cli as cli
import scheduler.sweep as sw
from predictor.errors import InputError
from scheduler.sweep import (Context, bisect_max_rate, cheapest_meeting_slo, load_sweep, pareto_front, run_sweep,
                             simulate_point, sweep_from_dict)

SMALL = {  # 8 points: 2 GPUs × 2 precisions × 2 rates
    "name": "small", "model": "llama-2-7b",
    "workload": {"kind": "poisson", "num_requests": 60, "trace": "splitwise_conv", "seed": 3},
    "slo": {"ttft_ms": 500, "tpot_ms": 50, "attainment": 0.9},
    "grid": {"gpu": ["a100-80gb", "h100-sxm"], "tp": [1], "dtype": ["fp16", "w8a16"], "max_num_seqs": [64],
             "max_num_batched_tokens": [512], "rate": [2.0, 8.0]},
}


def spec(**changes) -> dict:
    """SMALL with nested changes: ``spec(grid={"tp": [2]})`` replaces only grid.tp."""
    out = copy.deepcopy(SMALL)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def dask_client():
    """One 2-worker LocalCluster (processes, 1 thread each, 127.0.0.1, HTTP on a free port) for the module."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=":0", silence_logs=logging.ERROR)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def local_result():
    return run_sweep(sweep_from_dict(spec()), n_jobs=1)


# --- spec validation ----------------------------------------------------------------------------------------
BAD_SPECS = [
    (spec(grid={"tp": [0]}), "grid.tp.0"),
    (spec(grid={"tp": ["two"]}), "grid.tp.0"),
    (spec(grid={"tp": [1, 1]}), "repeated"),
    (spec(grid={"gpu": ["h10"]}), "did you mean"),
    (spec(grid={"gpu": []}), "grid.gpu"),
    (spec(grid={"rate": [-1.0]}), "grid.rate.0"),
    (spec(grid={"rate": [float("nan")]}), "grid.rate.0"),
    (spec(grid={"dtype": ["fp7"]}), "grid.dtype"),
    (spec(grid={"max_num_seqs": [0]}), "grid.max_num_seqs.0"),
    (spec(grid={"colour": ["red"]}), "grid.colour"),
    (spec(model="llama-2-7"), "did you mean llama-2-7b"),
    (spec(slo={"ttft_ms": None, "tpot_ms": None}), "give ttft_ms, tpot_ms or both"),
    (spec(slo={"attainment": 1.5}), "slo.attainment"),
    (spec(workload={"kind": "offline"}), "only for poisson or gamma"),
    (spec(workload={"kind": "burst"}), "workload.kind"),
    (spec(workload={"trace": "no_such_trace.csv"}), "neither a shipped trace"),
    (spec(prices="no_such_prices.yaml"), "does not exist"),
    (spec(predictor="magic"), "predictor"),
    ({"model": "llama-2-7b"}, "workload"),
    (["not", "a", "mapping"], "expected a mapping"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_SPECS)
def test_bad_spec_is_one_line_input_error(raw, message):
    with pytest.raises(InputError) as err:
        sweep_from_dict(raw, source="sweep.yaml")
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("sweep.yaml")


def test_missing_or_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_sweep(bad)
    prices = tmp_path / "prices.yaml"
    prices.write_text("prices: {a100-80gb: 3.0}\n")  # no price for h100-sxm
    with pytest.raises(InputError, match="no price for GPU 'h100-sxm'"):
        sweep_from_dict(spec(prices=str(prices)))
    prices.write_text("prices: {a100-80gb: -3.0, h100-sxm: 7}\n")
    with pytest.raises(InputError, match="positive number"):
        sweep_from_dict(spec(prices=str(prices)))


def test_relative_paths_resolve_against_the_spec_file(tmp_path):
    (tmp_path / "p.yaml").write_text("prices: {a100: 1.5, h100: 2.5}\n")  # aliases are fine
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec(prices="p.yaml")))
    sweep = load_sweep(tmp_path / "s.yaml")
    assert sweep.prices == {"a100-80gb": 1.5, "h100-sxm": 2.5}
    assert len(sweep.points()) == 8


def test_shipped_example_and_price_table():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sweep = load_sweep(root / "examples" / "sweep.yaml")
    assert len(sweep.points()) >= 200
    prices = sw.load_prices(root / "data" / "gpu_prices.yaml")
    from predictor.gpus import catalogue

    assert set(prices) == set(catalogue())  # every catalogue GPU has an (indicative) price
    assert "indicative list prices" in (root / "data" / "gpu_prices.yaml").read_text().lower()


# --- skipped points -----------------------------------------------------------------------------------------
def test_points_that_cannot_run_are_skipped_with_a_reason():
    raw = spec(model="llama-2-70b", grid={"gpu": ["a100-80gb"], "tp": [1, 3, 4], "dtype": ["fp16"], "rate": [1.0]},
               workload={"num_requests": 20})
    result = run_sweep(sweep_from_dict(raw))
    t = result.table.set_index("tp")
    assert t.loc[1, "status"] == "skipped" and "does not fit" in t.loc[1, "reason"]
    assert t.loc[3, "status"] == "skipped" and "does not divide" in t.loc[3, "reason"]
    assert t.loc[4, "status"] == "ok" and t.loc[4, "reason"] == "" and t.loc[4, "finished"] == 20
    assert not t.loc[1, "meets_slo"] and math.isnan(t.loc[1, "ttft_p90_ms"])
    assert t.loc[4, "gpus"] == 4 and t.loc[4, "cost_usd_per_hour"] == pytest.approx(4 * result.sweep.prices["a100-80gb"])
    summary = result.summary()
    assert summary["skipped"] == 2 and summary["simulated"] == 1 and len(summary["skipped_reasons"]) == 2


def test_parallel_layout_axes_for_an_moe_model():
    raw = spec(model="qwen3-30b-a3b", grid={"gpu": ["h100-sxm"], "tp": [2], "ep": [1, 2, 3], "dp_attention": [1, 2],
                                            "dtype": ["fp16"], "rate": [1.0]},
               workload={"num_requests": 10})
    result = run_sweep(sweep_from_dict(raw))
    t = result.table.set_index(["ep", "dp_attention"])
    assert t.loc[(2, 2), "status"] == "ok" and t.loc[(2, 2), "gpus"] == 4  # tp 2 × 2 attention-DP replicas
    assert t.loc[(2, 1), "status"] == "ok" and t.loc[(2, 1), "gpus"] == 2
    assert t.loc[(3, 1), "status"] == "skipped" and "--ep" not in t.loc[(3, 1), "reason"] and "3" in t.loc[(3, 1), "reason"]
    assert t.loc[(2, 2), "cost_usd_per_hour"] == pytest.approx(4 * result.sweep.prices["h100-sxm"])


# --- Pareto front and cheapest ------------------------------------------------------------------------------
def test_pareto_front_on_a_hand_made_table():
    cost = [1.0, 2.0, 3.0, 2.0, 4.0, 1.0, 5.0, 0.5, 4.0]
    lat = [10.0, 5.0, 5.0, 6.0, 1.0, 10.0, np.nan, np.nan, 1.0]
    # 0 and 5 are duplicates (both kept); 1 beats 2 (cheaper, same latency) and 3 (same cost, faster);
    # 4 and 8 tie at the fastest; NaN rows are never on the front
    assert pareto_front(cost, lat).tolist() == [True, True, False, False, True, True, False, False, True]
    rng = np.random.default_rng(0)
    c, l = rng.integers(0, 6, 200).astype(float), rng.integers(0, 6, 200).astype(float)
    brute = [not any(c[j] <= c[i] and l[j] <= l[i] and (c[j] < c[i] or l[j] < l[i]) for j in range(200))
             for i in range(200)]
    assert pareto_front(c, l).tolist() == brute


def test_cheapest_meeting_slo_on_a_hand_made_table():
    table = pd.DataFrame({
        "status": ["ok", "ok", "ok", "skipped", "ok", "ok"],
        "meets_slo": [False, True, True, False, True, True],
        "cost_usd_per_million_output_tokens": [0.1, 0.5, 0.3, np.nan, 0.3, 0.3],
        "ttft_p90_ms": [50.0, 40.0, 90.0, np.nan, 80.0, 80.0],
        "gpus": [1, 1, 2, 1, 2, 1],
    }, index=[10, 11, 12, 13, 14, 15])
    # 10 is cheapest but misses the SLO; 12, 14 and 15 tie on cost: lowest latency, then fewer GPUs
    assert cheapest_meeting_slo(table) == 15
    assert cheapest_meeting_slo(table[table["meets_slo"] == False]) is None  # noqa: E712


def test_sweep_table_marks_front_and_cheapest(local_result):
    t = local_result.table
    assert len(t) == 8 and (t["status"] == "ok").all() and not t["partial"].any()
    ok = t[t["meets_slo"]]
    assert len(ok), "the small SLO should be met somewhere"
    best = t[t["cheapest"]]
    assert len(best) == 1
    assert best["cost_usd_per_million_output_tokens"].iloc[0] == ok["cost_usd_per_million_output_tokens"].min()
    assert t["pareto"].tolist() == pareto_front(t["cost_usd_per_million_output_tokens"], t["ttft_p90_ms"]).tolist()
    # cost per million tokens from price, GPUs and throughput
    row = t.iloc[0]
    assert row["cost_usd_per_million_output_tokens"] == pytest.approx(
        row["cost_usd_per_hour"] / (row["output_tokens_per_s"] * 3600) * 1e6)
    assert ((t["slo_attainment"] >= 0.9) == t["meets_slo"]).all()
    assert list(t.columns) == sw.GRID_COLUMNS


# --- local vs Dask ------------------------------------------------------------------------------------------
def test_identical_results_locally_and_on_a_local_cluster(local_result, dask_client):
    sweep = sweep_from_dict(spec())
    on_dask = run_sweep(sweep, dask=dask_client)
    assert "dask" in on_dask.backend
    assert_frame_equal(local_result.table, on_dask.table, check_exact=True)
    two_procs = run_sweep(sweep, n_jobs=2)
    assert_frame_equal(local_result.table, two_procs.table, check_exact=True)


def test_search_identical_on_dask(dask_client):
    raw = spec(grid={"gpu": ["a100-80gb"], "dtype": ["fp16", "w8a16"]}, workload={"num_requests": 40},
               search={"rel_tol": 0.2, "max_steps": 4})
    sweep = sweep_from_dict(raw)
    local = run_sweep(sweep, search=True)
    assert_frame_equal(local.table, run_sweep(sweep, search=True, dask=dask_client).table, check_exact=True)
    assert list(local.table.columns) == sw.SEARCH_COLUMNS


# --- bisection ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.37, 3.7, 55.0])
def test_bisection_finds_a_known_threshold(threshold):
    calls = []

    def meets(rate):
        calls.append(rate)
        return rate <= threshold

    found = bisect_max_rate(meets, 0.1, 10.0, rel_tol=0.01, max_steps=40)
    assert found.rate <= threshold < found.upper
    assert found.upper / found.rate - 1 <= 0.01
    assert found.steps == len(calls)
    assert all(ok == (r <= threshold) for r, ok in found.evaluations)


def test_bisection_edge_cases():
    none = bisect_max_rate(lambda r: False, 1.0, 8.0)
    assert none.rate == 0.0 and none.steps == 1
    unbounded = bisect_max_rate(lambda r: True, 1.0, 8.0, max_expand=2)
    assert unbounded.rate == 32.0 and unbounded.upper is None
    capped = bisect_max_rate(lambda r: r <= 5.0, 1.0, 8.0, rel_tol=1e-9, max_steps=3)
    assert capped.steps == 2 + 3 and capped.rate <= 5.0 < capped.upper
    with pytest.raises(InputError):
        bisect_max_rate(lambda r: True, 2.0, 1.0)


def test_search_on_a_tiny_real_configuration():
    raw = spec(grid={"gpu": ["l4"], "dtype": ["fp16"], "max_num_batched_tokens": [2048]},
               workload={"num_requests": 200}, slo={"ttft_ms": 1000, "tpot_ms": 100},
               search={"rel_tol": 0.05, "max_steps": 12})
    sweep = sweep_from_dict(raw)
    result = run_sweep(sweep, search=True)
    row = result.table.iloc[0]
    assert row["status"] == "ok" and row["bracketed"] and row["cheapest"]
    assert row["upper_rate_rps"] / row["max_rate_rps"] - 1 <= 0.05 + 1e-12
    assert row["cost_usd_per_request"] == pytest.approx(row["cost_usd_per_hour"] / (3600 * row["max_rate_rps"]))
    ctx = Context.of(sweep)
    config = sweep.configurations()[0]
    at = simulate_point(ctx, {**config, "rate": row["max_rate_rps"]})
    assert at["meets_slo"] and at["slo_attainment"] == row["slo_attainment"]
    assert not simulate_point(ctx, {**config, "rate": 1.2 * row["max_rate_rps"]})["meets_slo"]
    assert not simulate_point(ctx, {**config, "rate": row["upper_rate_rps"]})["meets_slo"]


def test_search_needs_timed_arrivals():
    with pytest.raises(InputError, match="--search"):
        run_sweep(sweep_from_dict(spec(workload={"kind": "offline"}, grid={"rate": None})), search=True)
    with pytest.raises(InputError, match="needs rates"):
        run_sweep(sweep_from_dict(spec(grid={"rate": None})))


# --- interruption -------------------------------------------------------------------------------------------
def test_interrupt_keeps_finished_points_marked_partial(tmp_path):
    seen = []

    def progress(done, total):
        seen.append(done)
        if done >= 3:
            raise KeyboardInterrupt

    result = run_sweep(sweep_from_dict(spec()), progress=progress)
    assert result.partial and len(result.table) == 3 and result.table["partial"].all()
    files = result.write(tmp_path)
    assert json.loads(files["summary"].read_text())["partial"] is True
    assert pd.read_parquet(files["parquet"])["partial"].all()


# --- command line -------------------------------------------------------------------------------------------
def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(spec()))
    return path


def test_cli_json_outputs(capsys, spec_file, tmp_path, local_result):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "sweep", spec_file, "--out", out_dir, "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert {"name", "mode", "points", "simulated", "skipped", "meeting_slo", "partial", "backend", "wall_s", "slo",
            "pareto_metric", "cost_metric", "cheapest", "cheapest_per_rate", "pareto", "files",
            "skipped_reasons"} <= set(payload)
    assert payload["mode"] == "grid" and payload["points"] == 8 and payload["partial"] is False
    assert {"gpu", "tp", "dtype", "max_num_seqs", "chunk", "rate", "cost_usd_per_hour",
            "cost_usd_per_million_output_tokens", "ttft_p90_ms", "meets_slo"} <= set(payload["cheapest"])
    table = pd.read_parquet(out_dir / "results.parquet")
    assert_frame_equal(table, local_result.table, check_exact=True)
    csv = pd.read_csv(out_dir / "results.csv", keep_default_na=False, na_values=[""])
    assert np.allclose(csv["ttft_p90_ms"], table["ttft_p90_ms"])
    assert (out_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out_dir / "summary.json").read_text())["cheapest"] == payload["cheapest"]


def test_cli_search_and_table(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec(grid={"gpu": ["h100-sxm"], "dtype": ["fp16"]}, workload={"num_requests": 30},
                                        search={"rel_tol": 0.25, "max_steps": 3})))
    code, out, err = run_cli(capsys, "sweep", path, "--search", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["mode"] == "search" and payload["configurations"] == 1 and payload["cheapest"]["max_rate_rps"] > 0
    assert (tmp_path / "o" / "search.parquet").exists() and (tmp_path / "o" / "search.png").exists()
    code, out, err = run_cli(capsys, "sweep", path, "--search", "--out", tmp_path / "o")
    assert code == 0 and "Cheapest per unit of sustained load" in out


def test_cli_interrupt_writes_partial_to_partial_folder_and_exits_130(capsys, spec_file, tmp_path, monkeypatch):
    calls = []
    real = sw._grid_task

    def flaky(ctx, index, point):
        calls.append(index)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(ctx, index, point)

    monkeypatch.setattr(sw, "_grid_task", flaky)
    code, out, err = run_cli(capsys, "sweep", spec_file, "--out", tmp_path / "o", "--json")
    assert code == 130
    assert "interrupted" in err and json.loads(out)["partial"] is True
    table = pd.read_parquet(tmp_path / "o" / "partial" / "results.parquet")
    assert len(table) == 3 and table["partial"].all()
    assert not (tmp_path / "o" / "results.parquet").exists()  # the folder itself only ever holds complete runs


BAD_CLI = [
    (["sweep", "missing.yaml"], "does not exist"),
    (["sweep", "SPEC", "--dask", "udp://nowhere"], "--dask"),
    (["sweep", "SPEC", "--n-jobs", "0"], "--n-jobs"),
    (["sweep", "SPEC", "--dask", "tcp://127.0.0.1:1"], "cannot connect"),
]


@pytest.mark.parametrize(("args", "message"), BAD_CLI)
def test_cli_bad_input_one_line_exit_2(capsys, spec_file, tmp_path, args, message):
    args = [str(spec_file) if a == "SPEC" else a for a in args]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "o")
    assert code == 2, err
    assert message in err and err.count("\n") == 1


def test_cli_bad_spec_exit_2(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec(grid={"rate": [-2]})))
    code, out, err = run_cli(capsys, "sweep", path)
    assert code == 2 and "grid.rate.0" in err and err.count("\n") == 1


def test_cli_dask_local_matches_local(capsys, spec_file, tmp_path, local_result):
    code, out, err = run_cli(capsys, "sweep", spec_file, "--dask", "local", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert "LocalCluster (2 workers" in payload["backend"]
    assert_frame_equal(pd.read_parquet(tmp_path / "o" / "results.parquet"), local_result.table, check_exact=True)


def test_a_grid_without_dtype_sweeps_the_checkpoint_s_own_precision():
    """As the CLI's default: DeepSeek-V3 ships in fp8 (predictor.checkpoints); an unquantized model stays fp16."""
    from scheduler.sweep_spec import sweep_from_dict

    for model, dtype in (("deepseek-ai/DeepSeek-V3", "fp8"), ("llama-3-8b", "fp16")):
        sweep = sweep_from_dict({"model": model, "grid": {"gpu": ["h200"], "tp": [8]}, "slo": {"ttft_ms": 500},
                            "workload": {"kind": "offline", "num_requests": 8, "prompt_len": 64, "output_len": 8}},
                                source="spec.yaml")
        assert sweep.spec.grid.dtype == [dtype]
        assert {p["dtype"] for p in sweep.points()} == {dtype}
