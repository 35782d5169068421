"""Feature builder: one code path for profile rows and for ops built at prediction time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.builder import CATEGORICAL_FEATURES, FEATURE_NAMES, ROOFLINE_FEATURES, build_features, tiling_terms
from features.canonical import load_kernels
from predictor.batch import from_lists
from predictor.gpus import get_gpu
from predictor.models import get_model
from predictor.ops import build_ops
from predictor.precision import parse_dtype
from predictor.roofline import roofline


def llama_ops(gpu=None):
    ops = build_ops(get_model("llama-2-7b"), 2, parse_dtype("fp16"), from_lists([(300, 100)], [512, 1024]))
    if gpu:
        ops["gpu"] = gpu
    return ops


def test_prediction_time_ops_and_profile_rows_give_identical_features():
    with_param, ideal_a = build_features(llama_ops(), gpu="h100-sxm")
    with_column, ideal_b = build_features(llama_ops("h100-sxm"))
    pd.testing.assert_frame_equal(with_param, with_column)
    np.testing.assert_array_equal(ideal_a, ideal_b)


def test_feature_matrix_is_finite_float32_in_fixed_order():
    X, ideal = build_features(llama_ops("a100-80gb"))
    assert tuple(X.columns) == FEATURE_NAMES
    assert (X.dtypes == np.float32).all()
    assert np.isfinite(X.to_numpy()).all()
    np.testing.assert_allclose(ideal, roofline(llama_ops("a100-80gb"))["ideal_ms"])
    assert np.allclose(10 ** X["log_ideal_ms"].to_numpy(float), ideal, rtol=1e-5)


def test_features_are_physical_not_identities():
    names = " ".join(FEATURE_NAMES)
    for identity in ("gpu_name", "model", "source", "framework", "a100", "h100"):
        assert identity not in names
    assert set(ROOFLINE_FEATURES) < set(FEATURE_NAMES) and CATEGORICAL_FEATURES == ("op_kind_code",)


def test_gpu_specs_enter_as_numbers():
    a, _ = build_features(llama_ops("a100-80gb"))
    h, _ = build_features(llama_ops("h100-sxm"))
    assert (a["sm_count"] == 108).all() and (h["sm_count"] == 132).all()
    assert (a["hbm_gbps"] == 2039).all() and (h["peak_tflops"].max() == 989)


def test_wave_quantisation_by_hand():
    sm = get_gpu("a100-80gb").sm_count  # 108
    df = pd.DataFrame({"op_kind": ["gemm", "gemm"], "m": [128.0, 128.0], "n": [108 * 128.0, 109 * 128.0],
                       "batch": 0.0, "q_tokens": 0.0, "heads": 0.0, "kv_heads": 0.0, "experts": 0.0, "topk": 0.0,
                       "experts_local": 0.0})
    terms = tiling_terms(df, df["op_kind"].to_numpy(object), np.full(2, float(sm)))
    assert terms["waves"][0] == 1.0 and terms["wave_efficiency"][0] == 1.0
    assert terms["wave_efficiency"][1] == pytest.approx((109 / 108) / 2)  # a second, nearly empty wave


def test_every_shipped_row_builds_finite_features():
    kernels = load_kernels()
    X, ideal = build_features(kernels)
    assert len(X) == len(kernels) > 800_000
    assert np.isfinite(X.to_numpy()).all() and (ideal > 0).all()
