"""Model families added for the multi-LLM planner's workloads: gpt_neox, mpt, chatglm, and LLaMA-1 13B.

Parameter counts, each family's quirks (parallel residual with two norms, ALiBi without RoPE, tied
embeddings, multi-query groups), KV bytes by hand, TP sharding of few KV heads, aliases and a
roofline report per model.
"""

from __future__ import annotations

import pytest

from predictor import roofline_report
from predictor.batch import from_lists
from predictor.errors import InputError
from predictor.memory import weights_bytes_per_gpu
from predictor.models import (
    SUPPORTED_FAMILIES,
    ModelSpec,
    _index,
    get_model,
    model_names,
    parse_hf_config,
)
from predictor.ops import build_ops
from predictor.precision import parse_dtype

NEW_MODELS = ["pythia-12b", "dolly-v2-12b", "stablelm-tuned-alpha-7b", "mpt-7b", "chatglm3-6b", "llama-13b"]

# Published totals. Where a model card gives only a headline ("12B", "7B") the number below is the
# exact count the architecture implies, checked against the closest published figure in the comment.
PUBLISHED_PARAMS = {
    # Pythia paper (Biderman et al. 2023, Table 1): Pythia-12B has 11,846,072,320 parameters with a
    # 50688-row vocab; oasst-sft-4 and dolly-v2 cut the embedding/unembedding to 50288 / 50280 rows,
    # 2 × 400 × 5120 and 2 × 408 × 5120 fewer: "12B" on both model cards.
    "pythia-12b": 11_841_976_320,
    "dolly-v2-12b": 11_841_894_400,
    # StableLM-Alpha 7B: "7B" on the model card / stability-AI/StableLM README; the exact total of the
    # published config (hidden 6144, 16 layers, vocab 50432) is 7,868,755,968 (Hugging Face lists 7.87B).
    "stablelm-tuned-alpha-7b": 7_868_755_968,
    # MPT-7B: Hugging Face safetensors total 6.65B (model card headline "6.7B").
    "mpt-7b": 6_649_286_656,
    # ChatGLM3-6B: Hugging Face total 6.24B (6,243,584,000 parameters; model card headline "6B").
    "chatglm3-6b": 6_243_584_000,
    # LLaMA-1 13B: huggyllama/llama-13b safetensors total (paper: "13.0B"); same as Llama-2-13B.
    "llama-13b": 13_015_864_320,
}


def ops_for(model, tp=1, dtype="fp16", prefill=(), decode=()):
    df = build_ops(get_model(model), tp, parse_dtype(dtype), from_lists(prefill, decode))
    return df.set_index("op")


