"""Parsers of hybrid and searched families, whose layers are not all alike (see :mod:`predictor.model_families`
for the shared helpers and the other families of today).

``nemotron_h`` (Nemotron-H / Nemotron-3: blocks of one Mamba-2 mixer, attention, MLP or latent MoE each) and
``nemotron-nas`` (Llama-Nemotron Super: a Llama with attention removed in some layers and per-layer MLP widths)
keep the mixers (attention or Mamba-2) as the spec's layers and count their MLP blocks apart
(``ModelSpec.num_mlp_layers``). ``kimi_linear`` (Kimi-Linear, Kimi-K3 under ``text_config``): Kimi delta attention
layers interleaved with gated MLA layers, latent MoE.
"""

from __future__ import annotations

from predictor.errors import InputError
from predictor.model_families import (
    _count,
    _flag,
    _fraction,
    _int,
    _layer_indices,
    _mla,
    _models,
    _optional,
    _topk,
)
from predictor.model_parts import KDASpec, Mamba2Spec


def _deci_width(mult: float, hidden: int) -> int:
    """DeciLM's MLP width for ``ffn_mult``: ⌊2·mult·hidden/3⌋ rounded up to a multiple of 256."""
    width = int(2 * mult * hidden / 3)
    return -(-width // 256) * 256


def nemotron_nas(cfg: dict, name: str, source: str):
    """Llama-Nemotron (DeciLM, ``nemotron-nas``): a Llama whose layers were searched per block (``block_configs``):
    attention removed in some layers (``no_op``), each MLP its own width (``ffn_mult``). Attention layers are the
    spec's layers and MLP blocks are counted apart (``num_mlp_layers``); the MLPs get their mean width, which keeps
    their weights and FLOPs (their GEMM shapes are averaged). Blocks replaced by a linear layer, and attention
    layers with different KV-head groupings, are not supported."""
    blocks = cfg.get("block_configs")
    layers = _int(cfg, "num_hidden_layers", source)
    if not isinstance(blocks, list) or len(blocks) != layers or not all(isinstance(b, dict) for b in blocks):
        raise InputError(f"{source}: key 'block_configs' must list one block per layer ({layers})")
    attention = [b.get("attention") or {} for b in blocks]
    ffn = [b.get("ffn") or {} for b in blocks]
    if any(part.get("replace_with_linear") for part in attention + ffn):
        raise InputError(f"{source}: block_configs with replace_with_linear are not supported; allowed: false")
    groups = {a.get("n_heads_in_group") for a in attention if not a.get("no_op")}
    heads = _int(cfg, "num_attention_heads", source)
    group = next(iter(groups)) if len(groups) == 1 else None
    if not isinstance(group, int) or isinstance(group, bool) or group < 1 or heads % group:
        raise InputError(f"{source}: block_configs must give every attention layer one n_heads_in_group dividing "
                         f"{heads} heads, got {sorted(map(str, groups))}")
    mults = [f.get("ffn_mult") for f in ffn if not f.get("no_op")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in mults):
        raise InputError(f"{source}: block_configs ffn_mult must be a number > 0 in every MLP block")
    widths = [_deci_width(float(v), _int(cfg, "hidden_size", source)) for v in mults]
    mixers = sum(1 for a in attention if not a.get("no_op"))
    spec = dict(cfg, num_hidden_layers=mixers, num_key_value_heads=heads // group,
                intermediate_size=round(sum(widths) / max(len(widths), 1)) or 1)
    return _models()._common(spec, name, source, mlp_bias=_flag(cfg, "mlp_bias", source),
                             num_mlp_layers=len(widths))


NEMOTRON_BLOCKS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}  # hybrid_override_pattern's letters


def _nemotron_blocks(cfg: dict, source: str) -> list[str]:
    """Each block's kind, from ``hybrid_override_pattern`` (one letter per block) or ``layers_block_type``."""
    pattern = cfg.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:
        unknown = sorted(set(pattern) - set(NEMOTRON_BLOCKS))
        if unknown:
            raise InputError(f"{source}: key 'hybrid_override_pattern' has unknown letter(s) {unknown}; allowed: "
                             f"{', '.join(NEMOTRON_BLOCKS)}")
        return [NEMOTRON_BLOCKS[c] for c in pattern]
    blocks = cfg.get("layers_block_type")
    if isinstance(blocks, list) and blocks:
        unknown = sorted({str(b) for b in blocks} - set(NEMOTRON_BLOCKS.values()))
        if unknown:
            raise InputError(f"{source}: key 'layers_block_type' has unknown value(s) {unknown}; allowed: "
                             f"{', '.join(NEMOTRON_BLOCKS.values())}")
        return [str(b) for b in blocks]
    raise InputError(f"{source}: missing required key 'hybrid_override_pattern' (or 'layers_block_type')")


