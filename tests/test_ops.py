"""The op list of an iteration: which ops appear, their shapes under GQA, MoE, TP and quantisation."""

from __future__ import annotations

import pytest

from predictor.analysis import iteration_roofline
from predictor.batch import from_lists
from predictor.models import get_model
from predictor.ops import build_ops
from predictor.precision import parse_dtype


def ops_for(model, tp=1, dtype="fp16", prefill=(), decode=()):
    df = build_ops(get_model(model), tp, parse_dtype(dtype), from_lists(prefill, decode))
    return df.set_index("op")


def test_dense_layer_has_every_op_once_per_layer():
    ops = ops_for("llama-2-7b", prefill=[(16, 0)], decode=[100])
    expected = ["embedding", "input_norm", "qkv_proj", "rope", "attn_prefill", "attn_decode", "o_proj",
                "attn_residual_add", "post_attn_norm", "gate_up_proj", "act", "down_proj", "mlp_residual_add",
                "final_norm", "lm_head", "sampling"]
    assert list(ops.index) == expected  # no collectives at tp=1
    assert (ops.loc[expected[1:13], "count"] == 32).all()
    assert (ops.loc[["embedding", "final_norm", "lm_head", "sampling"], "count"] == 1).all()


def test_mixed_batch_shapes_llama_2_7b():
    ops = ops_for("llama-2-7b", prefill=[(16, 0)], decode=[100, 50])
    tokens = 16 + 2  # prefill tokens + one per decode sequence go through every linear layer
    assert tuple(ops.loc["qkv_proj", ["m", "n", "k"]]) == (tokens, 3 * 4096, 4096)
    assert tuple(ops.loc["gate_up_proj", ["m", "n", "k"]]) == (tokens, 2 * 11008, 4096)
    assert tuple(ops.loc["down_proj", ["m", "n", "k"]]) == (tokens, 4096, 11008)
    # lm_head only for tokens that sample: the prompt-completing chunk and the 2 decodes
    assert tuple(ops.loc["lm_head", ["m", "n", "k"]]) == (3, 32000, 4096)
    dec = ops.loc["attn_decode"]
    assert (dec["batch"], dec["kv_len"], dec["attn_pairs"]) == (2, (101 + 51) / 2, 152)
    pre = ops.loc["attn_prefill"]
    assert (pre["batch"], pre["q_tokens"], pre["attn_pairs"]) == (1, 16, 16 * 8)


def test_gqa_and_tp4_sharding_llama_2_70b():
    # 64 query heads, 8 KV heads, hidden 8192, MLP 28672 → per GPU at TP 4: 16 q heads, 2 KV heads
    ops = ops_for("llama-2-70b", tp=4, decode=[1000] * 4)
    assert tuple(ops.loc["qkv_proj", ["n", "k"]]) == ((16 + 2 * 2) * 128, 8192)
    assert tuple(ops.loc["o_proj", ["n", "k"]]) == (8192, 16 * 128)
    assert tuple(ops.loc["gate_up_proj", ["n", "k"]]) == (2 * 28672 / 4, 8192)
    assert tuple(ops.loc["down_proj", ["n", "k"]]) == (8192, 28672 / 4)
    assert tuple(ops.loc["attn_decode", ["heads", "kv_heads", "head_dim"]]) == (16, 2, 128)
    assert tuple(ops.loc["lm_head", ["n"]]) == (32000 / 4,)
    for op in ("attn_allreduce", "mlp_allreduce"):
        assert tuple(ops.loc[op, ["msg_bytes", "world_size", "count"]]) == (4 * 8192 * 2, 4, 80)
    assert ops.loc["logits_gather", "msg_bytes"] == 4 * 32000 * 2


def test_tp2_halves_gemm_flops_and_adds_two_allreduces_per_layer(reference_gpu):
    one, _ = iteration_roofline("llama-2-7b", reference_gpu, tp=1, decode=[512] * 8)
    two, _ = iteration_roofline("llama-2-7b", reference_gpu, tp=2, decode=[512] * 8)
    one, two = one.set_index("op"), two.set_index("op")
    assert two.loc["qkv_proj", "flops"] == one.loc["qkv_proj", "flops"] / 2
    assert two.loc["qkv_proj", "n"] == 3 * 4096 / 2
    assert {"attn_allreduce", "mlp_allreduce", "embedding_allreduce", "logits_gather"} <= set(two.index)


