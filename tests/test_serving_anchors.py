"""Sibling anchoring of the serving calibration (scheduler/serving_anchors.py): keys, siblings, corrections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scheduler.serving_anchors import config_keys, corrections, siblings
from scheduler.serving_model import ServingCalibration, mdape


def _runs(**overrides) -> pd.DataFrame:
    base = {"framework": "vllm", "model": "llama-3.1-8b", "mode": "agg", "gemm_quant_mode": "bf16",
            "moe_quant_mode": "bf16", "isl": 1024, "osl": 128, "concurrency": 8, "tp": 1, "pp": 1,
            "dp_attention": 1, "moe_tp": 1, "ep": 1, "system": "h100_sxm"}
    return pd.DataFrame([{**base, **overrides}])


def test_keys_read_numbers_alike_and_ignore_pools_of_aggregated_runs():
    a, b = _runs(tp=8), _runs(tp=8.0, decode_tp_size=4)
    assert config_keys(a).iloc[0] == config_keys(b).iloc[0]
    assert config_keys(a).iloc[0] != config_keys(_runs(tp=4)).iloc[0]
    disagg = [_runs(mode="disagg", decode_tp_size=t) for t in (4, 8)]
    assert config_keys(disagg[0]).iloc[0] != config_keys(disagg[1]).iloc[0]


@pytest.mark.parametrize("a, b, expected", [
    ("h200_sxm", "h100_sxm", True), ("h100-sxm", "b200", False), ("b200_sxm", "gb300", True),
    ("b300_sxm", "gb200", True), ("h100_sxm", "h100-sxm", False), ("h100_sxm", "no-such-gpu", False),
    ("h100_sxm", "mi300x", False),
])
def test_siblings_are_one_vendor_and_compute_class(a, b, expected):
    assert siblings(a, b) is expected and siblings(b, a) is expected


def test_corrections_average_sibling_gpus_only():
    key = config_keys(_runs()).iloc[0]
    table = pd.DataFrame({"key": [key] * 4, "system": ["h100_sxm", "b200_sxm", "gb200", "gb300"],
                          "dtype": "bf16", "ttft": [0.2, 0.5, 0.7, 0.6], "tpot": [-0.1, 0.3, 0.1, 0.2],
                          "measured_ttft": np.log([100.0, 50.0, 40.0, 30.0]),
                          "measured_tpot": np.log([10.0, 5.0, 4.0, 3.0])})
    query = pd.concat([_runs(system="h200_sxm"), _runs(system="h100_sxm"), _runs(system="b300_sxm"),
                       _runs(system="h200_sxm", isl=2048), _runs(system="gb200")], ignore_index=True)
    out = corrections(table, query)
    assert out["runs"].tolist() == [1, 0, 3, 0, 2]  # own GPU never; Blackwell never anchors Hopper; other keys never
    assert out.loc[0, "ttft"] == pytest.approx(0.2) and out.loc[0, "tpot"] == pytest.approx(-0.1)
    assert out.loc[2, "ttft"] == pytest.approx(0.6) and out.loc[2, "tpot"] == pytest.approx(0.2)
    assert (out.loc[[1, 3], ["ttft", "tpot"]] == 0).all().all()
    # an H200 dominates an H100 on every spec: no slower than the H100's measurement, no lower bound
    assert out.loc[0, "ttft_upper"] == pytest.approx(np.log(100.0)) and out.loc[0, "tpot_lower"] == -np.inf
    # a GB300 dominates a GB200 (a GB200 has the B200's compute but half its scale-out network: neither
    # dominates the other): the GB200 is no faster than the GB300's measurement
    assert out.loc[4, "tpot_lower"] == pytest.approx(np.log(3.0)) and out.loc[4, "tpot_upper"] == np.inf
    assert out.loc[2, "tpot_lower"] == pytest.approx(np.log(3.0)) and out.loc[2, "tpot_upper"] == np.inf


def test_an_anchored_prediction_keeps_the_order_of_measured_siblings():
    basis = _anchored_basis()
    h100, h200 = basis[basis["system"] == "h100_sxm"], basis[basis["system"] == "h200_sxm"].copy()
    h200["kernel_tpot_ms"] = h200["kernel_tpot_ms"] * 3  # a simulation that has the H200 far slower
    calibration = ServingCalibration.fit(h100)
    predicted = calibration.predict(h200)["tpot_ms"].to_numpy()
    assert (predicted <= h100["measured_tpot_ms"].to_numpy() * (1 + 1e-12)).all()
    assert (calibration.predict(h200, anchored=False)["tpot_ms"].to_numpy() > h100["measured_tpot_ms"].to_numpy()).any()


def _anchored_basis(n_configs: int = 60, seed: int = 0) -> pd.DataFrame:
    """Each configuration measured on H100 and on H200; the measured times carry a per-configuration factor
    (the stack's behaviour on it) that no feature sees, the same on both GPUs."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_configs):
        factor = float(np.exp(rng.normal(0, 0.4)))
        conc, isl = c + 1, int(rng.choice([1024, 2048, 4096, 8192]))  # one configuration per c
        osl = int(rng.choice([128, 256, 512, 1024]))
        for system, speed in (("h100_sxm", 1.0), ("h200_sxm", 0.8)):
            tpot, ttft = rng.uniform(5, 30) * speed, rng.uniform(50, 500) * speed
            rows.append({"id": f"{system}-{c}", "framework": "vllm", "model": "m", "mode": "agg", "isl": isl,
                         "osl": osl, "concurrency": conc, "tp": 1, "pp": 1, "ep": 1, "dp_attention": 1, "moe_tp": 1,
                         "gemm_quant_mode": "bf16", "moe_quant_mode": "bf16", "gpus": 1, "system": system,
                         "decode_tp_size": 1, "decode_moe_ep_size": 1, "decode_attention_dp_size": 1,
                         "decode_num_workers": 1, "kernel_ttft_ms": ttft, "kernel_tpot_ms": tpot,
                         "kernel_first_ttft_ms": ttft, "kernel_queue_ms": 0.0, "kernel_kv_tokens": 1e6,
                         "kernel_launches": 400.0, "roofline_ttft_ms": ttft / 2, "roofline_tpot_ms": tpot / 2,
                         "measured_ttft_ms": ttft * factor, "measured_tpot_ms": tpot * factor})
    return pd.DataFrame(rows)


def test_an_unseen_gpu_borrows_its_siblings_residuals(tmp_path):
    basis = _anchored_basis()
    h100, h200 = basis[basis["system"] == "h100_sxm"], basis[basis["system"] == "h200_sxm"]
    calibration = ServingCalibration.fit(h100)  # H200 never measured
    anchored, alone = calibration.predict(h200), calibration.predict(h200, anchored=False)
    assert (anchored["anchor_runs"] == 1).all() and (alone["anchor_runs"] == 0).all()
    for t in ("ttft", "tpot"):
        assert mdape(anchored[f"{t}_ms"], h200[f"measured_{t}_ms"]) < 0.5 * mdape(alone[f"{t}_ms"], h200[f"measured_{t}_ms"])
    # its own GPU's runs are never anchored (they would be their own answer)
    assert (calibration.predict(h100)["anchor_runs"] == 0).all()
    loaded = ServingCalibration.load(calibration.save(tmp_path / "cal.json"))
    pd.testing.assert_frame_equal(loaded.predict(h200), anchored)


def test_evaluate_reports_the_runs_anchored_to_a_sibling_gpu(tmp_path, roofline):
    from features.silicon import read_serving_results
    from scheduler.serving_anchors import residual_table
    from scheduler.serving_eval import predict_serving, score_serving

    path = tmp_path / "runs.csv"
    pd.DataFrame({
        "id": ["a", "b"], "backend": ["vllm"] * 2, "backend_version": ["0.19.0"] * 2,
        "model_path": ["meta-llama/Llama-3.1-8B-Instruct"] * 2, "system": ["h100_sxm"] * 2, "mode": ["agg"] * 2,
        "isl": [512, 256], "osl": [32, 16], "gemm_quant_mode": ["bf16"] * 2, "moe_quant_mode": ["bf16"] * 2,
        "batch_size": [4, 2], "tp_size": [1, 1], "pp_size": [1, 1], "attention_dp_size": [1, 1],
        "moe_tp_size": [1, 1], "moe_ep_size": [1, 1], "silicon_ttft_ms": [40.0, 30.0], "silicon_tpot_ms": [8.0, 6.0],
    }).to_csv(path, index=False)
    runs = read_serving_results(path)
    calibration = ServingCalibration.fit(_anchored_basis())
    first = predict_serving(runs, predictor=roofline, calibration=calibration)
    # run "a" measured on an H200 at twice what the calibration predicts: it anchors "a" on the H100
    sibling = first.iloc[[0]].assign(system="h200_sxm", measured_tpot_ms=2 * first["pred_tpot_ms"].iloc[0],
                                     measured_ttft_ms=first["pred_ttft_ms"].iloc[0])
    calibration.anchors = residual_table(sibling, calibration.predict(sibling, anchored=False))
    out = predict_serving(runs, predictor=roofline, calibration=calibration)
    assert out["anchor_runs"].tolist() == [1, 0]
    # twice the TPOT (the H200 dominates the H100, so its measurement is also the H100's lower bound: the same here)
    assert out["pred_tpot_ms"].iloc[0] == pytest.approx(2 * first["pred_tpot_ms"].iloc[0])
    assert out["pred_tpot_ms"].iloc[1] == pytest.approx(first["pred_tpot_ms"].iloc[1])
    assert score_serving(out)["anchored"] == 1


def test_unanchored_ttft_blends_with_the_profile_simulation_and_anchored_ttft_does_not():
    basis = _anchored_basis()
    h100, h200 = basis[basis["system"] == "h100_sxm"], basis[basis["system"] == "h200_sxm"]
    calibration = ServingCalibration.fit(h100)
    profile_ms = h200["kernel_ttft_ms"].to_numpy() * 2.0
    timed = h200.assign(profile_ttft_ms=profile_ms, profile_tpot_ms=h200["kernel_tpot_ms"] * 5.0)
    timed.loc[timed.index[:5], "profile_ttft_ms"] = np.nan  # no profile simulation (a disaggregated run): as before
    alone, blended = calibration.predict(h200, anchored=False), calibration.predict(timed, anchored=False)
    expected = np.sqrt(alone["ttft_ms"].to_numpy() * profile_ms)
    expected[:5] = alone["ttft_ms"].to_numpy()[:5]
    np.testing.assert_allclose(blended["ttft_ms"].to_numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(blended["tpot_ms"].to_numpy(), alone["tpot_ms"].to_numpy(), rtol=1e-12)  # TPOT: not
    # an anchored run keeps the anchored calibration: its sibling's measurement is better evidence than either model
    pd.testing.assert_frame_equal(calibration.predict(timed), calibration.predict(h200))


def test_evaluate_simulates_the_profile_only_where_no_sibling_anchors_the_run(tmp_path, roofline):
    from features.silicon import read_serving_results
    from scheduler.engine_profiles import load_profiles
    from scheduler.serving_eval import predict_serving

    path = tmp_path / "runs.csv"
    base = {"backend": "vllm", "backend_version": "0.19.0", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
            "mode": "agg", "isl": 512, "osl": 32, "gemm_quant_mode": "bf16", "moe_quant_mode": "bf16", "tp_size": 1,
            "pp_size": 1, "attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1}
    pd.DataFrame([{**base, "id": "h100", "system": "h100_sxm", "batch_size": 4, "silicon_ttft_ms": 40.0,
                   "silicon_tpot_ms": 8.0},
                  {**base, "id": "h200", "system": "h200_sxm", "batch_size": 4, "silicon_ttft_ms": 35.0,
                   "silicon_tpot_ms": 6.0},
                  {**base, "id": "h200-alone", "system": "h200_sxm", "batch_size": 2, "silicon_ttft_ms": 30.0,
                   "silicon_tpot_ms": 5.0}]).to_csv(path, index=False)
    table = read_serving_results(path)
    h100 = predict_serving(table.iloc[:1], predictor=roofline, profiles={}, with_roofline=True)
    h100 = h100.rename(columns={c: "kernel_" + c[5:] for c in h100.columns if c.startswith("pred_")})
    calibration = ServingCalibration.fit(_anchored_basis(), anchor_runs=h100)  # anchors: the H100 run only
    out = predict_serving(table.iloc[1:], predictor=roofline, calibration=calibration).set_index("id")
    assert out.loc["h200", "anchor_runs"] == 1 and out.loc["h200-alone", "anchor_runs"] == 0
    assert np.isnan(out.loc["h200", "profile_ttft_ms"]) and out.loc["h200-alone", "profile_ttft_ms"] > 0
    # the same predictions as with the profile simulated for both (the anchored run does not use it)
    full = predict_serving(table.iloc[1:], predictor=roofline, profiles={}, with_roofline=True)
    full = full.rename(columns={c: "kernel_" + c[5:] for c in full.columns if c.startswith("pred_")}).set_index("id")
    timed = predict_serving(table.iloc[1:], predictor=roofline, profiles=load_profiles(), with_roofline=False)
    full["profile_ttft_ms"] = timed.set_index("id")["pred_ttft_ms"]
    assert np.isfinite(full["profile_ttft_ms"]).all()
    np.testing.assert_allclose(calibration.predict(full)["ttft_ms"].to_numpy(), out["pred_ttft_ms"].to_numpy(),
                               rtol=1e-12)


def test_anchor_residuals_are_the_calibrations_own_whatever_profile_columns_the_runs_carry():
    basis = _anchored_basis()
    h100 = basis[basis["system"] == "h100_sxm"]
    plain = ServingCalibration.fit(h100)
    timed = ServingCalibration.fit(h100.assign(profile_ttft_ms=h100["kernel_ttft_ms"] * 3.0))
    pd.testing.assert_frame_equal(plain.anchors, timed.anchors)
