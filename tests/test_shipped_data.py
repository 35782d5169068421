"""The shipped canonical tables: valid, and every Vidur row's roofline equal to the op path's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import schema
from features.canonical import load_kernels, read_report
from predictor.batch import BatchShape
from predictor.models import get_model
from predictor.ops import build_ops
from predictor.precision import parse_dtype
from predictor.roofline import roofline

OP_ALIASES = {"residual_add": "mlp_residual_add"}


@pytest.fixture(scope="module")
def kernels():
    return load_kernels()


def test_shipped_tables_are_valid_and_reported(kernels):
    again, report = schema.validate(kernels, "shipped")
    assert len(again) == len(kernels) and not report.rejected
    rep = read_report()
    assert set(rep) == {"vidur", "aiconfigurator"}
    assert rep["vidur"]["kept"] + rep["aiconfigurator"]["kept"] == len(kernels)
    assert {"a100-80gb", "h100-sxm", "a40", "l40s", "b200"} <= set(kernels["gpu"])


def test_todays_kernels_are_shipped_with_their_reasons(kernels):
    """MLA, skewed MoE, gated delta-net and all-to-all rows from all three frameworks; the tables left
    out are counted under their reasons."""
    aic = kernels[kernels["source"] == "aiconfigurator"]
    assert {"mla_prefill", "mla_decode", "gdn", "alltoall", "moe_experts"} <= set(aic["op"])
    assert {"vllm", "sglang", "trtllm"} <= set(aic["framework"].str.split("-").str[0])
    assert {0.0, 1.01, 1.2} <= set(aic.loc[aic["op_kind"] == "moe", "routing_skew"].round(2))
    assert (aic["window"] > 0).any()
    rejected = read_report()["aiconfigurator"]["rejected"]
    assert {"module_table", "gdn_conv1d", "subsampled", "unsupported_table"} <= set(rejected)


@pytest.mark.slow
def test_features_are_finite_for_every_shipped_row(kernels):
    from features.builder import build_features

    X, ideal = build_features(kernels)
    assert np.isfinite(X.to_numpy()).all() and np.isfinite(ideal).all() and (ideal > 0).all()


def test_every_vidur_token_level_row_matches_the_op_path(kernels):
    """Each Vidur GEMM / elementwise / embedding row has the roofline of the same op in a prefill
    iteration of that many tokens built by predictor.ops.build_ops (one vectorised build per model × TP)."""
    vidur = kernels[(kernels["source"] == "vidur") & (kernels["model"] != "")
                    & ~kernels["op_kind"].isin(["attn_prefill", "attn_decode", "allreduce"])]
    mine = roofline(vidur)
    checked = 0
    for (model, tp, gpu), group in mine.groupby(["model", "tp", "gpu"], observed=True):
        tokens = np.sort(group["m"].unique())
        zeros = np.zeros_like(tokens)
        batch = BatchShape(prefill_seqs=np.ones_like(tokens), prefill_tokens=tokens, prefill_kv_tokens=tokens,
                           prefill_attention_pairs=tokens**2 / 2, prefill_score_elements=tokens**2,
                           decode_seqs=zeros, decode_context_tokens=zeros, sample_tokens=zeros)
        ops = roofline(build_ops(get_model(model), int(tp), parse_dtype("fp16"), batch), gpu)
        ops["m_tokens"] = tokens[ops["iteration"].to_numpy()]
        lookup = ops.set_index(["op", "m_tokens"])["ideal_ms"]
        names = group["op"].astype(str).map(lambda o: OP_ALIASES.get(o, o))
        expected = lookup.reindex(pd.MultiIndex.from_arrays([names, group["m"]])).to_numpy()
        np.testing.assert_allclose(group["ideal_ms"].to_numpy(), expected, rtol=1e-12)
        checked += len(group)
    assert checked == len(vidur) > 150_000
