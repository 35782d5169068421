"""Parsers of the less common classic families (GPT-NeoX, MPT, ChatGLM); see :mod:`predictor.models` for the
conventions each follows (its module docstring describes these three families' config keys)."""

from __future__ import annotations

from predictor.errors import InputError
from predictor.model_spec import ModelSpec
from predictor.models import _common, _get

def _gpt_neox(cfg: dict, name: str, source: str) -> ModelSpec:
    # GPT-NeoX keeps two LayerNorms per layer whether or not the residual is parallel.
    bias = _get(cfg, "attention_bias", source, default=True, required=False, kind=bool)
    parallel = _get(cfg, "use_parallel_residual", source, default=True, required=False, kind=bool)
    spec = dict(cfg, hidden_act=cfg.get("hidden_act", "gelu"))
    return _common(
        spec, name, source,
        gated_mlp=False, norm="layer", qkv_bias=bias, o_bias=bias, mlp_bias=True, lm_head_bias=False,
        parallel_attn_mlp=parallel, norms_per_layer=2,
        rotary_fraction=_get(cfg, "rotary_pct", source, default=0.25, required=False, kind=float) or 0.25,
    )


def _mpt(cfg: dict, name: str, source: str) -> ModelSpec:
    d_model = _get(cfg, "d_model", source)
    heads = _get(cfg, "n_heads", source)
    ratio = cfg.get("expansion_ratio", 4)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 64:
        raise InputError(f"{source}: key 'expansion_ratio' must be a positive number, got {ratio!r}")
    attn = cfg.get("attn_config") or {}
    if not isinstance(attn, dict):
        raise InputError(f"{source}: key 'attn_config' must be an object, got {attn!r}")
    attn_type = attn.get("attn_type", "multihead_attention")
    if attn_type == "multiquery_attention":
        kv = 1
    elif attn_type == "grouped_query_attention":
        kv = _get(attn, "kv_n_heads", f"{source} attn_config")
    else:
        kv = heads
    if attn.get("alibi", False):
        rotary = 0.0
    elif attn.get("rope", False):
        rotary = 1.0
    else:
        raise InputError(f"{source}: MPT with learned position embeddings (attn_config.alibi and rope both false) "
                         "is not supported")
    bias = _get(cfg, "no_bias", source, default=True, required=False, kind=bool) is False
    act_fn = (cfg.get("ffn_config") or {}).get("ffn_act_fn") if isinstance(cfg.get("ffn_config"), dict) else None
    act = str(act_fn.get("name", "gelu")) if isinstance(act_fn, dict) else "gelu"
    spec = dict(
        model_type="mpt",
        hidden_size=d_model,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        num_hidden_layers=_get(cfg, "n_layers", source),
        intermediate_size=int(round(ratio * d_model)),
        vocab_size=_get(cfg, "vocab_size", source),
        max_position_embeddings=_get(cfg, "max_seq_len", source, default=2048, required=False),
        hidden_act=act,
        tie_word_embeddings=_get(cfg, "tie_word_embeddings", source, default=True, required=False, kind=bool)
        is not False,
    )
    return _common(
        spec, name, source,
        gated_mlp=False, norm="layer", norm_bias=bias, qkv_bias=bias, o_bias=bias, mlp_bias=bias,
        rotary_fraction=rotary,
    )


def _chatglm(cfg: dict, name: str, source: str) -> ModelSpec:
    hidden = _get(cfg, "hidden_size", source)
    heads = _get(cfg, "num_attention_heads", source)
    mqa = _get(cfg, "multi_query_attention", source, default=False, required=False, kind=bool)
    kv = _get(cfg, "multi_query_group_num", source) if mqa else heads
    vocab_key = "padded_vocab_size" if "padded_vocab_size" in cfg else "vocab_size"
    linear_bias = _get(cfg, "add_bias_linear", source, default=False, required=False, kind=bool)
    qkv_bias = _get(cfg, "add_qkv_bias", source, default=False, required=False, kind=bool)
    rms = _get(cfg, "rmsnorm", source, default=True, required=False, kind=bool)
    spec = dict(
        model_type="chatglm",
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=_get(cfg, "kv_channels", source, default=hidden // heads, required=False),
        num_hidden_layers=_get(cfg, "num_layers", source),
        intermediate_size=_get(cfg, "ffn_hidden_size", source),
        vocab_size=_get(cfg, vocab_key, source),
        max_position_embeddings=_get(cfg, "seq_length", source, default=8192, required=False),
        tie_word_embeddings=_get(cfg, "tie_word_embeddings", source, default=False, required=False, kind=bool),
    )
    return _common(
        spec, name, source,
        activation="silu", norm="rms" if rms else "layer",
        qkv_bias=qkv_bias or linear_bias, o_bias=linear_bias, mlp_bias=linear_bias, rotary_fraction=0.5,
    )


PARSERS = {"gpt_neox": _gpt_neox, "mpt": _mpt, "chatglm": _chatglm}
