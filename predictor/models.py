"""Model architecture specs parsed from Hugging Face ``config.json``.

A :class:`ModelSpec` is the small set of numbers the roofline needs. Supported ``model_type``
families: llama, mistral, mixtral (MoE), qwen2, qwen (v1), gemma, phi (phi-2), phi3, internlm,
gpt_neox, mpt, chatglm here, and today's families (DeepSeek/Kimi MLA + MoE, GLM, Qwen3/3.5, gpt-oss,
MiniMax, Llama-4, Nemotron-H, Step-3.7) in :mod:`predictor.model_families`; ``mimo`` (MiMo-7B) parses as
qwen2. Any other ``model_type`` is an :class:`~predictor.errors.InputError` naming it.

Family notes for the less common configs:

* ``gpt_neox`` (Pythia, Dolly-v2, StableLM-alpha): LayerNorm with bias, biases on every linear
  (fused query_key_value, dense, dense_h_to_4h, dense_4h_to_h) but none on the untied ``embed_out``;
  non-gated GELU MLP; RoPE on ``rotary_pct`` of each head's dims. ``use_parallel_residual``
  (default true) makes attention and MLP read the same layer input through two separate LayerNorms
  and add into one residual: two norms per layer, one residual add.
* ``mpt`` (MPT-7B): keys ``d_model``, ``n_heads``, ``n_layers``, ``expansion_ratio`` (MLP width =
  ratio × d_model), ``max_seq_len``; ``no_bias`` drops every linear bias and the LayerNorm bias
  (1 parameter per channel); tied embeddings; ``attn_config.alibi`` → no RoPE at all
  (``rotary_fraction`` 0; the ALiBi bias is folded into the attention kernel and not costed apart).
* ``chatglm`` (ChatGLM2/3): keys ``num_layers``, ``multi_query_group_num`` (KV heads when
  ``multi_query_attention``), ``kv_channels`` (head dim), ``ffn_hidden_size`` (width of each of the
  SwiGLU gate and up halves), ``padded_vocab_size``, ``seq_length``; bias on QKV only
  (``add_qkv_bias``, ``add_bias_linear``); RMSNorm; untied ``output_layer``; RoPE on half of each
  head's dims.

The spec itself, its derived sizes and the assumptions behind them: :mod:`predictor.model_spec`.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

from predictor.safe_yaml import load_shipped

from predictor.errors import InputError, unknown_name
from predictor.model_spec import ModelSpec
from predictor.validate import read_json_file, record_quantization

SUPPORTED_FAMILIES = (  # classic families parsed here; today's in predictor.model_families (supported_families())
    "llama", "mistral", "mixtral", "qwen2", "qwen", "gemma", "phi", "phi3", "internlm", "gpt_neox", "mpt", "chatglm",
)


# --- parsing ----------------------------------------------------------------------------------
MAX_CONTEXT_TOKENS = 1 << 24  # declared context limits up to 16M tokens (Llama-4 Scout declares 10.5M)


def _get(cfg: dict, key: str, source: str, *, default=None, required: bool = True, kind=int,
         limit: int = 10_000_000):
    value = cfg.get(key, default)
    if value is None:
        if required:
            raise InputError(f"{source}: missing required key {key!r}")
        return None
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{source}: key {key!r} must be a positive integer, got {value!r}")
        if value > limit:
            raise InputError(f"{source}: key {key!r} is implausibly large ({value}; at most {limit:,})")
    elif kind is bool and not isinstance(value, bool):
        raise InputError(f"{source}: key {key!r} must be true or false, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise InputError(f"{source}: key {key!r} must be a number in (0, 1], got {value!r}")
    return value


def _common(cfg: dict, name: str, source: str, **overrides) -> ModelSpec:
    heads = _get(cfg, "num_attention_heads", source)
    hidden = _get(cfg, "hidden_size", source)
    kv = _get(cfg, "num_key_value_heads", source, default=heads, required=False) or heads
    head_dim = _get(cfg, "head_dim", source, required=False) or hidden // heads
    if heads % kv:
        raise InputError(f"{source}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv})")
    if "head_dim" not in cfg and hidden % heads:
        raise InputError(f"{source}: hidden_size ({hidden}) must be divisible by num_attention_heads ({heads})")
    fields = dict(
        name=name,
        family=cfg["model_type"],
        hidden_size=hidden,
        intermediate_size=_get(cfg, "intermediate_size", source),
        num_layers=_get(cfg, "num_hidden_layers", source),
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=_get(cfg, "vocab_size", source),
        max_position_embeddings=_get(cfg, "max_position_embeddings", source, default=4096, required=False,
                                     limit=MAX_CONTEXT_TOKENS) or 4096,
        activation=str(cfg.get("hidden_act", "silu")),
        tie_word_embeddings=_get(cfg, "tie_word_embeddings", source, default=False, required=False, kind=bool) or False,
    )
    fields.update(overrides)
    return ModelSpec(**fields)


def _llama_like(cfg: dict, name: str, source: str) -> ModelSpec:
    bias = bool(cfg.get("attention_bias", False))
    return _common(cfg, name, source, qkv_bias=bias, o_bias=bias, mlp_bias=bool(cfg.get("mlp_bias", False)))


def _mixtral(cfg: dict, name: str, source: str) -> ModelSpec:
    experts = _get(cfg, "num_local_experts", source)
    topk = _get(cfg, "num_experts_per_tok", source)
    if topk > experts:
        raise InputError(f"{source}: num_experts_per_tok ({topk}) exceeds num_local_experts ({experts})")
    return _common(cfg, name, source, num_experts=experts, experts_per_token=topk)


def _qwen2(cfg: dict, name: str, source: str) -> ModelSpec:
    return _common(cfg, name, source, qkv_bias=True)


def _qwen_v1(cfg: dict, name: str, source: str) -> ModelSpec:
    # Qwen v1 stores twice the MLP width in intermediate_size (w1 and w2 each take half).
    heads = _get(cfg, "num_attention_heads", source)
    hidden = _get(cfg, "hidden_size", source)
    inter = _get(cfg, "intermediate_size", source)
    max_pos = cfg.get("seq_length") or cfg.get("max_position_embeddings") or 8192
    head_dim = _get(cfg, "kv_channels", source, default=hidden // heads, required=False)
    spec = dict(cfg, num_key_value_heads=heads, head_dim=head_dim, max_position_embeddings=max_pos)
    return _common(spec, name, source, intermediate_size=inter // 2, qkv_bias=True)


def _gemma(cfg: dict, name: str, source: str) -> ModelSpec:
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    spec = dict(cfg, tie_word_embeddings=cfg.get("tie_word_embeddings", True))
    return _common(spec, name, source, activation=str(act))


def _phi(cfg: dict, name: str, source: str) -> ModelSpec:
    return _common(
        cfg, name, source,
        gated_mlp=False, norm="layer", qkv_bias=True, o_bias=True, mlp_bias=True, lm_head_bias=True,
        parallel_attn_mlp=True,
        rotary_fraction=_get(cfg, "partial_rotary_factor", source, default=0.5, required=False, kind=float) or 0.5,
    )


def _internlm(cfg: dict, name: str, source: str) -> ModelSpec:
    bias = bool(cfg.get("bias", True))
    return _common(cfg, name, source, qkv_bias=bias, o_bias=bias)


_PARSERS = {
    "llama": _llama_like, "mistral": _llama_like, "phi3": _llama_like,
    "mixtral": _mixtral, "qwen2": _qwen2, "mimo": _qwen2, "qwen": _qwen_v1, "gemma": _gemma,
    "phi": _phi, "internlm": _internlm,
}  # gpt_neox, mpt and chatglm: predictor.model_families_classic (merged in by _registry)


def _registry() -> dict:
    from predictor.model_families import PARSERS
    from predictor.model_families_classic import PARSERS as CLASSIC
    from predictor.model_families_hybrid import PARSERS as HYBRID

    return {**_PARSERS, **CLASSIC, **PARSERS, **HYBRID}


def supported_families() -> tuple[str, ...]:
    """Every ``model_type`` a config may declare (classic and today's families)."""
    return tuple(_registry())


def parse_hf_config(cfg: object, name: str = "custom", source: str = "config.json") -> ModelSpec:
    """Build a :class:`ModelSpec` from a parsed HF ``config.json`` mapping.

    A multimodal wrapper (a config with a ``text_config`` object holding its own ``model_type``, as
    Kimi-K2.5, Llama-4 and Qwen3.5 ship) is parsed through its language model.

    Raises
    ------
    InputError
        Unsupported ``model_type`` (named in the message), missing or invalid keys.
    """
    if not isinstance(cfg, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    text = cfg.get("text_config")
    if isinstance(text, dict) and text.get("model_type") is not None and str(cfg.get("model_type")) not in _PARSERS:
        cfg, source = text, f"{source} text_config"
    model_type = cfg.get("model_type")
    if model_type is None:
        raise InputError(f"{source}: missing required key 'model_type'")
    parsers = _registry()
    if not isinstance(model_type, str) or model_type not in parsers:
        raise InputError(
            f"{source}: unsupported model_type {model_type!r}; allowed: {', '.join(parsers)}"
        )
    return parsers[model_type](cfg, name, source)


def read_config_file(path: str | Path, name: str | None = None) -> ModelSpec:
    """Parse a ``config.json`` file (or a folder holding one) into a :class:`ModelSpec`."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    cfg = read_json_file(path, "--model")  # a regular file, size, encoding and nesting checked
    return record_quantization(cfg, parse_hf_config(cfg, name=name or str(path), source=str(path)))


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, dict]:
    text = resources.files("predictor.catalog").joinpath("models.yaml").read_text(encoding="utf-8")
    return load_shipped(text)


@functools.lru_cache(maxsize=1)
def _alias_index() -> dict[str, str]:
    out = {}
    for name, entry in _index().items():
        out[name.lower()] = name
        for alias in entry.get("aliases", []):
            out[str(alias).lower()] = name
    return out


def model_names() -> list[str]:
    """Catalogue model names."""
    return sorted(_index())


def resolve_model_name(name: str) -> str | None:
    """Catalogue name for ``name`` or one of its aliases (HF ids included); ``None`` if unknown."""
    return _alias_index().get(str(name).lower())


def catalogue_config(name: str) -> dict:
    """The shipped config.json of catalogue entry ``name`` (parsed; a fresh copy)."""
    return json.loads(resources.files("predictor.catalog").joinpath(f"models/{name}.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=64)
def _catalogue_model(name: str) -> ModelSpec:
    return parse_hf_config(catalogue_config(name), name=name, source=f"catalog/models/{name}.json")


def get_model(name: str | ModelSpec | Path) -> ModelSpec:
    """Resolve a model from the catalogue (name or alias) or a ``config.json`` path.

    Parameters
    ----------
    name : str, Path or ModelSpec
        ``"llama-2-7b"``, ``"meta-llama/Llama-2-7b-hf"``, or a path to a config.json / model folder.
    """
    if isinstance(name, ModelSpec):
        return name
    key = resolve_model_name(str(name))
    if key is not None:
        return _catalogue_model(key)
    text = str(name)
    if text.endswith(".json") or "/" in text and Path(text).exists() or Path(text).is_dir():
        return read_config_file(text)
    raise unknown_name("--model", text, model_names())
