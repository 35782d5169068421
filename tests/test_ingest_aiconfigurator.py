"""AIConfigurator ingest: each table's mapping by hand, error messages, duplicates and reject counts.

Fixtures are tiny parquet files written into ``tmp_path`` in the upstream layout
``systems/data/<system>/<family>/vllm/<version>/<table>.parquet``. Latencies are a few times the
roofline ideal (validate() drops rows over 10x faster than it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.ingest_aiconfigurator import load_aiconfigurator
from features.schema import COLUMNS, IngestReport
from predictor.errors import InputError

REAL_ROOT = Path("/work/shared/data/aiconfigurator/systems")


def write_table(root: Path, system: str, family: str, version: str, table: str, rows: list[dict],
                runtime: str = "vllm", meta: bool = True) -> Path:
    """Write ``rows`` as ``<root>/data/<system>/<family>/<runtime>/<version>/<table>.parquet``."""
    folder = root / "data" / system / family / runtime / version
    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    if meta and len(df):
        df.insert(0, "framework", "VLLM")
        df.insert(1, "version", df.pop("version") if "version" in df else version)
    path = folder / f"{table}.parquet"
    df.to_parquet(path, index=False)
    return path


def gemm_row(dtype="bfloat16", m=128, n=4096, k=4096, latency=0.05, **extra) -> dict:
    return {"op_name": "gemm", "kernel_source": "vllm_default", "gemm_dtype": dtype, "m": m, "n": n, "k": k,
            "latency": latency, **extra}


def attn_row(batch=2, isl=1024, step=0, heads=32, kv_heads=8, head_dim=128, kv_dtype="bfloat16", latency=0.2,
             **extra) -> dict:
    return {"batch_size": batch, "isl": isl, "num_heads": heads, "num_key_value_heads": kv_heads,
            "head_dim": head_dim, "beam_width": 1, "attn_dtype": "bfloat16", "kv_cache_dtype": kv_dtype,
            "step": step, "latency": latency, **extra}


def moe_row(dtype="bfloat16", tokens=64, hidden=4096, inter=14336, topk=2, experts=8, tp=1, ep=1,
            distribution="balanced", latency=1.0) -> dict:
    return {"op_name": "moe", "kernel_source": "vllm_fused_moe", "moe_dtype": dtype, "num_tokens": tokens,
            "hidden_size": hidden, "inter_size": inter, "topk": topk, "num_experts": experts,
            "moe_tp_size": tp, "moe_ep_size": ep, "distribution": distribution, "latency": latency}


def nccl_row(op="all_reduce", dtype="half", gpus=2, size=1024, latency=0.02, **extra) -> dict:
    return {"op_name": op, "kernel_source": "NCCL", "nccl_dtype": dtype, "num_gpus": gpus,
            "message_size": size, "latency": latency, **extra}


def custom_row(backend="vllm_graph", gpus=2, size=4096, latency=0.02) -> dict:
    source = "vLLM_custom_graph" if backend == "vllm_graph" else "vLLM_custom_eager"
    return {"op_name": "all_reduce", "kernel_source": source, "allreduce_dtype": "bfloat16", "num_gpus": gpus,
            "message_size": size, "latency": latency, "backend": backend}


def one(df: pd.DataFrame, **where) -> pd.Series:
    """The single row of ``df`` matching ``where``."""
    sel = np.ones(len(df), dtype=bool)
    for col, value in where.items():
        sel &= (df[col] == value).to_numpy()
    assert sel.sum() == 1, f"{sel.sum()} rows match {where}"
    return df.loc[sel].iloc[0]


def test_gemm_dtypes_map_to_bits_and_compute_path(tmp_path):
    write_table(tmp_path, "h100_sxm", "gemm", "0.24.0", "gemm_perf", [
        gemm_row("bfloat16"), gemm_row("fp8", m=256), gemm_row("fp8_block", m=512), gemm_row("nvfp4")])
    df, report = load_aiconfigurator(tmp_path)
    assert list(df.columns) == list(COLUMNS) and len(df) == 2
    bf16 = one(df, m=128.0)
    assert (bf16.weight_bits, bf16.act_bits, bf16.compute_dtype) == (16, 16, "bf16")
    assert (bf16.n, bf16.k, bf16.measured_ms) == (4096, 4096, 0.05)
    fp8 = one(df, m=256.0)
    assert (fp8.weight_bits, fp8.act_bits, fp8.compute_dtype) == (8, 8, "fp8")
    assert set(df.op) == set(df.op_kind) == {"gemm"}
    assert set(df.gpu) == {"h100-sxm"} and set(df.source) == {"aiconfigurator"}
    assert set(df.framework) == {"vllm-0.24.0"} and set(df.model) == {""} and set(df.tp) == {1.0}
    assert set(df.shape_family) == {"gemm:n4096k4096"}
    # nvfp4 maps to w4a4 fp4, which the H100 cannot run natively: validation counts it
    assert report.rejected == {"dtype_not_native": 1, "block_scaled_fp8": 1} and report.kept == 2


def test_nvfp4_on_an_fp4_gpu_is_w4a4_fp4(tmp_path):
    write_table(tmp_path, "b200_sxm", "gemm", "0.24.0", "gemm_perf", [gemm_row("nvfp4", m=1024)])
    df, report = load_aiconfigurator(tmp_path)
    row = one(df, m=1024.0)
    assert (row.weight_bits, row.act_bits, row.compute_dtype) == (4, 4, "fp4") and report.rejected == {}


def test_block_scaled_fp8_is_the_fp8_path_of_a_file_without_per_tensor_fp8(tmp_path):
    write_table(tmp_path, "h100_sxm", "gemm", "0.5.10", "gemm_perf",
                [gemm_row("bfloat16"), gemm_row("fp8_block", m=512)], runtime="sglang")
    df, report = load_aiconfigurator(tmp_path)
    block = one(df, m=512.0)
    assert (block.weight_bits, block.act_bits, block.compute_dtype) == (8, 8, "fp8")
    assert block.framework == "sglang-0.5.10" and report.rejected == {}


def test_framework_from_version_folder(tmp_path):
    write_table(tmp_path, "b200_sxm", "gemm", "0.24.0", "gemm_perf",
                [gemm_row(version="0.1.dev1"), gemm_row(m=256, version="")])
    write_table(tmp_path, "b200_sxm", "gemm", "0.19.0", "gemm_perf", [gemm_row(m=512)], meta=False)
    df, _ = load_aiconfigurator(tmp_path)
    assert one(df, m=128.0).framework == "vllm-0.24.0"  # a preview build measured it; the folder names the release
    assert one(df, m=256.0).framework == "vllm-0.24.0"
    assert one(df, m=512.0).framework == "vllm-0.19.0"
    assert set(df.gpu) == {"b200"}


def test_context_attention_kv_bits_and_windows_kept(tmp_path):
    write_table(tmp_path, "h100_sxm", "attention", "0.24.0", "context_attention_perf", [
        attn_row(batch=2, isl=1024, window_size=0),
        attn_row(batch=3, isl=1024, window_size=128),
        attn_row(batch=4, isl=1024, window_size=8192),
    ])
    df, report = load_aiconfigurator(tmp_path)
    full = one(df, batch=2.0)
    assert full.op == full.op_kind == "attn_prefill"
    assert (full.q_tokens, full.kv_len, full.heads, full.kv_heads, full.head_dim) == (1024, 1024, 32, 8, 128)
    assert np.isnan(full.attn_pairs) and full.kv_bits == 16 and full.compute_dtype == "bf16"
    assert full.shape_family == "attn:h32kv8d128w0" and full.window == 0
    windowed = one(df, batch=3.0)
    assert (windowed.window, windowed.q_tokens, windowed.kv_len) == (128, 1024, 1024)
    assert windowed.shape_family == "attn:h32kv8d128w128"
    assert report.kept == 3 and report.rejected == {}


def test_context_attention_without_window_column(tmp_path):
    """0.14.0 files have no window_size column: full attention."""
    write_table(tmp_path, "a100_sxm", "attention", "0.14.0", "context_attention_perf", [attn_row()])
    df, _ = load_aiconfigurator(tmp_path)
    assert len(df) == 1 and np.isnan(df.attn_pairs[0]) and df.gpu[0] == "a100-80gb"


def test_fp8_kv_cache_bits(tmp_path):
    write_table(tmp_path, "h100_sxm", "attention", "0.24.0", "context_attention_perf",
                [attn_row(batch=3, isl=1024, window_size=0, kv_dtype="fp8")])
    df, _ = load_aiconfigurator(tmp_path)
    assert (df.kv_bits[0], df.act_bits[0]) == (8, 16)


def test_generation_attention_kv_len_window_and_beam(tmp_path):
    write_table(tmp_path, "h100_sxm", "attention", "0.24.0", "generation_attention_perf", [
        attn_row(batch=8, isl=1, step=255, window_size=0, latency=0.02),
        attn_row(batch=16, isl=1, step=8191, window_size=128, latency=0.02),
        attn_row(batch=32, isl=1, step=255, window_size=0, latency=0.02, beam_width=2),
    ])
    df, report = load_aiconfigurator(tmp_path)
    row = one(df, batch=8.0)
    assert row.op == row.op_kind == "attn_decode"
    assert (row.q_tokens, row.kv_len, row.window) == (1, 256, 0) and np.isnan(row.attn_pairs)
    windowed = one(df, batch=16.0)
    assert (windowed.kv_len, windowed.window) == (8192, 128)
    assert report.rejected == {"unsupported_beam": 1}


def test_nccl_message_bytes_ops_and_repeats(tmp_path):
    write_table(tmp_path, "a100_sxm", "comm", "2.27.3", "nccl_perf", [
        nccl_row("all_reduce", "half", gpus=2, size=1024),
        nccl_row("all_reduce", "int8", gpus=4, size=1024),
        nccl_row("all_gather", "half", gpus=8, size=4096, latency=0.03),
        nccl_row("reduce_scatter", "half"), nccl_row("alltoall", "half"),
        # a repeated sweep recorded under another NCCL version: same key, averaged
        nccl_row("all_reduce", "half", gpus=2, size=1024, latency=0.04, version="2.29.2"),
    ], runtime="nccl")
    df, report = load_aiconfigurator(tmp_path)
    half = one(df, op="allreduce", world_size=2.0)
    assert (half.msg_bytes, half.act_bits, half.compute_dtype) == (2048, 16, "fp16")
    assert half.measured_ms == pytest.approx(0.03) and half.framework == "nccl-2.27.3"
    assert half.shape_family == "allreduce:w2"
    int8 = one(df, op="allreduce", world_size=4.0)
    assert (int8.msg_bytes, int8.act_bits) == (1024, 8)
    gather = one(df, op="allgather")
    assert (gather.op_kind, gather.msg_bytes, gather.shape_family) == ("allgather", 8192, "allgather:w8")
    a2a = one(df, op="alltoall")  # 1024 half elements per GPU's send buffer
    assert (a2a.op_kind, a2a.msg_bytes, a2a.world_size, a2a.shape_family) == ("alltoall", 2048, 2, "alltoall:w2")
    assert report.rejected == {"unsupported_collective": 1} and report.merged_duplicates == 1


def test_nccl_without_version_columns(tmp_path):
    """h100 nccl 2.23 has no framework/version/device columns: the folder names the version."""
    write_table(tmp_path, "h100_sxm", "comm", "2.23", "nccl_perf", [nccl_row("all_gather")],
                runtime="nccl", meta=False)
    df, _ = load_aiconfigurator(tmp_path)
    assert df.framework.tolist() == ["nccl-2.23"]


def test_custom_allreduce_keeps_graph_rows(tmp_path):
    write_table(tmp_path, "l40s", "comm", "0.14.0", "custom_allreduce_perf", [
        custom_row("vllm_graph", gpus=4, size=4096), custom_row("vllm_eager", gpus=4, size=4096, latency=0.06),
        custom_row("vllm_eager", gpus=2, size=4096, latency=0.06)])
    df, report = load_aiconfigurator(tmp_path)
    row = one(df, op="allreduce")
    assert (row.op_kind, row.msg_bytes, row.world_size, row.compute_dtype) == ("allreduce", 8192, 4, "bf16")
    assert (row.framework, row.shape_family, row.gpu) == ("vllm-custom-0.14.0", "allreduce:w4", "l40s")
    assert report.rejected == {"eager_mode": 2}


def test_moe_shards_dtypes_and_routing(tmp_path):
    write_table(tmp_path, "h100_sxm", "moe", "0.24.0", "moe_perf", [
        moe_row("bfloat16", tokens=64, tp=2, ep=4),
        moe_row("fp8", tokens=128), moe_row("fp8_block", tokens=1024),
        moe_row("int4_wo", tokens=256),
        moe_row("nvfp4", tokens=512), moe_row("w4a8_mxfp4_mxfp8", tokens=512),
        moe_row("bfloat16", tokens=64, distribution="power_law_1.01"),
    ])
    df, report = load_aiconfigurator(tmp_path)
    row = one(df, m=64.0, routing_skew=0.0)
    assert (row.op, row.op_kind, row.k, row.n) == ("moe_experts", "moe", 4096, 14336 / 2)
    assert (row.experts, row.experts_local, row.topk, row.gated) == (8, 2, 2, 1)
    assert (row.weight_bits, row.act_bits, row.compute_dtype) == (16, 16, "bf16")
    assert row.shape_family == "moe:h4096i14336e8k2"
    fp8 = one(df, m=128.0)
    assert (fp8.weight_bits, fp8.act_bits, fp8.compute_dtype, fp8.n, fp8.experts_local) == (8, 8, "fp8", 14336, 8)
    int4 = one(df, m=256.0)
    assert (int4.weight_bits, int4.act_bits, int4.compute_dtype) == (4, 16, "bf16")
    skewed = one(df, m=64.0, routing_skew=1.01)
    assert (skewed.n, skewed.experts_local, skewed.weight_bits) == (14336, 8, 16)
    assert one(df, m=64.0, routing_skew=0.0).n == 14336 / 2
    w4a8 = one(df, m=512.0, compute_dtype="fp8")
    assert (w4a8.weight_bits, w4a8.act_bits) == (4, 8)
    # nvfp4 is w4a4 fp4: not native on the H100, counted by validation
    assert report.rejected == {"dtype_not_native": 1, "block_scaled_fp8": 1}


def test_unsupported_tables_counted_and_reasons_summed(tmp_path):
    write_table(tmp_path, "h100_sxm", "mla", "0.24.0", "mla_context_module_perf",
                [{"model": "deepseek-ai/DeepSeek-V3", "batch_size": b, "latency": 1.0} for b in (1, 2, 3)])
    write_table(tmp_path, "h100_sxm", "quantize", "0.24.0", "computescale_perf",
                [{"m": 1, "k": 1, "latency": 0.0}])
    write_table(tmp_path, "h100_sxm", "gemm", "0.24.0", "gemm_perf",
                [gemm_row(), gemm_row("nvfp4"), gemm_row("nvfp4", m=2)])
    df, report = load_aiconfigurator(tmp_path)
    assert len(df) == 1
    assert report.to_dict() == {"kept": 1, "merged_duplicates": 0,
                                "rejected": {"dtype_not_native": 2, "module_table": 3,
                                             "unsupported_table": 1}}


def test_duplicate_keys_are_averaged(tmp_path):
    write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [
        gemm_row(m=4096, n=4096, k=4096, latency=1.0), gemm_row(m=4096, n=4096, k=4096, latency=3.0)])
    df, report = load_aiconfigurator(tmp_path)
    assert len(df) == 1 and df.measured_ms[0] == pytest.approx(2.0)
    assert report.merged_duplicates == 1 and report.kept == 1


def test_report_is_accumulated(tmp_path):
    write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [gemm_row(), gemm_row("nvfp4")])
    report = IngestReport(kept=5)
    _, out = load_aiconfigurator(tmp_path, report=report)
    assert out is report and report.kept == 6 and report.rejected == {"dtype_not_native": 1}


def test_root_may_be_systems_data_or_one_system(tmp_path):
    write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [gemm_row()])
    write_table(tmp_path, "l40s", "gemm", "0.14.0", "gemm_perf", [gemm_row()])
    both = load_aiconfigurator(tmp_path)[0]
    assert sorted(both.gpu) == ["a100-80gb", "l40s"]
    pd.testing.assert_frame_equal(load_aiconfigurator(tmp_path / "data")[0], both)
    single = load_aiconfigurator(tmp_path / "data" / "l40s")[0]
    assert single.gpu.tolist() == ["l40s"]


def test_unknown_system_folder_is_named(tmp_path):
    write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [gemm_row()])
    write_table(tmp_path, "mi355x", "gemm", "0.14.0", "gemm_perf", [gemm_row()])
    with pytest.raises(InputError, match=r"mi355x.*allowed: a100_sxm, b200_sxm, b300_sxm, b60, gb200, gb300, "
                                         r"h100_sxm, h200_sxm, l40s, rtx_pro_6000_server") as err:
        load_aiconfigurator(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_column_names_file_and_column(tmp_path):
    row = gemm_row()
    del row["k"]
    path = write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [row])
    with pytest.raises(InputError, match="missing column 'k'") as err:
        load_aiconfigurator(tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_non_numeric_column_is_an_error(tmp_path):
    path = write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [gemm_row(m="big")])
    with pytest.raises(InputError, match="column 'm' must be numeric") as err:
        load_aiconfigurator(tmp_path)
    assert str(path) in str(err.value)


def test_unreadable_parquet_is_named(tmp_path):
    path = write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [gemm_row()])
    path.write_bytes(b"this is not parquet")
    with pytest.raises(InputError, match="cannot be read as parquet") as err:
        load_aiconfigurator(tmp_path)
    assert str(path) in str(err.value)


def test_unreadable_unsupported_table_is_named(tmp_path):
    path = write_table(tmp_path, "a100_sxm", "mla", "0.14.0", "context_mla_perf", [{"latency": 1.0}])
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot be read as parquet"):
        load_aiconfigurator(tmp_path)


def test_empty_parquet_is_skipped(tmp_path):
    write_table(tmp_path, "a100_sxm", "gemm", "0.14.0", "gemm_perf", [])
    write_table(tmp_path, "a100_sxm", "attention", "0.14.0", "context_attention_perf", [])
    df, report = load_aiconfigurator(tmp_path)
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)
    assert report.to_dict() == {"kept": 0, "merged_duplicates": 0, "rejected": {}}


def test_bad_roots(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_aiconfigurator(tmp_path / "nope")
    with pytest.raises(InputError, match="holds no system folders"):
        load_aiconfigurator(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        load_aiconfigurator(tmp_path / "file.txt")


@pytest.mark.slow
def test_real_aiconfigurator_data():
    if not REAL_ROOT.is_dir():
        pytest.skip(f"{REAL_ROOT} not present")
    start = time.perf_counter()
    df, report = load_aiconfigurator(REAL_ROOT)
    elapsed = time.perf_counter() - start
    assert elapsed < 180
    assert {"a100-80gb", "h100-sxm", "l40s", "b200"} <= set(df.gpu)
    assert set(df.op_kind) == {"gemm", "attn_prefill", "attn_decode", "moe", "allreduce", "allgather", "alltoall",
                               "linear_attn"}
    assert {"mla_prefill", "mla_decode", "gdn"} <= set(df.op)
    assert {"vllm", "sglang", "trtllm", "nccl"} == set(df.framework.str.split("-").str[0])
    assert 1_000_000 < len(df) < 3_000_000
    counts = df.groupby(["gpu", "op_kind"]).size()
    assert counts["a100-80gb", "moe"] > 1_000  # A100's power-law routing sweeps are kept now
    assert counts["h100-sxm", "gemm"] > 50_000 and counts["b200", "gemm"] > 50_000
    assert set(df.routing_skew[df.op_kind == "moe"].round(2)) == {0.0, 1.01, 1.2}
    assert report.rejected["module_table"] > 100_000 and report.rejected["subsampled"] > 1_000_000
    assert report.rejected.get("faster_than_roofline", 0) < 0.001 * len(df)
    assert df.measured_ms.gt(0).all() and df.shape_family.ne("").all()
    print(f"\nloaded {len(df)} rows in {elapsed:.1f} s; {report.to_dict()}\n{counts.to_string()}")


def test_tables_marked_partial_are_rejected(tmp_path):
    """A table its collection_meta.yaml marks partial is an interrupted sweep: counted, not loaded."""
    path = write_table(tmp_path, "h100_sxm", "gemm", "0.14.0", "gemm_perf", [gemm_row(m=64), gemm_row(m=128)])
    write_table(tmp_path, "h100_sxm", "attention", "0.14.0", "context_attention_perf", [attn_row()])
    (path.parent / "collection_meta.yaml").write_text(
        "schema_version: 1\ntables:\n  gemm_perf:\n    status: partial\n  other_perf:\n    status: complete\n")
    df, report = load_aiconfigurator(tmp_path)
    assert set(df.op_kind) == {"attn_prefill"}
    assert report.rejected == {"partial_table": 2}
    (path.parent / "collection_meta.yaml").write_text("tables:\n  gemm_perf:\n    status: complete\n")
    df, report = load_aiconfigurator(tmp_path)
    assert set(df.op_kind) == {"attn_prefill", "gemm"} and "partial_table" not in report.rejected
    (path.parent / "collection_meta.yaml").write_text("tables: [unclosed\n")
    with pytest.raises(InputError, match="collection_meta.yaml.*YAML"):
        load_aiconfigurator(tmp_path)