def nemotron_h(cfg: dict, name: str, source: str):
    """Nemotron-H and Nemotron-3: a stack of blocks holding one Mamba-2 mixer, GQA attention, a ReLU² MLP or an
    MoE (routed experts in ``moe_latent_size`` when declared, plus a shared expert) each. The mixers are the
    spec's layers (``layer_types``: ``linear`` for Mamba-2, ``full`` for attention); the MLP blocks are counted
    apart (``num_mlp_layers``)."""
    blocks = _nemotron_blocks(cfg, source)
    declared = cfg.get("num_hidden_layers")
    if declared is not None and declared != len(blocks):
        raise InputError(f"{source}: num_hidden_layers ({declared}) differs from the {len(blocks)} blocks listed")
    mixers = tuple("linear" if b == "mamba" else "full" for b in blocks if b in ("mamba", "attention"))
    if not mixers:
        raise InputError(f"{source}: no mamba or attention block in the block pattern")
    mamba = Mamba2Spec(
        num_key_heads=_int(cfg, "n_groups", source), key_head_dim=_int(cfg, "ssm_state_size", source),
        num_value_heads=_int(cfg, "mamba_num_heads", source), value_head_dim=_int(cfg, "mamba_head_dim", source),
        conv_kernel=_int(cfg, "conv_kernel", source, default=4, required=False) or 4,
        conv_bias=_flag(cfg, "use_conv_bias", source, default=True),
    )
    moe_blocks = blocks.count("moe")
    moe = {}
    if moe_blocks:
        experts = _int(cfg, "n_routed_experts", source)
        moe = dict(num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
                   moe_intermediate_size=_int(cfg, "moe_intermediate_size", source), num_moe_layers=moe_blocks,
                   shared_expert_intermediate_size=_optional(cfg, "moe_shared_expert_intermediate_size", source),
                   moe_latent_size=_optional(cfg, "moe_latent_size", source),
                   router_bias=True)
    bias = _flag(cfg, "attention_bias", source)
    return _models()._common(
        dict(cfg, num_hidden_layers=len(mixers)), name, source, gated_mlp=False,
        activation=str(cfg.get("mlp_hidden_act", "relu2")), qkv_bias=bias, o_bias=bias,
        mlp_bias=_flag(cfg, "mlp_bias", source), rotary_fraction=_fraction(cfg, "partial_rotary_factor", source, 1.0),
        layer_types=mixers, linear_attention=mamba, num_mlp_layers=moe_blocks + blocks.count("mlp"), **moe,
    )


def kimi_linear(cfg: dict, name: str, source: str):
    """Kimi-Linear / Kimi-K3: ``linear_attn_config.kda_layers`` are Kimi delta attention, ``full_attn_layers`` MLA
    (with ``mla_use_output_gate`` a gate on each head's output; with ``mla_use_nope`` no RoPE); dense MLPs in the
    first ``first_k_dense_replace`` layers, then MoE whose routed experts work at ``routed_expert_hidden_size``
    (a latent width) beside ``num_shared_experts`` shared ones. Not checked against a published total: the
    config does not say which of KDA's gates ``use_full_rank_gate`` widens (the forget gate here), and its
    ``attn_res_block_size`` is not modelled."""
    layers = _int(cfg, "num_hidden_layers", source)
    la = cfg.get("linear_attn_config")
    if not isinstance(la, dict):
        raise InputError(f"{source}: missing required key 'linear_attn_config'")
    where = f"{source} linear_attn_config"
    kda = set(_layer_indices(la, "kda_layers", where, layers, first=1))
    full = set(_layer_indices(la, "full_attn_layers", where, layers, first=1))
    if kda & full or len(kda | full) != layers:
        raise InputError(f"{where}: kda_layers and full_attn_layers must split the {layers} layers between them")
    heads, head_dim = _int(la, "num_heads", where), _int(la, "head_dim", where)
    kda_spec = KDASpec(num_key_heads=heads, num_value_heads=heads, key_head_dim=head_dim, value_head_dim=head_dim,
                       conv_kernel=_optional(la, "short_conv_kernel_size", where) or 4,
                       full_rank_gate=_flag(la, "use_full_rank_gate", where))
    mla = _mla(cfg, source)
    experts = _int(cfg, "num_experts", source)
    width = _int(cfg, "moe_intermediate_size", source)
    latent = _optional(cfg, "routed_expert_hidden_size", source)
    first_dense = _count(cfg, "first_k_dense_replace", source)
    freq = _optional(cfg, "moe_layer_freq", source) or 1
    spec = dict(cfg, num_key_value_heads=_int(cfg, "num_attention_heads", source), head_dim=mla.qk_head_dim)
    return _models()._common(
        spec, name, source, mla=mla, linear_attention=kda_spec,
        layer_types=tuple("linear" if i in kda else "full" for i in range(layers)),
        attn_output_gate=_flag(cfg, "mla_use_output_gate", source),
        rotary_fraction=0.0 if _flag(cfg, "mla_use_nope", source) else mla.qk_rope_head_dim / mla.qk_head_dim,
        num_experts=experts,
        experts_per_token=_topk(cfg, source, experts, "num_experts_per_token", "num_experts_per_tok"),
        moe_intermediate_size=width,
        shared_expert_intermediate_size=_count(cfg, "num_shared_experts", source) * width,
        moe_latent_size=0 if latent == _int(cfg, "hidden_size", source) else latent,
        num_moe_layers=sum(1 for i in range(layers) if i >= first_dense and i % freq == 0),
        router_bias=cfg.get("topk_method") == "noaux_tc",
    )


PARSERS = {"nemotron_h": nemotron_h, "nemotron-nas": nemotron_nas, "kimi_linear": kimi_linear}
