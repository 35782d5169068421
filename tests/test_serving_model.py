"""Serving calibration (scheduler/serving_model.py): physical features, fit / predict, held-out refits, storage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from predictor.errors import InputError
from scheduler.serving_model import (ALL_FEATURES, FEATURES, LAUNCH_FEATURES, ServingCalibration, held_out, mdape,
                                     serving_features)


def _basis(n: int = 240, seed: int = 0, per_launch_ms: float = 0.0) -> pd.DataFrame:
    """Synthetic basis: measured TPOT = 0.6 × simulated on sglang and 1.3 × on vllm (+ ``per_launch_ms`` per
    kernel launch of a decode step); measured TTFT = simulated + a per-client gap term, so the truth is a
    function of the physical features only."""
    rng = np.random.default_rng(seed)
    framework = rng.choice(["vllm", "sglang"], n)
    conc = rng.choice([1, 4, 16, 64, 256], n).astype(float)
    isl, osl = rng.choice([1024, 4096, 8192], n), rng.choice([128, 1024], n)
    tpot = rng.uniform(5, 40, n)
    ttft = rng.uniform(30, 3000, n)
    frame = pd.DataFrame({
        "id": [f"r{i}" for i in range(n)], "framework": framework, "mode": "agg", "isl": isl, "osl": osl,
        "concurrency": conc, "tp": 1, "ep": 1, "pp": 1, "dp_attention": 1, "gpus": 1,
        "decode_tp_size": 1, "decode_moe_ep_size": 1, "decode_attention_dp_size": 1, "decode_num_workers": 1,
        "system": rng.choice(["gpu_a", "gpu_b", "gpu_c"], n), "model": rng.choice(["m1", "m2"], n),
        "kernel_ttft_ms": ttft, "kernel_tpot_ms": tpot, "kernel_first_ttft_ms": ttft * 1.5,
        "kernel_queue_ms": 0.0, "kernel_kv_tokens": 1e6, "roofline_ttft_ms": ttft / 2, "roofline_tpot_ms": tpot / 2,
        "kernel_launches": rng.choice([300.0, 450.0, 1200.0], n),
    })
    frame["measured_tpot_ms"] = tpot * np.where(framework == "sglang", 0.6, 1.3) + per_launch_ms * frame["kernel_launches"]
    frame["measured_ttft_ms"] = ttft + (ttft + osl * tpot) / conc
    return frame


def _runs_csv(tmp_path, ids: list[str], backends: list[str]):
    """Two measured Llama-3.1-8B runs on H100 in the silicon schema, written to a CSV."""
    path = tmp_path / "runs.csv"
    pd.DataFrame({
        "id": ids, "backend": backends, "backend_version": ["0.19.0", "0.5.9"],
        "model_path": ["meta-llama/Llama-3.1-8B-Instruct"] * 2, "system": ["h100_sxm"] * 2, "mode": ["agg"] * 2,
        "isl": [512, 256], "osl": [32, 16], "gemm_quant_mode": ["bf16"] * 2, "moe_quant_mode": ["bf16"] * 2,
        "batch_size": [4, 2], "tp_size": [1, 1], "pp_size": [1, 1], "attention_dp_size": [1, 1],
        "moe_tp_size": [1, 1], "moe_ep_size": [1, 1], "silicon_ttft_ms": [40.0, 30.0], "silicon_tpot_ms": [8.0, 6.0],
    }).to_csv(path, index=False)
    return path


def test_features_are_finite_and_named():
    x = serving_features(_basis())
    assert list(x.columns) == list(ALL_FEATURES) and set(FEATURES) < set(ALL_FEATURES)
    assert np.isfinite(x.to_numpy(float)).all()


def test_tpot_learns_a_per_launch_cost_and_ttft_does_not_see_launches(tmp_path):
    basis = _basis(400, per_launch_ms=0.01)
    calibration = ServingCalibration.fit(basis)
    raw = json.loads(calibration.to_json())
    assert raw["features"]["tpot"] == list(FEATURES + LAUNCH_FEATURES) and raw["features"]["ttft"] == list(FEATURES)
    few, many = basis.assign(kernel_launches=300.0), basis.assign(kernel_launches=1200.0)
    gap_ms = (calibration.predict(many)["tpot_ms"] - calibration.predict(few)["tpot_ms"]).median()
    assert gap_ms == pytest.approx(0.01 * 900, rel=0.3)  # 900 launches more at 0.01 ms each
    np.testing.assert_array_equal(calibration.predict(many)["ttft_ms"], calibration.predict(few)["ttft_ms"])


def test_fit_learns_framework_scales_and_beats_the_raw_simulation():
    basis = _basis()
    train, test = basis.iloc[:180], basis.iloc[180:]
    pred = ServingCalibration.fit(train).predict(test)
    assert mdape(pred["tpot_ms"], test["measured_tpot_ms"]) < 0.05
    assert mdape(pred["ttft_ms"], test["measured_ttft_ms"]) < 0.5 * mdape(test["kernel_ttft_ms"], test["measured_ttft_ms"])


def test_held_out_fits_never_see_their_group():
    basis = _basis()
    out = held_out(basis, "system")
    assert len(out) == len(basis)
    for system, rows in out.groupby("system"):
        assert (rows["fit_rows"] == int((basis["system"] != system).sum())).all()


def test_saved_calibration_predicts_the_same(tmp_path):
    basis = _basis()
    fitted = ServingCalibration.fit(basis, source="synthetic")
    path = fitted.save(tmp_path / "cal.json")
    loaded = ServingCalibration.load(path)
    assert loaded.fitted_rows == len(basis) and loaded.source == "synthetic"
    assert loaded.fitted_ids == fitted.fitted_ids == frozenset(basis["id"])
    pd.testing.assert_frame_equal(loaded.predict(basis), fitted.predict(basis), rtol=1e-12)
    assert loaded.systems == fitted.systems == ("gpu_a", "gpu_b", "gpu_c")
    assert fitted.to_json() == ServingCalibration.fit(basis, source="synthetic").to_json()  # deterministic


def test_incomplete_basis_rows_get_nan_not_a_number():
    basis = _basis(60)
    basis.loc[basis.index[:3], "kernel_tpot_ms"] = np.nan
    pred = ServingCalibration.fit(basis.iloc[3:]).predict(basis)
    assert pred["tpot_ms"].iloc[:3].isna().all() and pred["tpot_ms"].iloc[3:].notna().all()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), ("{not json", "not valid JSON"), (json.dumps({"features": ["x"]}), "not a serving"),
])
def test_bad_calibration_files_are_input_errors(tmp_path, content, message):
    path = tmp_path / "cal.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        ServingCalibration.load(path)


def test_too_few_runs_is_an_input_error():
    with pytest.raises(InputError, match="need at least"):
        ServingCalibration.fit(_basis(10))


def test_predict_serving_with_a_calibration_corrects_the_kernel_only_simulation(tmp_path, roofline):
    from features.silicon import read_serving_results
    from scheduler.serving_eval import predict_serving

    table = read_serving_results(_runs_csv(tmp_path, ["a", "b"], ["vllm", "sglang"]))
    calibration = ServingCalibration.fit(_basis())
    out = predict_serving(table, predictor=roofline, calibration=calibration)
    assert (out["skip"] == "").all()
    expected = calibration.predict(out)
    np.testing.assert_allclose(out["pred_tpot_ms"], expected["tpot_ms"])
    assert not np.allclose(out["pred_tpot_ms"], out["kernel_tpot_ms"])  # the correction was applied
    # each aggregated run is also simulated with its framework's shipped engine profile; TTFT blends with it
    assert np.isfinite(out["profile_ttft_ms"]).all() and (out["profile_ttft_ms"] > 0).all()
    np.testing.assert_allclose(out["pred_ttft_ms"], expected["ttft_ms"])
    alone = calibration.predict(out.drop(columns=["profile_ttft_ms"]))["ttft_ms"]
    np.testing.assert_allclose(out["pred_ttft_ms"], np.sqrt(alone * out["profile_ttft_ms"]), rtol=1e-9)
    as_vllm = predict_serving(table, predictor=roofline, calibration=calibration, framework="vllm")
    np.testing.assert_allclose(as_vllm["pred_tpot_ms"].iloc[0], out["pred_tpot_ms"].iloc[0])


def test_calibrated_run_predicts_a_benchmark_from_its_simulations(roofline):
    from predictor.gpus import get_gpu
    from predictor.models import get_model
    from scheduler.serving_eval import calibrated_run

    calibration = ServingCalibration.fit(_basis())
    out = calibrated_run(roofline, get_model("llama-3.1-8b"), get_gpu("h100-sxm"), 1, "fp16", isl=512, osl=32,
                         concurrency=4, framework="sglang", calibration=calibration)
    assert out["calibration_runs"] == 240 and out["concurrency"] == 4
    assert np.isfinite(out["mean_ttft_ms"]) and out["mean_ttft_ms"] > 0
    # sglang's synthetic truth is 0.6 x the simulated TPOT
    assert out["mean_tpot_ms"] == pytest.approx(0.6 * out["kernel_only_tpot_ms"], rel=0.1)


def test_calibrated_run_of_an_impossible_run_is_an_input_error(roofline):
    from predictor.gpus import get_gpu
    from predictor.models import get_model
    from scheduler.serving_eval import calibrated_run

    with pytest.raises(InputError, match="cannot be simulated"):
        calibrated_run(roofline, get_model("llama-3.1-8b"), get_gpu("h100-sxm"), 1, "fp16", isl=512, osl=32,
                       concurrency=10_000, framework="vllm", calibration=ServingCalibration.fit(_basis()))


def test_cli_simulate_closed_loop_reports_the_calibrated_benchmark(capsys, monkeypatch, roofline):
    import inference_sim.cli as cli
    from inference_sim import common

    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: roofline)
    argv = ["simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--workload", "concurrency", "--concurrency", "4",
            "--prompt-len", "256", "--output-len", "16", "--num-requests", "20", "--framework", "sglang", "--json"]
    assert cli.main(argv) == 0
    cal = json.loads(capsys.readouterr().out)["calibrated"]
    assert cal["framework"] == "sglang" and cal["mean_ttft_ms"] > 0 and cal["mean_tpot_ms"] > 0
    assert cli.main(argv[:-2] + ["legacy", "--json"]) == 0  # the Vidur-era engine has no calibration
    assert "calibrated" not in json.loads(capsys.readouterr().out)


def test_cli_simulate_closed_loop_prints_what_the_benchmark_client_sees(capsys, monkeypatch, roofline):
    import inference_sim.cli as cli
    from inference_sim import common

    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: roofline)
    argv = ["simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--workload", "concurrency", "--concurrency", "4",
            "--prompt-len", "256", "--output-len", "16", "--num-requests", "20", "--framework", "vllm"]
    assert cli.main(argv + ["--json"]) == 0
    window = json.loads(capsys.readouterr().out)["measurement_window"]
    assert cli.main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "benchmark client sees it" in x)
    assert f"window of {window['requests']:,} requests" in line and "before the engine admits" in line
    assert f"mean TTFT {window['mean_ttft_ms']:.1f} ms" in line and f"mean TPOT {window['mean_tpot_ms']:.2f} ms" in line


def test_cli_simulate_runs_when_only_the_calibrated_estimate_cannot(capsys, monkeypatch, roofline):
    """The calibrated estimate simulates the framework's own defaults (90% of GPU memory): Llama-3.1-70B in fp8 on
    one H100 then holds about 2,600 KV tokens, too few for one 3,000-token prompt, while the user's
    --gpu-memory-utilization 0.98 holds it. The run is reported and the estimate's absence is said, instead of
    the whole command failing."""
    import inference_sim.cli as cli
    from inference_sim import common

    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: roofline)
    argv = ["simulate", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--dtype", "fp8", "--workload",
            "concurrency", "--concurrency", "2", "--prompt-len", "3000", "--output-len", "16", "--num-requests", "8",
            "--gpu-memory-utilization", "0.98", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished"] == 8 and "calibrated" not in summary
    assert summary["calibrated_skipped"].startswith("calibrated estimate: this run cannot be simulated (does_not_fit")


def test_disaggregated_ttft_counts_the_kv_copy_to_the_decode_instance(roofline):
    from predictor.gpus import get_gpu
    from predictor.models import get_model
    from scheduler.engine_profiles import kernel_only_profile
    from scheduler.serving_eval import _simulate_disagg, closed_loop_summary, simulate_row
    from scheduler.workload import build_workload

    pools = {f"{p}_{k}": 1 for p in ("prefill", "decode") for k in
             ("num_workers", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size", "batch_size")}
    row = pd.Series({"mode": "disagg", "isl": 4096, "osl": 32, "concurrency": 4, "system": "h100_sxm",
                     "gemm_quant_mode": "bf16", "moe_quant_mode": "bf16", **pools})
    model, gpu, profile = get_model("llama-3.1-8b"), get_gpu("h100-sxm"), kernel_only_profile("vllm")
    client = simulate_row(row, roofline, profile, model=model, gpu=gpu)
    wl = build_workload("concurrency", 16, prompt_len=4096, output_len=32, concurrency=4, stagger=False)
    result, landed = _simulate_disagg(row, roofline, profile, model, gpu, "fp16", profile.engine_config(), wl)
    prefill_side = closed_loop_summary(result, 4)
    assert np.isfinite(landed[4:12]).all()
    # the client's first token comes after the prefill instance's, by at least one KV copy
    copy_ms = 4096 * model.kv_cache_bytes_per_token(16, 1) / (gpu.link_bandwidth_gbps * 1e9) * 1e3
    assert client["ttft_ms"] >= prefill_side["mean_ttft_ms"] + copy_ms * 0.99
    assert client["tpot_ms"] < prefill_side["mean_tpot_ms"]  # the same request, fewer milliseconds left after TTFT


def test_scores_tell_the_calibrations_own_runs_apart(tmp_path, roofline):
    from features.silicon import read_serving_results
    from scheduler.serving_eval import predict_serving, score_serving

    basis = _basis()
    basis.loc[basis.index[0], "id"] = "seen"
    runs = read_serving_results(_runs_csv(tmp_path, ["seen", "new"], ["vllm", "vllm"]))
    report = score_serving(predict_serving(runs, predictor=roofline,
                                           calibration=ServingCalibration.fit(basis)))
    assert report["in_calibration"] == 1 and report["not_in_calibration"]["rows"] == 1
    assert report["predicted"] == 2  # the overall scores still cover both


def test_the_blend_table_scores_the_shipped_rule_and_each_of_its_parts():
    """benchmarks/experiments/serving_blend.py: on held-out splits its blend of TTFT is the shipped prediction, its
    calibration column is the split refitted without the profile simulation, and a run the rule does not touch
    (here a disaggregated one) has every column equal."""
    from benchmarks.experiments.serving_blend import blend_lines, blend_parts

    basis = _basis(240)
    basis["profile_ttft_ms"] = basis["measured_ttft_ms"] * np.exp(np.random.default_rng(1).normal(0, 0.3, len(basis)))
    basis["profile_tpot_ms"] = basis["measured_tpot_ms"] * 1.2
    basis.loc[basis.index[:5], "mode"] = "disagg"
    basis.loc[basis.index[:5], "profile_ttft_ms"] = np.nan
    shipped = held_out(basis, "system")
    parts = blend_parts(basis, "system", None, None, shipped)
    np.testing.assert_allclose(parts["blend_ttft"], shipped["pred_ttft_ms"], rtol=1e-9)
    alone = held_out(basis.drop(columns=["profile_ttft_ms"]), "system")
    np.testing.assert_allclose(parts["calibration_ttft"], alone["pred_ttft_ms"], rtol=1e-9)
    untouched = parts[~parts["blends"]]
    assert len(untouched) == 5 and (untouched["mode"] == "disagg").all()
    for target in ("ttft", "tpot"):
        for column in ("profile", "blend"):
            np.testing.assert_allclose(untouched[f"{column}_{target}"], untouched[f"calibration_{target}"])
    lines = blend_lines({"by_group": {"system": basis, "model": basis}, "anchors": None, "logo": shipped,
                         "lomo": held_out(basis, "model")})
    rows = [line for line in lines if line.startswith(("| GPU", "| model"))]
    assert [r.split(" | ")[:2] for r in rows] == [["| GPU: blend applies", "235"], ["| GPU: all", "240"],
                                                  ["| model: blend applies", "235"], ["| model: all", "240"]]
