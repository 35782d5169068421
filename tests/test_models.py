"""Model specs: HF config parsing per family, parameter counts, KV bytes, TP checks."""

from __future__ import annotations

import json

import pytest

from predictor.errors import InputError
from predictor.models import get_model, model_names, parse_hf_config, read_config_file

# Published parameter counts. Exact integers are the safetensors totals shown on each model's
# Hugging Face page; round numbers are the vendor's own headline (model card / paper).
PUBLISHED_PARAMS = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "codellama-34b": 33_743_970_304,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2-7b": 7_615_616_512,
    "qwen2-72b": 72_706_203_648,
    "qwen-72b": 72_000_000_000,   # "Qwen-72B", 72B (Qwen technical report)
    "internlm-20b": 20_000_000_000,  # "InternLM-20B", 20B (model card)
    "phi-2": 2_779_683_840,
    "vicuna-13b": 13_015_864_320,
    "gemma-7b": 8_537_680_896,
    "gemma-2b": 2_506_172_416,
    "phi-3-mini": 3_821_079_552,
}

REQUIRED = ["llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b", "llama-3.1-8b", "llama-3.1-70b",
            "codellama-34b", "mistral-7b", "mixtral-8x7b", "qwen2-7b", "qwen2-72b", "qwen-72b", "internlm-20b", "phi-2",
            "vicuna-13b"]


def test_catalogue_has_every_required_model():
    assert set(REQUIRED) <= set(model_names())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_within_one_percent_of_published(name):
    count = get_model(name).param_count()
    assert abs(count - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.01


def test_llama_2_7b_param_count_by_hand():
    # embed 32000·4096 + lm_head 32000·4096 + 32 layers × (QKV 4096·12288 + O 4096² + MLP 3·4096·11008
    # + 2 norms·4096) + final norm 4096
    per_layer = 4096 * 12288 + 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    expected = 2 * 32000 * 4096 + 32 * per_layer + 4096
    assert get_model("llama-2-7b").param_count() == expected == 6_738_415_616


def test_mixtral_active_params_count_two_of_eight_experts():
    m = get_model("mixtral-8x7b")
    idle_per_layer = 6 * 3 * 4096 * 14336  # 6 unused experts × (gate, up, down)
    assert m.active_param_count() == m.param_count() - 32 * idle_per_layer
    assert abs(m.active_param_count() - 12.9e9) / 12.9e9 < 0.01  # "12.9B active" (Mistral AI)


def test_kv_bytes_per_token_mha_and_gqa():
    # 2 (K,V) × layers × kv_heads × head_dim × bytes
    assert get_model("llama-2-7b").kv_cache_bytes_per_token() == 2 * 32 * 32 * 128 * 2 == 524288
    assert get_model("llama-2-70b").kv_cache_bytes_per_token() == 2 * 80 * 8 * 128 * 2 == 327680
    # TP 4 splits 8 KV heads into 2 per GPU; fp8 KV halves it
    assert get_model("llama-2-70b").kv_cache_bytes_per_token(kv_bits=8, tp=4) == 2 * 80 * 2 * 128 * 1


def test_kv_heads_replicated_when_fewer_than_tp():
    m = get_model("qwen2-7b")  # 4 KV heads
    assert m.kv_heads_per_gpu(4) == 1
    assert m.kv_cache_bytes_per_token(tp=4) == 2 * 28 * 1 * 128 * 2


def test_families_parse_their_quirks():
    phi = get_model("phi-2")
    assert (phi.norm, phi.gated_mlp, phi.parallel_attn_mlp, phi.rotary_fraction) == ("layer", False, True, 0.4)
    assert phi.num_kv_heads == 32  # null in config → MHA
    qwen1 = get_model("qwen-72b")
    assert qwen1.intermediate_size == 24576  # config stores 2× the MLP width
    assert qwen1.qkv_bias and get_model("qwen2-7b").qkv_bias
    gemma = get_model("gemma-7b")
    assert gemma.head_dim == 256 and gemma.q_size == 4096 and gemma.tie_word_embeddings
    assert get_model("mixtral-8x7b").num_experts == 8


def test_aliases_resolve_to_catalogue_models():
    assert get_model("meta-llama/Llama-2-70b-hf").name == "llama-2-70b"
    assert get_model("llama2-70b").name == "llama-2-70b"  # Splitwise's spelling
    assert get_model("Mixtral-8x7B-Instruct-v0.1").name == "mixtral-8x7b"


def test_unknown_model_type_is_named(tmp_path):
    with pytest.raises(InputError, match="unsupported model_type 'bloom'"):
        parse_hf_config({"model_type": "bloom", "hidden_size": 4096})


def test_unknown_catalogue_name_suggests_closest():
    with pytest.raises(InputError, match="did you mean llama-2-7b"):
        get_model("llama-2-7")


def test_config_file_round_trip(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2,
           "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    spec = read_config_file(tmp_path)  # a folder holding config.json works too
    assert (spec.head_dim, spec.num_kv_heads, spec.kv_size) == (128, 2, 256)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"hidden_size": 10}', "missing required key 'model_type'"),
        ('{"model_type": "llama", "hidden_size": 64}', "missing required key 'num_attention_heads'"),
        ('{"model_type": "llama", "hidden_size": -5, "num_attention_heads": 4, "intermediate_size": 8,'
         ' "num_hidden_layers": 1, "vocab_size": 10}', "'hidden_size' must be a positive integer"),
        ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 6, "num_key_value_heads": 4,'
         ' "intermediate_size": 8, "num_hidden_layers": 1, "vocab_size": 10}', "must be a multiple"),
    ],
)
def test_malformed_config_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_config_file(path)
    assert "\n" not in str(info.value)


def test_tp_must_divide_heads():
    with pytest.raises(InputError, match="3 does not divide"):
        get_model("llama-2-7b").check_tp(3)
    get_model("llama-2-70b").check_tp(8)