def test_new_models_are_in_the_catalogue():
    assert set(NEW_MODELS) <= set(model_names())
    assert {"gpt_neox", "mpt", "chatglm"} <= set(SUPPORTED_FAMILIES)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_within_one_percent_of_published(name):
    count = get_model(name).param_count()
    assert abs(count - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.01


def test_headline_counts_within_one_percent():
    # The brief's rounded figures: 11.85e9, 7.87e9, 6.65e9, 6.24e9, 13.02e9.
    for name, headline in [("pythia-12b", 11.85e9), ("dolly-v2-12b", 11.85e9), ("stablelm-tuned-alpha-7b", 7.87e9),
                           ("mpt-7b", 6.65e9), ("chatglm3-6b", 6.24e9), ("llama-13b", 13.02e9)]:
        assert abs(get_model(name).param_count() - headline) / headline < 0.01, name


# --- gpt_neox ---------------------------------------------------------------------------------
def test_pythia_12b_param_count_by_hand():
    h, f, v, L = 5120, 20480, 50288, 36
    attn = h * 3 * h + 3 * h + h * h + h  # fused query_key_value + dense, both with bias
    mlp = h * f + f + f * h + h  # dense_h_to_4h + dense_4h_to_h, both with bias
    norms = 2 * 2 * h  # input_layernorm + post_attention_layernorm, weight + bias each
    expected = v * h + L * (attn + mlp + norms) + 2 * h + v * h  # embed_in, layers, final LN, embed_out
    assert get_model("pythia-12b").param_count() == expected
    # With Pythia-12B's own 50688-row vocab this is exactly the Pythia paper's 11,846,072,320.
    assert expected + 2 * (50688 - v) * h == 11_846_072_320


def test_gpt_neox_quirks():
    m = get_model("pythia-12b")
    assert (m.family, m.norm, m.norm_bias, m.gated_mlp, m.activation) == ("gpt_neox", "layer", True, False, "gelu")
    assert m.qkv_bias and m.o_bias and m.mlp_bias and not m.lm_head_bias and not m.tie_word_embeddings
    assert m.parallel_attn_mlp and m.norms_per_layer == 2
    assert m.rotary_fraction == 0.25 and m.head_dim == 128 and m.num_kv_heads == 40
    assert (m.vocab_size, m.max_position_embeddings) == (50288, 2048)
    assert get_model("dolly-v2-12b").vocab_size == 50280
    s = get_model("stablelm-tuned-alpha-7b")
    assert (s.hidden_size, s.num_layers, s.num_heads, s.intermediate_size) == (6144, 16, 48, 24576)
    assert (s.vocab_size, s.max_position_embeddings, s.rotary_fraction) == (50432, 4096, 0.25)


def test_parallel_residual_has_two_norm_ops_and_one_add_per_layer():
    ops = ops_for("pythia-12b", prefill=[(16, 0)], decode=[100])
    assert ops.loc["input_norm", "count"] == ops.loc["post_attn_norm", "count"] == 36
    assert "attn_residual_add" not in ops.index
    assert ops.loc["mlp_residual_add", "count"] == 36
    assert ops.loc["act", "gated"] == 0
    assert ops.loc["rope", "n"] == (40 + 40) * 128 * 0.25  # 32 of 128 dims per head
    assert tuple(ops.loc["qkv_proj", ["n", "k"]]) == (3 * 5120, 5120)
    assert tuple(ops.loc["gate_up_proj", ["n", "k"]]) == (20480, 5120)
    # phi-2 keeps one norm and one add per layer
    phi = ops_for("phi-2", decode=[5])
    assert "post_attn_norm" not in phi.index and "attn_residual_add" not in phi.index


def test_gpt_neox_sequential_residual_has_two_adds_and_the_same_params():
    cfg = {"model_type": "gpt_neox", "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 2,
           "num_attention_heads": 8, "vocab_size": 1000, "rotary_pct": 0.5}
    parallel = parse_hf_config(cfg)
    sequential = parse_hf_config(dict(cfg, use_parallel_residual=False))
    assert parallel.parallel_attn_mlp and not sequential.parallel_attn_mlp
    assert parallel.norms_per_layer == sequential.norms_per_layer == 2
    assert parallel.param_count() == sequential.param_count()
    ops = build_ops(sequential, 1, parse_dtype("fp16"), from_lists([], [10])).set_index("op")
    assert {"attn_residual_add", "mlp_residual_add", "input_norm", "post_attn_norm"} <= set(ops.index)


def test_norms_per_layer_default_keeps_existing_models():
    for name in model_names():
        m = get_model(name)
        if m.family in ("gpt_neox",):
            continue
        assert m.norms_per_layer == (1 if m.parallel_attn_mlp else 2), name
    bare = ModelSpec(name="x", family="custom", hidden_size=64, intermediate_size=256, num_layers=1, num_heads=4,
                     num_kv_heads=4, head_dim=16, vocab_size=100, max_position_embeddings=128)
    assert bare.norms_per_layer == 2
    with pytest.raises(InputError, match="norms_per_layer"):
        ModelSpec(name="x", family="custom", hidden_size=64, intermediate_size=256, num_layers=1, num_heads=4,
                  num_kv_heads=4, head_dim=16, vocab_size=100, max_position_embeddings=128, norms_per_layer=3)


# --- mpt --------------------------------------------------------------------------------------
def test_mpt_quirks():
    m = get_model("mpt-7b")
    assert (m.family, m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads) == ("mpt", 4096, 32, 32, 32)
    assert m.intermediate_size == 4 * 4096 and not m.gated_mlp and m.activation == "gelu"
    assert (m.vocab_size, m.max_position_embeddings) == (50432, 2048)
    assert m.rotary_fraction == 0.0  # ALiBi: no RoPE
    assert m.tie_word_embeddings and m.lm_head_params() == 0
    assert not (m.qkv_bias or m.o_bias or m.mlp_bias or m.lm_head_bias)
    assert m.norm == "layer" and not m.norm_bias and m.norm_params_per_norm() == 4096
    per_layer = 4 * 4096 * 4096 + 2 * 4096 * 16384 + 2 * 4096
    assert m.param_count() == 50432 * 4096 + 32 * per_layer + 4096
    assert m.small_params_per_layer() == 2 * 4096  # only the two bias-free LayerNorm weights


def test_mpt_has_no_rope_op_and_counts_its_tied_embedding_once():
    ops = ops_for("mpt-7b", prefill=[(16, 0)], decode=[100])
    assert "rope" not in ops.index
    assert {"input_norm", "attn_residual_add", "post_attn_norm", "mlp_residual_add"} <= set(ops.index)
    assert tuple(ops.loc["lm_head", ["n", "k"]]) == (50432, 4096)
    m = get_model("mpt-7b")
    # 16-bit weights: linear layers + ONE 50432×4096 table + norms, all at 2 bytes
    assert weights_bytes_per_gpu(m, 1, parse_dtype("fp16")) == 2 * m.param_count()


def test_mpt_kv_bytes_by_hand():
    # 2 (K, V) × 32 layers × 32 KV heads × 128 head dim × 2 bytes
    assert get_model("mpt-7b").kv_cache_bytes_per_token() == 2 * 32 * 32 * 128 * 2 == 524288


def test_mpt_position_variants():
    base = {"model_type": "mpt", "d_model": 256, "n_heads": 4, "n_layers": 2, "expansion_ratio": 4,
            "vocab_size": 1000, "max_seq_len": 512}
    assert parse_hf_config(dict(base, attn_config={"alibi": True})).rotary_fraction == 0.0
    assert parse_hf_config(dict(base, attn_config={"rope": True})).rotary_fraction == 1.0
    gqa = parse_hf_config(dict(base, attn_config={"alibi": True, "attn_type": "grouped_query_attention",
                                                   "kv_n_heads": 2}))
    assert gqa.num_kv_heads == 2
    with pytest.raises(InputError, match="learned position embeddings"):
        parse_hf_config(dict(base, attn_config={"alibi": False}))
    biased = parse_hf_config(dict(base, no_bias=False, attn_config={"alibi": True}))
    assert biased.qkv_bias and biased.mlp_bias and biased.norm_bias


# --- chatglm ----------------------------------------------------------------------------------
def test_chatglm_quirks():
    m = get_model("chatglm3-6b")
    assert (m.family, m.num_heads, m.num_kv_heads, m.head_dim) == ("chatglm", 32, 2, 128)
    assert m.gated_mlp and m.intermediate_size == 13696 and m.norm == "rms"
    assert m.qkv_bias and not (m.o_bias or m.mlp_bias or m.lm_head_bias) and not m.tie_word_embeddings
    assert m.rotary_fraction == 0.5
    assert (m.vocab_size, m.max_position_embeddings, m.num_layers) == (65024, 8192, 28)
    qkv = 4096 * (4096 + 2 * 2 * 128) + (4096 + 2 * 2 * 128)  # weights + bias
    per_layer = qkv + 4096 * 4096 + 3 * 4096 * 13696 + 2 * 4096
    assert m.param_count() == 2 * 65024 * 4096 + 28 * per_layer + 4096 == 6_243_584_000


def test_chatglm_kv_bytes_by_hand():
    # 2 (K, V) × 28 layers × 2 KV groups × 128 kv_channels × 2 bytes
    assert get_model("chatglm3-6b").kv_cache_bytes_per_token() == 2 * 28 * 2 * 128 * 2 == 28672


def test_chatglm_tp_sharding_of_two_kv_heads():
    m = get_model("chatglm3-6b")
    m.check_tp(2)
    m.check_tp(4)  # 2 KV heads < 4 GPUs: replicated
    assert m.kv_heads_per_gpu(2) == 1
    assert m.kv_heads_per_gpu(4) == 1
    assert m.kv_cache_bytes_per_token(tp=2) == m.kv_cache_bytes_per_token(tp=4) == 2 * 28 * 1 * 128 * 2
    ops = ops_for("chatglm3-6b", tp=4, decode=[100] * 2)
    assert tuple(ops.loc["qkv_proj", ["n", "k"]]) == ((8 + 2 * 1) * 128, 4096)
    assert tuple(ops.loc["attn_decode", ["heads", "kv_heads", "head_dim"]]) == (8, 1, 128)
    assert tuple(ops.loc["gate_up_proj", ["n", "k"]]) == (2 * 13696 / 4, 4096)
    assert ops.loc["rope", "n"] == (8 + 1) * 128 * 0.5
    assert ops.loc["act", "gated"] == 1


def test_chatglm_without_multi_query_is_mha():
    cfg = {"model_type": "chatglm", "hidden_size": 256, "num_layers": 2, "num_attention_heads": 4,
           "multi_query_attention": False, "multi_query_group_num": 2, "ffn_hidden_size": 512,
           "padded_vocab_size": 1000}
    m = parse_hf_config(cfg)
    assert (m.num_kv_heads, m.head_dim) == (4, 64)
    with pytest.raises(InputError, match="missing required key 'num_layers'"):
        parse_hf_config({k: v for k, v in cfg.items() if k != "num_layers"})


# --- llama-13b and aliases --------------------------------------------------------------------
def test_llama_13b_is_llama_1():
    m = get_model("llama-13b")
    assert (m.family, m.hidden_size, m.intermediate_size, m.num_layers, m.num_heads, m.num_kv_heads) == (
        "llama", 5120, 13824, 40, 40, 40)
    assert (m.vocab_size, m.max_position_embeddings) == (32000, 2048)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("oasst-sft-4-pythia-12b-epoch-3.5", "pythia-12b"),
        ("OpenAssistant/oasst-sft-4-pythia-12b-epoch-3.5", "pythia-12b"),
        ("dolly-v2-12b", "dolly-v2-12b"),
        ("databricks/dolly-v2-12b", "dolly-v2-12b"),
        ("mpt-7b-chat", "mpt-7b"),
        ("mosaicml/mpt-7b-chat", "mpt-7b"),
        ("chatglm3-6b", "chatglm3-6b"),
        ("THUDM/chatglm3-6b", "chatglm3-6b"),
        ("stablelm-tuned-alpha-7b", "stablelm-tuned-alpha-7b"),
        ("stabilityai/stablelm-tuned-alpha-7b", "stablelm-tuned-alpha-7b"),
        ("chavinlo/alpaca-13b", "llama-13b"),
        ("alpaca-13b", "llama-13b"),
        ("TheBloke/koala-13B-HF", "llama-13b"),
        ("koala-13B-HF", "llama-13b"),
        ("koala-13b", "llama-13b"),
        ("project-baize/baize-v2-13b", "llama-13b"),
        ("baize-v2-13b", "llama-13b"),
        ("WizardLMTeam/WizardLM-13B-V1.2", "llama-2-13b"),
        ("WizardLM-13B-V1.2", "llama-2-13b"),
    ],
)
def test_aliases_resolve(alias, name):
    assert get_model(alias).name == name


def test_no_alias_points_at_two_models():
    seen: dict[str, str] = {}
    for name, entry in _index().items():
        for key in [name, *entry.get("aliases", [])]:
            key = str(key).lower()
            assert seen.setdefault(key, name) == name, f"{key} names both {seen[key]} and {name}"


# --- end to end -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW_MODELS)
def test_roofline_report_runs_on_a100(name):
    report = roofline_report(name, "a100-80gb", batch_size=4, input_len=256)
    assert report["model"] == name
    assert report["prefill"]["total_ms"] > report["decode"]["total_ms"] > 0
    assert report["memory"]["batch_fits"]
    assert report["memory"]["kv_bytes_per_token"] == get_model(name).kv_cache_bytes_per_token()
