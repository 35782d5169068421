"""Shipped model configs (features.model_configs): built deterministically from aiconfigurator's folder, and
enough for the serving runs' models to resolve without ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.model_configs import SHIPPED_CONFIGS, build_model_configs, shipped_config
from scheduler.serving_rows import Skip, resolve_model

SHARED_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "aiconfigurator" / "model_configs"
LLAMA = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1024, "num_attention_heads": 8,
         "num_key_value_heads": 8, "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 2048}


def test_build_keeps_parseable_configs_only_and_is_deterministic(tmp_path):
    src = tmp_path / "configs"
    src.mkdir()
    (src / "acme--Tiny_config.json").write_text(json.dumps(LLAMA))
    (src / "acme--Tiny_hf_quant_config.json").write_text(json.dumps({"quantization": {}}))
    (src / "acme--Alien_config.json").write_text(json.dumps({"model_type": "no_such_family"}))
    assert build_model_configs(src, tmp_path / "a.json.gz") == 1
    build_model_configs(src, tmp_path / "b.json.gz")
    assert (tmp_path / "a.json.gz").read_bytes() == (tmp_path / "b.json.gz").read_bytes()


@pytest.mark.skipif(not SHARED_CONFIGS.is_dir(), reason="needs ../shared/data/aiconfigurator/model_configs")
def test_shipped_configs_regenerate_byte_for_byte(tmp_path):
    build_model_configs(SHARED_CONFIGS, tmp_path / "configs.json.gz")
    assert (tmp_path / "configs.json.gz").read_bytes() == SHIPPED_CONFIGS.read_bytes()


def test_a_model_outside_the_catalogue_resolves_from_the_shipped_configs(tmp_path):
    assert shipped_config("Qwen--Qwen3.5-27B") is not None
    model = resolve_model("Qwen/Qwen3.5-27B", configs=str(tmp_path / "no_shared"))
    assert model.name == "Qwen/Qwen3.5-27B"
    # an NVFP4 checkpoint of a shipped base model shares its architecture
    assert resolve_model("nvidia/Qwen3.5-27B-NVFP4", configs=str(tmp_path / "no_shared")).num_layers == model.num_layers
    with pytest.raises(Skip):
        resolve_model("acme/NoSuchModel-9B", configs=str(tmp_path / "no_shared"))


def _shape(model) -> tuple:
    return (model.num_layers, model.hidden_size, model.intermediate_size, model.num_heads, model.num_kv_heads,
            model.head_dim, model.num_experts, model.moe_intermediate_size, model.mla)


@pytest.mark.parametrize(("variant", "base"), [
    ("meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.1-70B"),       # a release of the same architecture
    ("nvidia/Llama-3.1-8B-Instruct-FP8", "meta-llama/Llama-3.1-8B-Instruct"),  # a quantised checkpoint
    ("MiniMaxAI/MiniMax-M2.1", "MiniMaxAI/MiniMax-M2.5"),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "Qwen/Qwen3-235B-A22B"),      # tuning, date and quantisation
    ("moonshotai/Kimi-K2-Instruct-0905", "moonshotai/Kimi-K2.5"),
    ("Qwen/Qwen3.5-27B-Instruct", "Qwen/Qwen3.5-27B"),                        # a shipped config's variant
])
def test_a_variant_of_a_known_model_resolves_to_its_architecture(variant, base, tmp_path):
    no_shared = str(tmp_path / "no_shared")
    assert _shape(resolve_model(variant, configs=no_shared)) == _shape(resolve_model(base, configs=no_shared))


def test_variant_suffixes_leave_model_names_and_unknown_models_alone(tmp_path):
    from scheduler.serving_rows import variant_bases

    assert variant_bases("DeepSeek-V3") == ["DeepSeek-V3"]  # an upper-case V is the model's name, not a revision
    assert variant_bases("Mixtral-8x7B-v0.1") == ["Mixtral-8x7B-v0.1", "Mixtral-8x7B"]
    with pytest.raises(Skip):
        resolve_model("acme/NoSuchModel-9B-Instruct-FP8", configs=str(tmp_path / "no_shared"))
