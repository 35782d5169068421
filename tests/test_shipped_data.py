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
    assert set(kernels["gpu"]) == {"a100-80gb", "h100-sxm", "a40", "l40s", "b200"}


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
