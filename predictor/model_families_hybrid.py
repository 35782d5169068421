"""Parsers of NVIDIA's searched and hybrid families, whose layers are not all alike (see
:mod:`predictor.model_families` for the shared helpers and the other families of today).

``nemotron_h`` (Nemotron-H / Nemotron-3: blocks of one Mamba-2 mixer, attention, MLP or latent MoE each) and
``nemotron-nas`` (Llama-Nemotron Super: a Llama with attention removed in some layers and per-layer MLP widths).
Both keep the mixers (attention or Mamba-2) as the spec's layers and count their MLP blocks apart
(``ModelSpec.num_mlp_layers``).
"""

from __future__ import annotations

from predictor.errors import InputError
from predictor.model_families import _flag, _fraction, _int, _models, _optional, _topk
from predictor.model_parts import Mamba2Spec


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
    if len(groups) != 1 or not isinstance(next(iter(groups)), int) or heads % next(iter(groups)):
        raise InputError(f"{source}: block_configs must give every attention layer one n_heads_in_group dividing "
                         f"{heads} heads, got {sorted(map(str, groups))}")
    widths = [_deci_width(float(f.get("ffn_mult") or 0), _int(cfg, "hidden_size", source))
              for f in ffn if not f.get("no_op")]
    mixers = sum(1 for a in attention if not a.get("no_op"))
    spec = dict(cfg, num_hidden_layers=mixers, num_key_value_heads=heads // next(iter(groups)),
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


PARSERS = {"nemotron_h": nemotron_h, "nemotron-nas": nemotron_nas}
