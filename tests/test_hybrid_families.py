"""Nemotron-H / Nemotron-3 (Mamba-2 mixers, attention, ReLU² MLP or latent MoE, one per block), Step-3.7-Flash and
MiMo-7B: parameter counts against published totals, the block structure, Mamba-2 state and op shapes by hand."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from predictor import Predictor
from predictor.batch import from_lists
from predictor.errors import InputError
from predictor.gpus import get_gpu
from predictor.memory import plan_memory
from predictor.models import catalogue_config, get_model, parse_hf_config
from predictor.ops import build_ops
from predictor.parallel import ParallelConfig
from predictor.precision import parse_dtype

FP16, FP8 = parse_dtype("fp16"), parse_dtype("fp8")

# Published totals in billions (the names carry them; NVIDIA's Nano card gives 31.6B total, 3.6B active with the
# embeddings; StepFun's Step-3.5/3.7-Flash: 196B total, 11B active).
PUBLISHED_TOTAL_B = {"nemotron-3-nano-30b-a3b": 31.6, "nemotron-3-super-120b-a12b": 120,
                     "nemotron-3-ultra-550b-a55b": 550, "nemotron-h-56b": 56, "step-3.7-flash": 196}
PUBLISHED_ACTIVE_B = {"nemotron-3-nano-30b-a3b": 3.6, "step-3.7-flash": 11}


def ops_for(name, tp=1, dtype=FP16, prefill=(), decode=()):
    return build_ops(get_model(name), tp, dtype, from_lists(prefill, decode)).set_index("op")


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTAL_B))
def test_total_parameters_within_one_percent_of_published(name):
    assert get_model(name).param_count() / 1e9 == pytest.approx(PUBLISHED_TOTAL_B[name], rel=0.01)


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE_B))
def test_active_parameters_within_two_percent_of_published(name):
    assert get_model(name).active_param_count() / 1e9 == pytest.approx(PUBLISHED_ACTIVE_B[name], rel=0.02)


def test_nemotron_blocks_become_mixers_and_mlp_blocks():
    nano = get_model("nemotron-3-nano-30b-a3b")  # 52 blocks: 23 Mamba-2, 6 attention, 23 MoE
    assert nano.attention_layer_counts() == {"linear": 23, "full": 6} and nano.num_layers == 29
    assert nano.mlp_layer_count == nano.moe_layer_count == 23 and nano.dense_layer_count == 0
    assert nano.layer_norm_count == 52 and not nano.gated_mlp and nano.activation == "relu2"
    dense = get_model("nemotron-h-56b")  # 118 blocks: 54 Mamba-2, 10 attention, 54 MLP
    assert dense.attention_layer_counts() == {"linear": 54, "full": 10}
    assert dense.dense_layer_count == 54 and dense.moe_layer_count == 0 and dense.layer_norm_count == 118


def test_the_two_spellings_of_the_block_pattern_agree():
    base = {"model_type": "nemotron_h", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 64, "intermediate_size": 512, "vocab_size": 1000, "n_groups": 2, "ssm_state_size": 16,
            "mamba_num_heads": 8, "mamba_head_dim": 32}
    letters = parse_hf_config({**base, "hybrid_override_pattern": "M-M*-"})
    words = parse_hf_config({**base, "layers_block_type": ["mamba", "mlp", "mamba", "attention", "mlp"]})
    assert letters.param_count() == words.param_count()
    assert letters.attention_layer_counts() == {"linear": 2, "full": 1} and letters.dense_layer_count == 2
    with pytest.raises(InputError, match="hybrid_override_pattern.*'X'.*allowed"):
        parse_hf_config({**base, "hybrid_override_pattern": "MX"})
    with pytest.raises(InputError, match="num_hidden_layers"):
        parse_hf_config({**base, "hybrid_override_pattern": "M-", "num_hidden_layers": 3})


def test_mamba_state_by_hand():
    nano = get_model("nemotron-3-nano-30b-a3b")
    mamba = nano.linear_attention  # 64 heads × head_dim 64, d_state 128, 8 groups, conv kernel 4
    conv_channels = 64 * 64 + 2 * 8 * 128
    per_layer = 64 * 128 * 64 * 4 + conv_channels * 3 * 2  # fp32 state + the last 3 conv inputs at 16 bits
    assert mamba.state_bytes_per_seq() == per_layer
    assert nano.per_sequence_cache_bytes() == 23 * per_layer
    assert nano.kv_cache_bytes_per_token() == 6 * 2 * 2 * 128 * 2  # only the attention blocks cache tokens


def test_mamba_ops_by_hand():
    ops = ops_for("nemotron-3-nano-30b-a3b", tp=2, decode=[1000] * 4)
    inner, groups_state = 64 * 64, 8 * 128
    assert ops.loc["mamba_in_proj", "n"] == (2 * inner + 2 * groups_state + 64) / 2
    assert ops.loc["mamba_in_proj", "count"] == 23 and ops.loc["attn_decode", "count"] == 6
    assert ops.loc["linear_attn_decode", "heads"] == 32  # Mamba heads split over TP
    assert ops.loc["post_attn_norm", "count"] == ops.loc["mlp_residual_add", "count"] == 23
    assert ops.loc["input_norm", "count"] == ops.loc["attn_residual_add", "count"] == 29
    assert "gdn_in_proj" not in ops.index and "gdn_in_proj" in ops_for("qwen3.5-397b-a17b", 8, decode=[10]).index


def test_latent_moe_routes_tokens_at_the_latent_width():
    ops = ops_for("nemotron-3-super-120b-a12b", tp=8, dtype=FP8, decode=[2000] * 8)
    assert ops.loc["moe_experts", "k"] == 1024 and ops.loc["moe_experts", "gated"] == 0
    assert ops.loc["moe_latent_down_proj", ["n", "k"]].tolist() == [1024, 4096]
    assert ops.loc["moe_latent_up_proj", ["n", "k"]].tolist() == [4096, 1024]
    par = ParallelConfig(tp=1, dp_attention=8, ep=8)
    a2a = build_ops(get_model("nemotron-3-super-120b-a12b"), par, FP8, from_lists([], [2000] * 8)).set_index("op")
    assert a2a.loc["moe_dispatch", "msg_bytes"] == 1 * 22 * 1024 * 2  # one local token × top-22 × latent × 2 bytes
    nano = ops_for("nemotron-3-nano-30b-a3b", decode=[100])
    assert "moe_latent_down_proj" not in nano.index and nano.loc["moe_experts", "k"] == 2688


def test_memory_counts_every_weight_once():
    model = get_model("nemotron-3-super-120b-a12b")
    plan = plan_memory(model, get_gpu("h100-sxm"), 8, FP8)
    # fp8 linears plus 16-bit embeddings, lm_head, router and norms: between 1 and 1.1 bytes per parameter
    assert 1.0 < plan.weights_bytes * 8 / model.param_count() < 1.1


def test_step_layers_and_shared_expert():
    step = get_model("step-3.7-flash")
    assert step.attention_layer_counts() == {"full": 12, "sliding": 33} and step.sliding_window == 512
    assert step.moe_layer_count == 42 and step.dense_layer_count == 3 and step.shared_expert_intermediate_size == 1280
    ops = ops_for("step-3.7-flash", tp=8, decode=[4000] * 2)
    assert ops.loc["sliding_attn_decode", "window"] == 512 and ops.loc["sliding_attn_decode", "attn_pairs"] == 2 * 512


def test_mimo_is_a_qwen2_style_decoder_with_qkv_bias():
    mimo = get_model("XiaomiMiMo/MiMo-7B-Base")
    assert mimo.name == "mimo-7b" and mimo.qkv_bias and mimo.attention_layer_counts() == {"full": 36}


@pytest.mark.parametrize("name,tp", [("nemotron-3-nano-30b-a3b", 2), ("step-3.7-flash", 8), ("deepseek-v4-flash", 8)])
def test_predictor_tables_serve_the_new_families(name, tp):
    p = Predictor.roofline_only()
    fast = p.predict_iteration(name, "h100-sxm", tp, "fp8", prefill=[(512, 0)], decode=[2000] * 8)
    assert fast.kernel_ms == pytest.approx(fast.ops["total_ms"].sum(), rel=0.03)
    assert np.isfinite(fast.total_ms) and isinstance(fast.ops, pd.DataFrame)


def test_minimax_m3_block_sparse_layers():
    m3 = get_model("minimax-m3")
    assert m3.attention_layer_counts() == {"full": 3, "sparse": 57} and m3.dense_layer_count == 3
    assert m3.sparse_index.topk == (16 + 1) * 128  # top-16 blocks plus the local block, of 128 tokens
    # every layer caches K and V (4 heads × 128, 2 bytes); the 57 sparse layers also the indexer's 128-wide key
    assert m3.kv_cache_bytes_per_token() == 60 * 2 * 4 * 128 * 2 + 57 * 128 * 2
    ops = ops_for("minimax-m3", tp=8, dtype=FP8, decode=[100_000] * 2)
    every_key = 2 * 100_001  # each decode attends its cached context and its own new token
    assert ops.loc["sparse_attn_decode", "attn_pairs"] == 2 * 2176 and ops.loc["attn_decode", "attn_pairs"] == every_key
    assert ops.loc["sparse_index_decode", "attn_pairs"] == every_key and ops.loc["sparse_index_decode", "count"] == 57
    assert ops.loc["sparse_index_q_proj", ["n", "k"]].tolist() == [4 * 128, 6144]
    assert get_model("nvidia/MiniMax-M3-NVFP4").param_count() == m3.param_count()  # the multimodal wrapper's text model


def test_minimax_m3_bad_per_layer_lists_name_the_key():
    cfg = catalogue_config("minimax-m3")
    cfg["sparse_attention_config"]["sparse_attention_freq"] = [1] * 59
    with pytest.raises(InputError, match="sparse_attention_freq.*60 layers"):
        parse_hf_config(cfg)
    with pytest.raises(InputError, match="text_config"):
        parse_hf_config({"model_type": "minimax_m3_vl"})


@pytest.mark.parametrize("name,total_b,active_b", [("gemma-4-26b-a4b", 25.2, 3.8), ("gemma-4-31b", 30.7, 30.7)])
def test_gemma4_parameters_match_the_model_card(name, total_b, active_b):
    m = get_model(name)  # Google's Gemma 4 card: 26B A4B = 25.2B total, 3.8B active; 31B = 30.7B
    assert m.param_count() / 1e9 == pytest.approx(total_b, rel=0.01)
    assert m.active_param_count() / 1e9 == pytest.approx(active_b, rel=0.01)


def test_gemma4_full_layers_have_their_own_shape_and_cache_keys_only():
    m = get_model("gemma-4-26b-a4b")  # sliding: 8 KV heads × 256; full: 2 KV heads × 512, values = keys
    assert m.attention_layer_counts() == {"sliding": 25, "full": 5} and m.sliding_window == 1024
    assert m.kv_cache_bytes_per_token() == 5 * 1 * 2 * 512 * 2
    assert m.per_sequence_cache_bytes() == 25 * 1024 * 2 * 8 * 256 * 2
    ops = ops_for("gemma-4-26b-a4b", tp=2, decode=[5000] * 4)
    assert ops.loc["global_qkv_proj", "n"] == (8 * 512 + 1 * 512) and ops.loc["global_qkv_proj", "count"] == 5
    assert ops.loc["qkv_proj", "n"] == (8 * 256 + 2 * 4 * 256) and ops.loc["qkv_proj", "count"] == 25
    assert ops.loc["attn_decode", ["head_dim", "kv_heads", "latent_kv"]].tolist() == [512, 1, 1]
    assert ops.loc["sliding_attn_decode", ["head_dim", "kv_heads", "latent_kv"]].tolist() == [256, 4, 0]
    assert ops.loc["shared_gate_up_proj", "n"] == 2 * 2112 / 2 and ops.loc["moe_experts", "topk"] == 8
    odd = parse_hf_config({"model_type": "gemma4_text", "hidden_size": 768, "num_attention_heads": 12,
                           "num_key_value_heads": 4, "num_global_key_value_heads": 3, "head_dim": 64,
                           "global_head_dim": 128, "intermediate_size": 1024, "vocab_size": 1000,
                           "num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"]})
    odd.check_tp(1)
    with pytest.raises(InputError, match=r"--tp: 2 neither divides .* 4 KV heads \(3 in its full layers\); allowed"):
        odd.check_tp(2)  # divides the sliding layers' 4 KV heads but not the full layers' 3


def test_llama_nemotron_super_blocks():
    m = get_model("nvidia/Llama-3_3-Nemotron-Super-49B-v1")  # NVIDIA's card: 49.9B parameters
    assert m.name == "llama-3.3-nemotron-super-49b" and m.param_count() / 1e9 == pytest.approx(49.9, rel=0.01)
    assert m.attention_layer_counts() == {"full": 49} and m.mlp_layer_count == 80 and m.num_kv_heads == 8
    # ffn_mult 5.25 → 28,672 wide (Llama-3-70B's MLP); the 80 MLPs' mean width keeps their total weights
    widths = 49 * 28672 + 10 * 7168 + 8 * 5632 + 6 * 14336 + 6 * 2816 + 17920
    assert m.intermediate_size == round(widths / 80)
    cfg = catalogue_config("llama-3.3-nemotron-super-49b")
    cfg["block_configs"][3]["ffn"]["replace_with_linear"] = True
    with pytest.raises(InputError, match="replace_with_linear are not supported"):
        parse_hf_config(cfg)
    cfg["block_configs"][3]["ffn"] = {"ffn_mult": "wide"}
    with pytest.raises(InputError, match="ffn_mult must be a number > 0"):
        parse_hf_config(cfg)
    cfg["block_configs"][3]["ffn"] = {"ffn_mult": 1.0}
    cfg["block_configs"][0]["attention"]["n_heads_in_group"] = 0
    with pytest.raises(InputError, match="one n_heads_in_group dividing 64 heads"):
        parse_hf_config(cfg)


def test_mimo_v2_flash_values_narrower_than_keys():
    m = get_model("XiaomiMiMo/MiMo-V2-Flash")  # Xiaomi's card: 309B total, 15B active
    assert m.param_count() / 1e9 == pytest.approx(309, rel=0.01)
    assert m.active_param_count() / 1e9 == pytest.approx(15, rel=0.03)
    assert m.attention_layer_counts() == {"full": 9, "sliding": 39} and m.dense_layer_count == 1
    assert m.kv_cache_bytes_per_token() == 9 * 4 * (192 + 128) * 2  # full layers: 4 KV heads, keys 192, values 128
    assert m.per_sequence_cache_bytes() == 39 * 128 * 8 * (192 + 128) * 2  # 128-token windows of 8 KV heads
    ops = ops_for("mimo-v2-flash", tp=4, decode=[3000] * 2)
    assert ops.loc["qkv_proj", "n"] == 16 * 192 + 2 * (192 + 128) and ops.loc["o_proj", "k"] == 16 * 128
    assert ops.loc["global_qkv_proj", "n"] == 16 * 192 + 1 * (192 + 128)
    assert ops.loc["sliding_attn_decode", "v_head_dim"] == 128 and ops.loc["attn_decode", "v_head_dim"] == 128


@pytest.mark.parametrize("name,total_b,active_b,rel_total,rel_active", [
    ("deepseek-v4-flash", 284, 13, 0.01, 0.05),  # DeepSeek's headline figures: 284B total, 13B active
    ("deepseek-v4-pro", 1600, 49, 0.03, 0.01),   # "1.6T" total, 49B active
])
def test_deepseek_v4_parameters_match_the_headline(name, total_b, active_b, rel_total, rel_active):
    m = get_model(name)
    assert m.param_count() / 1e9 == pytest.approx(total_b, rel=rel_total)
    assert m.active_param_count() / 1e9 == pytest.approx(active_b, rel=rel_active)


def test_deepseek_v4_compressed_cache_and_attention_by_hand():
    m = get_model("deepseek-ai/DeepSeek-V4-Flash")  # 2 window-only, 21 csa (ratio 4), 20 hca (ratio 128) layers
    assert m.name == "deepseek-v4-flash" and m.attention_layer_counts() == {"window": 2, "csa": 21, "hca": 20}
    # beyond the window, a csa layer keeps a 512-wide entry and a 128-wide indexer key per 4 tokens, hca 512 per 128
    assert m.kv_cache_bytes_per_token(16) == (21 * (512 + 128) / 4 + 20 * 512 / 128) * 2
    assert m.per_sequence_cache_bytes(16) == 43 * 128 * 512 * 2  # every layer's 128-token window
    ops = ops_for("deepseek-v4-flash", tp=8, dtype=FP8, decode=[100_000] * 2)
    assert ops.loc["v4_window_attn_decode", "attn_pairs"] == 2 * 128 and ops.loc["v4_window_attn_decode", "count"] == 43
    assert ops.loc["v4_csa_attn_decode", "attn_pairs"] == 2 * 512  # the indexer's top 512 entries
    assert ops.loc["v4_hca_attn_decode", "attn_pairs"] == 2 * (100_000 / 128 + 1)
    assert ops.loc["v4_index_decode", "attn_pairs"] == 2 * (100_000 / 4 + 1)  # the indexer scores every entry
    assert ops.loc["v4_index_decode", "count"] == 21
    assert ops.loc["v4_q_b_proj", "n"] == 64 // 8 * 512 and ops.loc["v4_kv_proj", "n"] == 512  # one shared KV head
    assert ops.loc["v4_o_a_proj", ["n", "k"]].tolist() == [1 * 1024, 8 * 512]  # 8 groups of 8 heads: one per GPU


def test_deepseek_v4_bad_ratios_name_the_key():
    cfg = catalogue_config("deepseek-v4-flash")
    cfg["compress_ratios"] = [4, 16, 128] * 15
    with pytest.raises(InputError, match="compress_ratios has 3 compression ratios"):
        parse_hf_config(cfg)
    cfg["compress_ratios"] = [4] * 10
    with pytest.raises(InputError, match="'compress_ratios' must list a ratio"):
        parse_hf_config(cfg)


def test_kimi_k3_delta_attention_and_gated_mla_by_hand():
    m = get_model("moonshotai/Kimi-K3")  # 69 KDA layers, 24 MLA layers (every 4th and the last), latent MoE
    assert m.name == "kimi-k3" and m.attention_layer_counts() == {"linear": 69, "mla": 24}
    assert m.moe_layer_count == 92 and m.dense_layer_count == 1 and m.moe_latent_size == 3584
    assert m.kv_cache_bytes_per_token() == 24 * (512 + 64) * 2  # only the MLA layers cache tokens
    heads_dim = 96 * 128
    ops = ops_for("kimi-k3", tp=8, dtype=FP8, decode=[4000] * 4)
    # q, k, v, the full-rank forget gate, β per head, the output gate's 128-wide bottleneck; split over TP 8
    assert ops.loc["kda_in_proj", "n"] == (4 * heads_dim + 96 + 128) / 8 and ops.loc["kda_in_proj", "count"] == 69
    assert ops.loc["mla_gate_proj", "n"] == 12 * 128 and "rope" not in ops.index  # gated MLA without RoPE
    assert ops.loc["moe_experts", "k"] == 3584 and ops.loc["moe_experts", "topk"] == 16
    assert "rope" in ops_for("deepseek-v3", tp=8, decode=[10]).index  # other MLA models keep their RoPE


@pytest.mark.parametrize("name,path,value", [
    ("minimax-m3", ("model_type",), [1]),
    ("step-3.7-flash", ("first_k_dense_replace",), "x"),
    ("qwen3-30b-a3b", ("mlp_only_layers",), 3),
    ("minimax-m2.5", ("shared_intermediate_size",), "x"),
    ("minimax-m3", ("sparse_attention_config", "sparse_local_block"), "x"),
    ("qwen3.5-397b-a17b", ("text_config", "shared_expert_intermediate_size"), [1]),
])
def test_malformed_config_values_are_input_errors_naming_the_key(name, path, value):
    cfg = catalogue_config(name)
    where = cfg
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    with pytest.raises(InputError, match=path[-1]):
        parse_hf_config(cfg)
