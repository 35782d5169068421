"""Dominance bounds of the serving calibration on GPUs outside its fit (scheduler/serving_bounds.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scheduler.serving_bounds import BOUND_OF, SEPARATOR, bound_requests, relabelled, upper_bounds
from scheduler.serving_model import ServingCalibration, held_out, held_out_requests
from tests.test_serving_anchors import _anchored_basis


def _run(run_id: str, system: str, gemm: str = "fp8") -> dict:
    return {"id": run_id, "system": system, "gemm_quant_mode": gemm, "moe_quant_mode": gemm}


@pytest.mark.parametrize("system, gemm, fitted, expected", [
    ("h200_sxm", "fp8", ["h100_sxm", "b200_sxm"], ["h100-sxm"]),     # the H100 die with faster memory
    ("h200_sxm", "nvfp4", ["h100_sxm"], ["h100-sxm"]),               # fp4 weights on Hopper: bf16 compute
    ("h100_sxm", "fp8", ["h100_sxm"], []),                           # a fitted GPU keeps its own prediction
    ("h200_sxm", "fp8", ["b200_sxm"], []),                           # a GPU that is faster bounds nothing here
    ("gb300", "fp8", ["b200_sxm", "b300_sxm", "gb200"], ["b200", "b300", "gb200"]),
    ("no_such_gpu", "fp8", ["h100_sxm"], []),
])
def test_requests_name_the_nearest_fitted_gpus_the_runs_gpu_dominates(system, gemm, fitted, expected):
    requests = bound_requests(pd.DataFrame([_run("r", system, gemm)]), fitted)
    assert sorted(requests["system"]) == expected and set(requests["id"]) <= {"r"}


def test_relabelled_runs_keep_their_origin_and_get_unique_ids():
    table = pd.DataFrame([{**_run("a", "h200_sxm"), "isl": 1}, {**_run("b", "h100_sxm"), "isl": 2}])
    requests = pd.DataFrame({"id": ["a", "a"], "system": ["h100-sxm", "b200"]})
    out = relabelled(table, requests)
    assert list(out.columns) == [*table.columns, BOUND_OF]
    assert out["id"].tolist() == [f"a{SEPARATOR}h100-sxm", f"a{SEPARATOR}b200"]
    assert out["system"].tolist() == ["h100-sxm", "b200"] and (out[BOUND_OF] == "a").all() and (out["isl"] == 1).all()
    assert relabelled(table, requests.iloc[:0]).empty


def _slow_h200(basis: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The H100 runs, and the H200 runs of the same configurations simulated three times slower (a calibration
    fitted on the H100 alone then predicts the H200 slower than the H100, which its specs rule out)."""
    h100 = basis[basis["system"] == "h100_sxm"].reset_index(drop=True)
    h200 = h100.assign(id=h100["id"].str.replace("h100_sxm", "h200_sxm"), system="h200_sxm")
    for column in ("kernel_ttft_ms", "kernel_tpot_ms", "kernel_first_ttft_ms"):
        h200[column] = h200[column] * 3
    return h100, h200


def test_an_unseen_gpu_is_predicted_no_slower_than_on_a_fitted_gpu_it_dominates(tmp_path):
    h100, h200 = _slow_h200(_anchored_basis())
    calibration = ServingCalibration.fit(h100, anchor_runs=h100.iloc[:0])  # no anchors: every run is unanchored
    assert calibration.systems == ("h100_sxm",)
    assert ServingCalibration.load(calibration.save(tmp_path / "cal.json")).systems == ("h100_sxm",)
    requests = bound_requests(h200, calibration.systems)
    assert len(requests) == len(h200) and set(requests["system"]) == {"h100-sxm"}
    # the relabelled runs' basis: each H200 run's configuration as simulated on the H100
    basis = h100.assign(**{BOUND_OF: h200["id"].to_numpy()})
    basis["id"] = basis[BOUND_OF] + SEPARATOR + "h100-sxm"
    bounds = upper_bounds(calibration, basis, h200)
    on_h100 = calibration.predict(h100, anchored=False)
    alone, bounded = calibration.predict(h200, anchored=False), calibration.predict(h200, bounds=bounds)
    assert (bounds["bound_gpus"] == 1).all()
    for t in ("ttft", "tpot"):
        assert (alone[f"{t}_ms"].to_numpy() > on_h100[f"{t}_ms"].to_numpy()).mean() > 0.9  # the tree extrapolates
        np.testing.assert_allclose(bounded[f"{t}_ms"].to_numpy(),
                                   np.minimum(alone[f"{t}_ms"].to_numpy(), on_h100[f"{t}_ms"].to_numpy()), rtol=1e-12)
    assert bounded["bounded"].to_numpy().mean() > 0.9 and not alone["bounded"].any()


def test_an_anchored_run_keeps_its_measured_bounds_not_the_dominance_bound():
    basis = _anchored_basis()
    h100 = basis[basis["system"] == "h100_sxm"]
    h200 = basis[basis["system"] == "h200_sxm"]
    calibration = ServingCalibration.fit(h100)  # anchored to the H100's measurements of every configuration
    tight = pd.DataFrame({"ttft_ms": 1e-3, "tpot_ms": 1e-3, "bound_gpus": 1}, index=h200.index)
    pd.testing.assert_frame_equal(calibration.predict(h200, bounds=tight), calibration.predict(h200))


