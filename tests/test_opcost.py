"""Per-op-kind FLOPs and bytes, each checked against arithmetic written out in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from predictor import opcost as oc
from predictor.roofline import roofline


def costs(**row):
    df = pd.DataFrame([row])
    out = oc.op_costs(df)
    return out["flops"][0], out["bytes"][0], out["link_bytes"][0]


def test_gemm_fp16():
    flops, nbytes, _ = costs(op_kind="gemm", m=4, n=8, k=16)
    assert flops == 2 * 4 * 8 * 16
    assert nbytes == 16 * 8 * 2 + 4 * 16 * 2 + 4 * 8 * 2  # weights + input + output = 448


def test_gemm_4bit_weights_quarter_the_weight_bytes():
    _, nbytes, _ = costs(op_kind="gemm", m=4, n=8, k=16, weight_bits=4)
    assert nbytes == 16 * 8 * 0.5 + 4 * 16 * 2 + 4 * 8 * 2  # 256


def test_attention_prefill_causal_with_cached_context_and_gqa():
    # 2 sequences, 4 new tokens each on top of 6 cached: kv_len = 10; 8 query heads, 2 KV heads, head_dim 16
    flops, nbytes, _ = costs(op_kind="attn_prefill", batch=2, q_tokens=4, kv_len=10, heads=8, kv_heads=2, head_dim=16)
    pairs = 2 * 4 * (6 + 4 / 2)  # Σ new·(context + new/2) = 64
    assert flops == 4 * 8 * 16 * pairs
    q_and_o = 2 * (2 * 4) * 8 * 16 * 2  # read Q, write O: 8 tokens × 8 heads × 16 × 2 bytes
    kv_read = 2 * (2 * 10) * 2 * 16 * 2  # K and V of 20 tokens, 2 KV heads (not 8)
    kv_write = 2 * (2 * 4) * 2 * 16 * 2  # new tokens' K and V into the cache
    assert nbytes == q_and_o + kv_read + kv_write == 7680


def test_attention_decode_reads_kv_heads_only():
    # 3 sequences, 4 cached tokens + the new one: kv_len = 5; 4 query heads
    for kv_heads in (4, 1):
        flops, nbytes, _ = costs(op_kind="attn_decode", batch=3, kv_len=5, heads=4, kv_heads=kv_heads, head_dim=8)
        assert flops == 4 * 4 * 8 * 15  # 15 query-key pairs
        assert nbytes == 2 * 3 * 4 * 8 * 2 + 2 * 15 * kv_heads * 8 * 2 + 2 * 3 * kv_heads * 8 * 2


def test_attention_fp8_kv_halves_kv_traffic():
    _, nbytes, _ = costs(op_kind="attn_decode", batch=3, kv_len=5, heads=4, kv_heads=4, head_dim=8, kv_bits=8)
    assert nbytes == 2 * 3 * 4 * 8 * 2 + 2 * 15 * 4 * 8 * 1 + 2 * 3 * 4 * 8 * 1


def test_naive_attention_adds_score_traffic():
    flash = costs(op_kind="attn_prefill", batch=1, q_tokens=4, kv_len=4, heads=2, kv_heads=2, head_dim=8)
    naive = costs(op_kind="attn_prefill", batch=1, q_tokens=4, kv_len=4, heads=2, kv_heads=2, head_dim=8,
                  naive_attention=1, score_elements=16)
    assert naive[0] == flash[0]
    assert naive[1] - flash[1] == 4 * 2 * 16 * 2  # write S, read S, write P, read P: 2 heads × 4×4 scores × 2 B


@pytest.mark.parametrize(
    ("kind", "gated", "flops", "nbytes"),
    [
        ("norm", 1, 15 * 4, 15 * 2 * 2),       # read + write 3×5 elements of 2 bytes
        ("add", 1, 15 * 1, 15 * 3 * 2),        # read 2, write 1
        ("rope", 1, 15 * 4, 15 * 2 * 2),
        ("act", 1, 15 * 5, 15 * 3 * 2),        # SiLU(gate)·up: read 2, write 1
        ("act", 0, 15 * 8, 15 * 2 * 2),        # GELU: read 1, write 1
        ("sampling", 1, 15 * 5, 15 * 3 * 4),   # fp32 logits read twice, written once
    ],
)
def test_elementwise_kinds(kind, gated, flops, nbytes):
    f, b, _ = costs(op_kind=kind, m=3, n=5, gated=gated)
    assert (f, b) == (flops, nbytes)


def test_embedding_reads_rows_not_the_table():
    f, b, _ = costs(op_kind="embedding", m=3, n=5)
    assert (f, b) == (0, 3 * 5 * 2 + 3 * 5 * 2)


def test_moe_expected_experts_and_work():
    # 4 tokens, hidden 8, expert width 16, 8 experts, top-2, all experts local, gated
    f, b, _ = costs(op_kind="moe", m=4, k=8, n=16, experts=8, experts_local=8, topk=2)
    assignments = 4 * 2
    touched = 8 * (1 - (1 - 2 / 8) ** 4)  # 5.46875 distinct experts expected
    assert f == 2 * assignments * 3 * 8 * 16
    weights = touched * 3 * 8 * 16 * 2
    acts = 2 * (3 * assignments * 8 + 2 * assignments * 16 * 3 + 4 * 8)
    assert b == pytest.approx(weights + acts)


def test_expert_parallel_shard_gets_its_share_of_assignments():
    f_all, _, _ = costs(op_kind="moe", m=64, k=8, n=16, experts=8, experts_local=8, topk=2)
    f_half, _, _ = costs(op_kind="moe", m=64, k=8, n=16, experts=8, experts_local=4, topk=2)
    assert f_half == f_all / 2


def test_collectives_ring_bytes():
    assert costs(op_kind="allreduce", msg_bytes=1000, world_size=4)[2] == 2 * 3 / 4 * 1000
    assert costs(op_kind="allgather", msg_bytes=1000, world_size=4)[2] == 3 / 4 * 1000
    assert costs(op_kind="allreduce", msg_bytes=1000, world_size=1)[2] == 0


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="op_kind: unknown value"):
        costs(op_kind="conv")


def test_roofline_times_and_bounds(round_gpu):
    ops = pd.DataFrame([
        dict(op_kind="gemm", compute_dtype="fp16", m=1024, n=1024, k=1024),
        dict(op_kind="gemm", compute_dtype="fp8", m=1024, n=1024, k=1024, weight_bits=8, act_bits=8),
        dict(op_kind="gemm", compute_dtype="fp16", m=1, n=1024, k=1024),
        dict(op_kind="allreduce", compute_dtype="fp16", msg_bytes=1e6, world_size=2),
    ])
    out = roofline(ops, round_gpu)
    flops = 2 * 1024**3
    assert out["compute_ms"][0] == pytest.approx(flops / 100e12 * 1e3)
    assert out["memory_ms"][0] == pytest.approx(3 * 1024**2 * 2 / 1000e9 * 1e3)
    assert out["bound"][0] == "compute" and out["ideal_ms"][0] == out["compute_ms"][0]
    assert out["compute_ms"][1] == pytest.approx(out["compute_ms"][0] / 2)  # fp8 peak is 2×
    assert out["bound"][2] == "memory"
    assert out["intensity"][2] == pytest.approx(2 * 1024 * 1024 / ((1024 * 1024 + 2 * 1024) * 2))
    # ring all-reduce on 2 GPUs: 2·(1/2)·1 MB over 100 GB/s + 10 us
    assert out["ideal_ms"][3] == pytest.approx(1e6 / 100e9 * 1e3 + 0.010)
    assert out["bound"][3] == "network"


def test_fp8_falls_back_to_fp16_peak_without_fp8_cores(reference_gpu):
    ops = pd.DataFrame([dict(op_kind="gemm", compute_dtype=d, m=4096, n=4096, k=4096) for d in ("fp16", "fp8")])
    out = roofline(ops, reference_gpu)
    assert np.isclose(out["compute_ms"][0], out["compute_ms"][1])
