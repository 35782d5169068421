"""AIConfigurator tables of today's kernels: MLA, skewed/quantised MoE, gated delta-net, all-to-all,
SGLang/TRT-LLM folders — each mapping checked on a hand-written row (fixtures as in
``test_ingest_aiconfigurator``; latencies a few times the roofline ideal)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.aic_common import subsample
from features.aic_today import routing_skew
from features.ingest_aiconfigurator import load_aiconfigurator
from features.schema import IngestReport
from tests.test_ingest_aiconfigurator import moe_row, one, write_table


def mla_row(heads=16, batch=2, isl=1024, step=0, tp=8, kv_dtype="bfloat16", latency=0.2) -> dict:
    return {"op_name": "mla", "kernel_source": "flashmla", "mla_dtype": "bfloat16", "kv_cache_dtype": kv_dtype,
            "num_heads": heads, "batch_size": batch, "isl": isl, "tp_size": tp, "step": step, "latency": latency}


def gdn_row(kernel="chunk_gated_delta_rule", phase="context", batch=2, seq_len=512, v_heads=32, k_heads=16,
            latency=0.3) -> dict:
    return {"op_name": "gdn", "kernel_source": kernel, "phase": phase, "batch_size": batch, "seq_len": seq_len,
            "num_tokens": batch * seq_len, "d_model": 4096, "d_conv": 4, "num_k_heads": k_heads,
            "head_k_dim": 128, "num_v_heads": v_heads, "head_v_dim": 128, "model_name": "Qwen/Qwen3.5-397B-A17B",
            "latency": latency}


def test_context_mla_is_decompressed_prefill(tmp_path):
    write_table(tmp_path, "h100_sxm", "mla", "0.14.0", "context_mla_perf", [mla_row()])
    df, report = load_aiconfigurator(tmp_path)
    row = one(df, op="mla_prefill")
    assert row.op_kind == "attn_prefill" and row.framework == "vllm-0.14.0"
    # 128 heads / TP 8 = 16 local heads, each its own K/V head; qk_nope 128 + rope 64 = 192; v 128
    assert (row.heads, row.kv_heads, row.head_dim, row.v_head_dim, row.latent_kv) == (16, 16, 192, 128, 0)
    assert (row.batch, row.q_tokens, row.kv_len, row.kv_bits, row.compute_dtype) == (2, 1024, 1024, 16, "bf16")
    assert row.shape_family == "mla_prefill:h16" and report.rejected == {}


def test_generation_mla_is_absorbed_decode_over_latent_kv(tmp_path):
    write_table(tmp_path, "h100_sxm", "mla", "0.5.10", "generation_mla_perf",
                [mla_row(heads=128, batch=4, isl=1, step=1023, tp=1, kv_dtype="fp8", latency=0.05)], runtime="sglang")
    df, _ = load_aiconfigurator(tmp_path)
    row = one(df, op="mla_decode")
    assert row.op_kind == "attn_decode" and row.framework == "sglang-0.5.10"
    # one latent of kv_lora_rank 512 + rope 64 = 576 per token serves as K and V; output width 512
    assert (row.heads, row.kv_heads, row.head_dim, row.v_head_dim, row.latent_kv) == (128, 1, 576, 512, 1)
    assert (row.batch, row.q_tokens, row.kv_len, row.kv_bits) == (4, 1, 1024, 8)
    assert row.shape_family == "mla_decode:h128"


def test_gdn_delta_rule_rows_become_linear_attention(tmp_path):
    write_table(tmp_path, "b200_sxm", "linear_attention", "0.24.0", "gdn_perf", [
        gdn_row(), gdn_row("fused_recurrent_gated_delta_rule_packed_decode", "generation", batch=8, seq_len=1,
                           latency=0.02),
        gdn_row("causal_conv1d_fn"), gdn_row("causal_conv1d_update", "generation", batch=8, seq_len=1)])
    df, report = load_aiconfigurator(tmp_path)
    prefill = one(df, batch=2.0)
    assert (prefill.op, prefill.op_kind) == ("gdn", "linear_attn")
    assert (prefill.q_tokens, prefill.heads, prefill.head_dim, prefill.v_head_dim) == (512, 32, 128, 128)
    assert (prefill.kv_heads, prefill.act_bits, prefill.compute_dtype) == (0, 16, "bf16")
    assert prefill.shape_family == "gdn:h32dk128dv128"
    decode = one(df, batch=8.0)
    assert decode.q_tokens == 1
    assert report.rejected == {"gdn_conv1d": 2}


def test_moe_routing_skew_from_distribution():
    got = routing_skew(pd.Series(["balanced", "power_law_1.01", "power_law_1.2", "zipf"]))
    assert got[:3].tolist() == [0.0, 1.01, 1.2] and np.isnan(got[3])


def test_moe_unknown_routing_counted_and_sglang_framework_kept(tmp_path):
    write_table(tmp_path, "h100_sxm", "moe", "0.5.10", "moe_perf", [
        moe_row(tokens=64, distribution="power_law_1.2"), moe_row(tokens=128, distribution="zipf")], runtime="sglang")
    df, report = load_aiconfigurator(tmp_path)
    row = one(df, m=64.0)
    assert (row.routing_skew, row.framework) == (1.2, "sglang-0.5.10")
    assert report.rejected == {"unknown_routing": 1}


def test_trtllm_custom_allreduce_without_capture_mode_is_counted(tmp_path):
    write_table(tmp_path, "h100_sxm", "comm", "1.3.0", "custom_allreduce_perf", [
        {"op_name": "all_reduce", "kernel_source": "TRTLLM", "allreduce_dtype": "bfloat16", "num_gpus": 2,
         "message_size": 4096, "latency": 0.02}], runtime="trtllm")
    df, report = load_aiconfigurator(tmp_path)
    assert len(df) == 0 and report.rejected == {"capture_mode_unknown": 1}


def test_subsample_is_uniform_seeded_and_counted():
    df = pd.DataFrame({"x": np.arange(10)})
    report = IngestReport()
    a = subsample(df, report, max_rows=4, seed=3)
    b = subsample(df, IngestReport(), max_rows=4, seed=3)
    assert len(a) == 4 and a.x.is_monotonic_increasing and a.x.tolist() == b.x.tolist()
    assert report.rejected == {"subsampled": 6}
    assert subsample(df, report, max_rows=10) is df and report.rejected == {"subsampled": 6}