def test_kv_heads_replicated_beyond_their_count():
    ops = ops_for("llama-3-8b", tp=16, decode=[10])  # 32 heads / 16 = 2 q heads; 8 KV heads → 1 per GPU
    assert ops.loc["attn_decode", "kv_heads"] == 1
    assert ops.loc["qkv_proj", "n"] == (2 + 2 * 1) * 128


def test_moe_ops_mixtral_tp2():
    ops = ops_for("mixtral-8x7b", tp=2, decode=[10] * 3)
    assert "gate_up_proj" not in ops.index and "act" not in ops.index
    router = ops.loc["moe_router"]
    assert (router["m"], router["n"], router["k"], router["weight_bits"]) == (3, 8, 4096, 16)
    moe = ops.loc["moe_experts"]
    assert (moe["m"], moe["k"], moe["n"], moe["experts"], moe["experts_local"], moe["topk"]) == (3, 4096, 7168, 8, 8, 2)


def test_4bit_weights_only_quantise_linear_layers(reference_gpu):
    fp16, _ = iteration_roofline("llama-2-7b", reference_gpu, dtype="fp16", decode=[1])
    w4, _ = iteration_roofline("llama-2-7b", reference_gpu, dtype="w4a16", decode=[1])
    fp16, w4 = fp16.set_index("op"), w4.set_index("op")
    # qkv weights 4096·12288 at 0.5 byte instead of 2; activations (1 token in, 1 out) unchanged
    assert fp16.loc["qkv_proj", "bytes"] - w4.loc["qkv_proj", "bytes"] == 4096 * 12288 * 1.5
    assert w4.loc["lm_head", "bytes"] == fp16.loc["lm_head", "bytes"]  # lm_head stays 16-bit
    assert w4.loc["qkv_proj", "compute_dtype"] == "fp16"  # weight-only: fp16 tensor cores


def test_phi2_has_one_norm_and_one_residual_add_per_layer():
    ops = ops_for("phi-2", decode=[5])
    assert "post_attn_norm" not in ops.index and "attn_residual_add" not in ops.index
    assert ops.loc["act", "gated"] == 0
    assert ops.loc["rope", "n"] == (32 + 32) * 80 * 0.4  # partial rotary: 40% of head_dim 80


def test_naive_attention_option_costs_more_than_flash(reference_gpu):
    _, flash = iteration_roofline("llama-2-7b", reference_gpu, prefill=[(2048, 0)])
    _, naive = iteration_roofline("llama-2-7b", reference_gpu, prefill=[(2048, 0)], attention="naive")
    assert naive > flash


@pytest.mark.parametrize("bad", [[(0, 5)], [(-1, 0)], [(4, -2)], [(2.5, 0)], [("a", 0)], [(4,)]])
def test_bad_chunks_are_input_errors(bad):
    with pytest.raises(ValueError, match=r"prefill\[0\]"):
        from_lists(prefill=bad)


def test_decode_launches_count_every_kernel_of_one_decode_step():
    from predictor.ops import decode_launches
    from predictor.parallel import ParallelConfig

    model, fp16 = get_model("llama-2-7b"), parse_dtype("fp16")
    # 11 kernels per layer (2 norms, 4 projections, rope, attention, activation, 2 residual adds) + embedding,
    # final norm, lm_head and sampling: the same count as build_ops' decode-only op list
    assert decode_launches(model, 1, fp16, 1000) == 32 * 11 + 4
    assert decode_launches(model, 1, fp16, 1000) == ops_for("llama-2-7b", decode=[1000])["count"].sum()
    # TP adds an embedding all-reduce, two all-reduces per layer and the logits gather
    assert decode_launches(model, 2, fp16, 1000) == decode_launches(model, 1, fp16, 1000) + 2 * 32 + 2
    # two pipeline stages: each stage's kernels, run (micro-batches + stages − 1) times, as the breakdown counts
    pp2 = ParallelConfig(tp=1, pp=2)
    assert decode_launches(model, pp2, fp16, 1000) == pytest.approx(
        build_ops(model, pp2, fp16, from_lists([], [1000]))["count"].sum() * pp2.pipeline_factor)
