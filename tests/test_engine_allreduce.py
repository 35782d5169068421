"""The residual model's all-reduce is the serving frameworks' (custom all-reduce), not a bare NCCL call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.canonical import load_kernels
from predictor import Predictor
from training.dataset import engine_allreduce_rows


def _rows(gpu: str, framework: str, op: str = "allreduce") -> dict:
    return {"gpu": gpu, "framework": framework, "op": op, "measured_ms": 0.01}


def test_nccl_allreduce_rows_leave_only_where_a_framework_allreduce_was_measured():
    table = pd.DataFrame([
        _rows("h100-sxm", "nccl-2.27.3"), _rows("h100-sxm", "vllm-custom-0.19.0"),
        _rows("h100-sxm", "nccl-2.27.3", "allgather"),  # no framework variant: kept
        _rows("a40", "nccl"),  # no framework all-reduce measured on this GPU: kept
        _rows("h100-sxm", "vllm-0.19.0", "gemm"),
    ])
    kept = engine_allreduce_rows(table)
    assert list(kept.index) == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def kernels() -> pd.DataFrame:
    return load_kernels()


def test_shipped_tables_keep_framework_allreduce_on_every_gpu_that_has_it(kernels):
    kept = engine_allreduce_rows(kernels)
    allreduce = kept[kept["op"] == "allreduce"]
    custom = allreduce["framework"].astype(str).str.contains("-custom-")
    assert custom.any()
    assert set(allreduce.loc[~custom, "gpu"].astype(str)).isdisjoint(set(allreduce.loc[custom, "gpu"].astype(str)))
    # nothing else is touched
    others = kernels["op"] != "allreduce"
    assert int(others.sum()) == int((kept["op"] != "allreduce").sum())


def test_shipped_small_allreduce_is_near_the_framework_measurement(kernels):
    """A decode step's 64 KiB all-reduce at 8 GPUs: within 1.6x of the median framework measurement on each GPU
    that has one, and clearly below the median nccl-tests time (the shipped model learned the engines' collective)."""
    ar = kernels[(kernels["op"] == "allreduce") & (kernels["world_size"] == 8) & (kernels["msg_bytes"] == 65536)]
    predictor = Predictor.load()
    batch = 4  # 4 decode tokens × hidden 8192 × 2 bytes = 64 KiB per all-reduce
    for gpu in ("h100-sxm", "b200"):
        rows = ar[ar["gpu"] == gpu]
        custom = rows["framework"].astype(str).str.contains("-custom-")
        framework_ms, nccl_ms = float(np.median(rows.loc[custom, "measured_ms"])), float(
            np.median(rows.loc[~custom, "measured_ms"]))
        ops = predictor.predict_iteration("llama-3.1-70b", gpu, 8, "fp8", decode=[1500] * batch).ops
        per_call_ms = float(ops.loc[ops["op"] == "attn_allreduce", "predicted_ms"].iloc[0])
        assert framework_ms / 1.6 <= per_call_ms <= framework_ms * 1.6, (gpu, per_call_ms, framework_ms)
        assert per_call_ms < 0.6 * nccl_ms, (gpu, per_call_ms, nccl_ms)