def test_held_out_bounds_a_gpu_left_out_of_the_fit_and_asks_for_what_it_needs():
    h100, h200 = _slow_h200(_anchored_basis())
    # two "GPUs" share the fit: held out, each is bounded when its GPU dominates the other one (H200 over H100)
    basis = pd.concat([h100, h200], ignore_index=True).assign(model="m")
    requests = held_out_requests(basis, "system")
    assert set(requests["system"]) == {"h100-sxm"} and set(requests["id"]) == set(h200["id"])
    with pytest.raises(ValueError, match="relabelled: 60 bounding runs missing"):
        held_out(basis, "system", relabelled=basis.iloc[:0].assign(**{BOUND_OF: ""}))
    simulated = h100.assign(**{BOUND_OF: h200["id"].to_numpy()})
    simulated["id"] = simulated[BOUND_OF] + SEPARATOR + "h100-sxm"
    none = basis.iloc[:0]  # no anchors: the runs are the calibration's alone
    out = held_out(basis, "system", none, relabelled=simulated).set_index("id")
    plain = held_out(basis, "system", none).set_index("id")
    assert (out.loc[h200["id"], "bound_gpus"] == 1).all() and (out.loc[h100["id"], "bound_gpus"] == 0).all()
    for t in ("ttft", "tpot"):
        assert (out[f"pred_{t}_ms"] <= plain[f"pred_{t}_ms"] * (1 + 1e-12)).all()
        assert (out.loc[h200["id"], f"pred_{t}_ms"] < plain.loc[h200["id"], f"pred_{t}_ms"]).any()


def test_evaluate_bounds_a_run_on_an_unseen_gpu_by_its_simulation_on_the_fitted_one(tmp_path, roofline):
    from features.silicon import read_serving_results
    from scheduler.serving_eval import predict_serving, score_serving

    path = tmp_path / "runs.csv"
    base = {"backend": "vllm", "backend_version": "0.19.0", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
            "mode": "agg", "isl": 512, "osl": 32, "gemm_quant_mode": "bf16", "moe_quant_mode": "bf16", "tp_size": 1,
            "pp_size": 1, "attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1, "batch_size": 4,
            "silicon_ttft_ms": 35.0, "silicon_tpot_ms": 6.0}
    pd.DataFrame([{**base, "id": "on-h200", "system": "h200_sxm"},
                  {**base, "id": "on-h100", "system": "h100_sxm"}]).to_csv(path, index=False)
    table = read_serving_results(path)
    h100, _ = _slow_h200(_anchored_basis())
    calibration = ServingCalibration.fit(h100, anchor_runs=h100.iloc[:0])  # no anchors: every run is unanchored
    out = predict_serving(table, predictor=roofline, calibration=calibration, profiles={}).set_index("id")
    assert out.loc["on-h200", "bound_gpus"] == 1 and out.loc["on-h100", "bound_gpus"] == 0
    as_h100 = predict_serving(table.assign(system="h100_sxm"), predictor=roofline, calibration=calibration,
                              profiles={}).set_index("id")
    for t in ("ttft", "tpot"):
        assert out.loc["on-h200", f"pred_{t}_ms"] <= as_h100.loc["on-h200", f"pred_{t}_ms"] * (1 + 1e-12)
    assert score_serving(out.reset_index())["bounded"] == int(out["bounded"].sum())


class _Inverse:
    """A stand-in booster whose correction falls as the simulated time rises (log ratio = -2 × log sim), so that a
    faster GPU's run comes out slower: the non-monotone extrapolation the bound exists for."""

    def __init__(self, target: str):
        from scheduler.serving_model import TARGET_FEATURES
        self.column = list(TARGET_FEATURES[target]).index(f"log_sim_{target}")

    def predict(self, x):
        return -2.0 * np.asarray(x, float)[:, self.column]


def test_a_calibrated_benchmark_estimate_on_an_unseen_gpu_is_bounded_by_the_fitted_one(roofline):
    from predictor.gpus import get_gpu
    from predictor.models import get_model
    from scheduler.serving_eval import calibrated_run

    calibration = ServingCalibration({t: _Inverse(t) for t in ("ttft", "tpot")}, 1, systems=("h100_sxm",))
    run = dict(isl=512, osl=32, concurrency=4, framework="vllm", calibration=calibration)
    on_h100 = calibrated_run(roofline, get_model("llama-3.1-8b"), get_gpu("h100-sxm"), 1, "bf16", **run)
    on_h200 = calibrated_run(roofline, get_model("llama-3.1-8b"), get_gpu("h200"), 1, "bf16", **run)
    assert on_h200["kernel_only_tpot_ms"] < on_h100["kernel_only_tpot_ms"]  # the H200 simulates faster ...
    assert not on_h100["bounded"] and on_h200["bounded"]                   # ... the calibration inverts it ...
    assert on_h200["mean_tpot_ms"] == pytest.approx(on_h100["mean_tpot_ms"], rel=1e-9)  # ... the bound restores it
    unbounded = calibrated_run(roofline, get_model("llama-3.1-8b"), get_gpu("h200"), 1, "bf16",
                               **{**run, "calibration": ServingCalibration(calibration.models, 1)})
    assert not unbounded["bounded"] and unbounded["mean_tpot_ms"] > on_h100["mean_tpot_ms"]
