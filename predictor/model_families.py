"""Hugging Face ``config.json`` parsers of today's model families (each a small function of the config).

Families: ``deepseek_v2``/``deepseek_v3``/``kimi_k2`` (MLA + fine-grained MoE with shared experts),
``deepseek_v32``/``glm_moe_dsa`` (the same plus DeepSeek sparse attention: GLM-5), ``deepseek_v4`` (compressed
sparse attention over one shared key/value head), ``qwen3``, ``qwen3_moe``, ``qwen3_next``/``qwen3_5*`` (gated
delta-net linear attention interleaved with gated full attention), ``gpt_oss`` (alternating sliding-window and
full attention with sinks, MoE with biases), ``glm4_moe``, ``minimax_m2``, ``minimax_m3`` / ``minimax_m3_vl``
(block-sparse GQA with an indexer, MoE with a shared expert after dense layers), ``llama4_text`` (chunked
attention, interleaved MoE with a shared expert), ``step3p7`` (Step-3.7-Flash: sliding and full GQA layers, MoE
with a shared expert), ``gemma4_text`` (Gemma-4: sliding and wider full GQA layers, keys as values, optional MoE
beside the MLP) and ``mimo_v2_flash`` (sliding and full GQA layers of their own KV heads, values narrower than
keys, MoE). NVIDIA's hybrids (Nemotron-H, Llama-Nemotron) are in :mod:`predictor.model_families_hybrid`.
Multimodal wrappers (``kimi_k25``, ``llama4``, ``qwen3_5_moe``, ...) hold the language model under
``text_config``; only that part is modelled (vision towers are neither counted nor costed).

Assumptions: multi-token-prediction layers (``num_nextn_predict_layers``, ``mtp_*``) are not part of
the served model (they are not counted; speculative use is a separate what-if); Llama-4's NoPE layers
(every ``4``-th, full attention) follow the published layout when the config does not list them.
"""

from __future__ import annotations

from predictor.errors import InputError
from predictor.model_parts import (
    HF_LAYER_TYPES,
    CompressedAttentionSpec,
    GlobalAttentionSpec,
    LinearAttentionSpec,
    MLASpec,
    SparseIndexSpec,
)

WRAPPER_KEY = "text_config"


def _models():
    from predictor import models  # late: models imports this module's registry lazily too

    return models


def _int(cfg: dict, key: str, source: str, default=None, required: bool = True):
    return _models()._get(cfg, key, source, default=default, required=required)


def _flag(cfg: dict, key: str, source: str, default: bool = False) -> bool:
    value = _models()._get(cfg, key, source, default=default, required=False, kind=bool)
    return bool(value) if value is not None else default


def _optional(cfg: dict, key: str, source: str) -> int:
    """A positive integer key that may be absent or null (0 then)."""
    return _int(cfg, key, source) if cfg.get(key) is not None else 0


def _count(cfg: dict, key: str, source: str) -> int:
    """A count ≥ 0 that may be absent or null (0 then): e.g. ``first_k_dense_replace``."""
    value = cfg.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{source}: key {key!r} must be an integer ≥ 0, got {value!r}")
    return value


def _layer_indices(cfg: dict, key: str, source: str, layers: int, first: int = 0) -> list[int]:
    """A list of layer indices (e.g. ``mlp_only_layers``) numbered from ``first``, returned 0-based; absent or
    null: none."""
    raw = cfg.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                            and first <= i < layers + first for i in raw):
        raise InputError(f"{source}: key {key!r} must list layer indices {first}..{layers - 1 + first}")
    return [i - first for i in raw]


def _fraction(cfg: dict, key: str, source: str, default: float) -> float:
    value = _models()._get(cfg, key, source, default=default, required=False, kind=float)
    return float(value) if value is not None else default


def _topk(cfg: dict, source: str, experts: int, *keys: str) -> int:
    for key in keys:
        if cfg.get(key) is not None:
            topk = _int(cfg, key, source)
            if topk > experts:
                raise InputError(f"{source}: {key} ({topk}) exceeds the number of experts ({experts})")
            return topk
    raise InputError(f"{source}: missing required key {keys[0]!r}")


def _layer_types(cfg: dict, source: str, layers: int, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    raw = cfg.get("layer_types")
    if raw is None:
        return default
    if not isinstance(raw, list) or len(raw) != layers:
        raise InputError(f"{source}: key 'layer_types' must list one type per layer ({layers}), got "
                         f"{len(raw) if isinstance(raw, list) else type(raw).__name__}")
    unknown = sorted({str(t) for t in raw if t not in HF_LAYER_TYPES})
    if unknown:
        raise InputError(f"{source}: key 'layer_types' has unknown value(s) {unknown}; allowed: "
                         f"{', '.join(HF_LAYER_TYPES)}")
    return tuple(HF_LAYER_TYPES[t] for t in raw)


def _moe_layers(layers: int, step: int = 1, first_dense: int = 0, dense_list=()) -> int:
    """MoE layers: index i ≥ ``first_dense``, not in ``dense_list``, with (i + 1) % ``step`` == 0 (HF's
    ``decoder_sparse_step`` / ``interleave_moe_layer_step`` rule; DeepSeek's ``moe_layer_freq`` uses i % step)."""
    dense = set(dense_list or ())
    return sum(1 for i in range(layers) if i >= first_dense and i not in dense and (i + 1) % step == 0)


# --- families ---------------------------------------------------------------------------------
def qwen3(cfg: dict, name: str, source: str):
    bias = _flag(cfg, "attention_bias", source)
    return _models()._common(cfg, name, source, qkv_bias=bias, o_bias=bias, qk_norm=True)


def qwen3_moe(cfg: dict, name: str, source: str):
    layers = _int(cfg, "num_hidden_layers", source)
    experts = _int(cfg, "num_experts", source)
    step = _int(cfg, "decoder_sparse_step", source, default=1, required=False) or 1
    dense_list = _layer_indices(cfg, "mlp_only_layers", source, layers)
    return _models()._common(
        cfg, name, source, qk_norm=True, num_experts=experts,
        experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        moe_intermediate_size=_int(cfg, "moe_intermediate_size", source),
        num_moe_layers=_moe_layers(layers, step, dense_list=dense_list),
    )


def _mla(cfg: dict, source: str) -> MLASpec:
    q_lora = cfg.get("q_lora_rank")
    return MLASpec(
        q_lora_rank=_int(cfg, "q_lora_rank", source) if q_lora is not None else 0,
        kv_lora_rank=_int(cfg, "kv_lora_rank", source),
        qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", source),
        qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", source),
        v_head_dim=_int(cfg, "v_head_dim", source),
    )


def _dsa_indexer(cfg: dict, source: str) -> SparseIndexSpec:
    """DeepSeek's sparse-attention indexer (``index_n_heads`` × ``index_head_dim``, keeping ``index_topk``)."""
    return SparseIndexSpec(heads=_int(cfg, "index_n_heads", source), head_dim=_int(cfg, "index_head_dim", source),
                           topk=_int(cfg, "index_topk", source))


def deepseek(cfg: dict, name: str, source: str):
    """DeepSeek-V2/V3/R1, Kimi-K2 and (with the indexer) DeepSeek-V3.2 and GLM-5."""
    layers = _int(cfg, "num_hidden_layers", source)
    heads = _int(cfg, "num_attention_heads", source)
    mla = _mla(cfg, source)
    experts = _int(cfg, "n_routed_experts", source)
    moe_inter = _int(cfg, "moe_intermediate_size", source)
    shared = _int(cfg, "n_shared_experts", source, default=0, required=False) if cfg.get("n_shared_experts") else 0
    first_dense = _count(cfg, "first_k_dense_replace", source)
    freq = _int(cfg, "moe_layer_freq", source, default=1, required=False) or 1
    sparse = _dsa_indexer(cfg, source) if cfg.get("index_topk") is not None else None
    spec = dict(cfg, num_key_value_heads=heads, head_dim=mla.qk_head_dim)
    return _models()._common(
        spec, name, source, mla=mla, sparse_index=sparse,
        qkv_bias=_flag(cfg, "attention_bias", source),
        rotary_fraction=mla.qk_rope_head_dim / mla.qk_head_dim,
        num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        moe_intermediate_size=moe_inter, shared_expert_intermediate_size=shared * moe_inter,
        num_moe_layers=sum(1 for i in range(layers) if i >= first_dense and i % freq == 0),
        router_bias=cfg.get("topk_method") == "noaux_tc",
    )


def deepseek_v4(cfg: dict, name: str, source: str):
    """DeepSeek-V4 (``deepseek_v4``; SGLang's reference configs say ``deepseek_ref``): compressed attention per
    layer from ``compress_ratios`` (0: the sliding window only; the lower ratio with the indexer, the higher one
    dense over its entries; entries past the layers belong to the multi-token-prediction layers and are dropped),
    MoE in every layer with a shared expert. The first ``num_hash_layers`` route by token hash (no router weights:
    counted as routed layers with a router, a few million parameters too many)."""
    layers = _int(cfg, "num_hidden_layers", source)
    ratios = cfg.get("compress_ratios")
    if not isinstance(ratios, list) or len(ratios) < layers or not all(isinstance(r, int) and r >= 0 for r in ratios):
        raise InputError(f"{source}: key 'compress_ratios' must list a ratio ≥ 0 for each of the {layers} layers")
    ratios = ratios[:layers]
    levels = sorted({r for r in ratios if r})
    if len(levels) > 2:
        raise InputError(f"{source}: compress_ratios has {len(levels)} compression ratios {levels}; allowed: at most 2")
    csa, hca = (levels + [0, 0])[:2]  # no ratio: window layers only; one: csa only
    kinds = tuple("window" if r == 0 else "csa" if r == csa else "hca" for r in ratios)
    spec = CompressedAttentionSpec(
        q_lora_rank=_int(cfg, "q_lora_rank", source), head_dim=_int(cfg, "head_dim", source),
        rope_dim=_int(cfg, "qk_rope_head_dim", source), o_lora_rank=_int(cfg, "o_lora_rank", source),
        o_groups=_int(cfg, "o_groups", source), window=_int(cfg, "sliding_window", source), csa_ratio=csa,
        hca_ratio=hca, indexer=_dsa_indexer(cfg, source), hc_mult=_optional(cfg, "hc_mult", source) or 1)
    if _int(cfg, "num_attention_heads", source) % spec.o_groups:
        raise InputError(f"{source}: o_groups ({spec.o_groups}) must divide num_attention_heads")
    experts = _int(cfg, "n_routed_experts", source)
    moe_inter = _int(cfg, "moe_intermediate_size", source)
    return _models()._common(
        dict(cfg, num_key_value_heads=1, intermediate_size=moe_inter), name, source, layer_types=kinds,
        compressed_attention=spec, rotary_fraction=spec.rope_dim / spec.head_dim,
        num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        moe_intermediate_size=moe_inter, shared_expert_intermediate_size=_count(cfg, "n_shared_experts", source)
        * moe_inter, router_bias=cfg.get("topk_method") == "noaux_tc",
    )


def glm4_moe(cfg: dict, name: str, source: str):
    layers = _int(cfg, "num_hidden_layers", source)
    experts = _int(cfg, "n_routed_experts", source)
    moe_inter = _int(cfg, "moe_intermediate_size", source)
    shared = _count(cfg, "n_shared_experts", source)
    bias = _flag(cfg, "attention_bias", source)
    return _models()._common(
        cfg, name, source, qkv_bias=bias, qk_norm=_flag(cfg, "use_qk_norm", source),
        rotary_fraction=_fraction(cfg, "partial_rotary_factor", source, 0.5),
        num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        moe_intermediate_size=moe_inter, shared_expert_intermediate_size=int(shared) * moe_inter,
        num_moe_layers=_moe_layers(layers, first_dense=_count(cfg, "first_k_dense_replace", source)),
        router_bias=True,
    )


def gpt_oss(cfg: dict, name: str, source: str):
    layers = _int(cfg, "num_hidden_layers", source)
    experts = _int(cfg, "num_local_experts", source)
    window = _int(cfg, "sliding_window", source, default=128, required=False) or 128
    bias = _flag(cfg, "attention_bias", source, default=True)
    default = tuple("sliding" if i % 2 == 0 else "full" for i in range(layers))
    return _models()._common(
        cfg, name, source, qkv_bias=bias, o_bias=bias, mlp_bias=True, router_bias=True, attention_sinks=True,
        num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok", "experts_per_token"),
        layer_types=_layer_types(cfg, source, layers, default), sliding_window=window,
    )


def minimax_m2(cfg: dict, name: str, source: str):
    experts = _int(cfg, "num_local_experts", source)
    head_dim = _int(cfg, "head_dim", source)
    rotary = _int(cfg, "rotary_dim", source, default=head_dim, required=False) or head_dim
    if rotary > head_dim:
        raise InputError(f"{source}: rotary_dim ({rotary}) exceeds head_dim ({head_dim})")
    shared = _count(cfg, "shared_intermediate_size", source)
    return _models()._common(
        cfg, name, source, qk_norm=_flag(cfg, "use_qk_norm", source), rotary_fraction=rotary / head_dim,
        num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        shared_expert_intermediate_size=int(shared), router_bias=_flag(cfg, "use_routing_bias", source),
    )


def _flags(cfg: dict, key: str, source: str, layers: int) -> list[bool] | None:
    """A per-layer 0/1 list (``moe_layer_freq``, ``sparse_attention_freq``); None when absent or not a list."""
    raw = cfg.get(key)
    if not isinstance(raw, list):
        return None
    if len(raw) != layers or any(v not in (0, 1) for v in raw):
        raise InputError(f"{source}: key {key!r} must list 0 or 1 for each of the {layers} layers")
    return [bool(v) for v in raw]


def minimax_m3(cfg: dict, name: str, source: str):
    """MiniMax-M3: MiniMax-M2's GQA with per-head QK norm and partial RoPE, dense MLPs (``dense_intermediate_size``)
    in the layers ``moe_layer_freq`` marks 0, MoE with a shared expert in the others, and block-sparse attention
    (``sparse_attention_config``) in the layers it marks: an indexer scores every cached key and each query keeps
    ``sparse_topk_blocks`` (+ local and initial) blocks of ``sparse_block_size`` tokens (layer kind ``sparse``)."""
    layers = _int(cfg, "num_hidden_layers", source)
    experts = _int(cfg, "num_local_experts", source)
    head_dim = _int(cfg, "head_dim", source)
    rotary = _int(cfg, "rotary_dim", source, default=head_dim, required=False) or head_dim
    moe = _flags(cfg, "moe_layer_freq", source, layers)
    first_dense = _count(cfg, "first_k_dense_replace", source)
    moe_layers = sum(moe) if moe is not None else _moe_layers(layers, first_dense=first_dense)
    types, sparse = (), None
    sa = cfg.get("sparse_attention_config")
    if isinstance(sa, dict) and sa.get("use_sparse_attention"):
        where = f"{source} sparse_attention_config"
        marks = _flags(sa, "sparse_attention_freq", where, layers)
        types = tuple("sparse" if on else "full" for on in (marks if marks is not None else [True] * layers))
        kept = _int(sa, "sparse_topk_blocks", where) + _count(sa, "sparse_local_block", where) \
            + _count(sa, "sparse_init_block", where)
        sparse = SparseIndexSpec(heads=_int(sa, "sparse_num_index_heads", where),
                                 head_dim=_int(sa, "sparse_index_dim", where),
                                 topk=kept * _int(sa, "sparse_block_size", where))
    expert = _optional(cfg, "moe_intermediate_size", source) or _int(cfg, "intermediate_size", source)
    dense = _optional(cfg, "dense_intermediate_size", source) or expert
    return _models()._common(
        dict(cfg, intermediate_size=dense), name, source, qk_norm=_flag(cfg, "use_qk_norm", source),
        rotary_fraction=rotary / head_dim, num_experts=experts,
        experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"), moe_intermediate_size=expert,
        shared_expert_intermediate_size=_optional(cfg, "shared_intermediate_size", source), num_moe_layers=moe_layers,
        router_bias=_flag(cfg, "use_routing_bias", source), layer_types=types, sparse_index=sparse,
    )


def minimax_m3_vl(cfg: dict, name: str, source: str):
    """MiniMax-M3's multimodal checkpoint: the language model under ``text_config`` (which names no model_type)."""
    text = cfg.get(WRAPPER_KEY)
    if not isinstance(text, dict):
        raise InputError(f"{source}: missing required key {WRAPPER_KEY!r}")
    return minimax_m3(dict(text, model_type="minimax_m3"), name, f"{source} {WRAPPER_KEY}")


def llama4(cfg: dict, name: str, source: str):
    layers = _int(cfg, "num_hidden_layers", source)
    experts = _int(cfg, "num_local_experts", source)
    expert_width = _int(cfg, "intermediate_size", source)
    dense_width = _int(cfg, "intermediate_size_mlp", source, default=expert_width, required=False) or expert_width
    step = _int(cfg, "interleave_moe_layer_step", source, default=1, required=False) or 1
    chunk = _int(cfg, "attention_chunk_size", source, default=8192, required=False) or 8192
    nope = cfg.get("no_rope_layers")
    if isinstance(nope, list) and len(nope) == layers:  # HF: 1 = this layer uses RoPE (chunked), 0 = NoPE (full)
        types = tuple("chunked" if flag else "full" for flag in nope)
    else:
        types = tuple("full" if (i + 1) % 4 == 0 else "chunked" for i in range(layers))
    spec = dict(cfg, intermediate_size=dense_width)
    return _models()._common(
        spec, name, source, num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        moe_intermediate_size=expert_width, shared_expert_intermediate_size=expert_width,
        num_moe_layers=_moe_layers(layers, step), layer_types=types, sliding_window=chunk,
        qk_norm=_flag(cfg, "use_qk_norm", source),
    )


def qwen3_next(cfg: dict, name: str, source: str):
    """Qwen3-Next and Qwen3.5 (dense or MoE): gated delta-net layers with gated full attention every
    ``full_attention_interval``-th layer."""
    layers = _int(cfg, "num_hidden_layers", source)
    interval = _int(cfg, "full_attention_interval", source, default=4, required=False) or 4
    default = tuple("full" if (i + 1) % interval == 0 else "linear" for i in range(layers))
    linear = LinearAttentionSpec(
        num_key_heads=_int(cfg, "linear_num_key_heads", source),
        num_value_heads=_int(cfg, "linear_num_value_heads", source),
        key_head_dim=_int(cfg, "linear_key_head_dim", source),
        value_head_dim=_int(cfg, "linear_value_head_dim", source),
        conv_kernel=_int(cfg, "linear_conv_kernel_dim", source, default=4, required=False) or 4,
    )
    moe, spec = {}, cfg
    if cfg.get("num_experts"):
        experts = _int(cfg, "num_experts", source)
        step = _int(cfg, "decoder_sparse_step", source, default=1, required=False) or 1
        moe = dict(num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
                   moe_intermediate_size=_int(cfg, "moe_intermediate_size", source),
                   shared_expert_intermediate_size=_count(cfg, "shared_expert_intermediate_size", source),
                   shared_expert_gate=bool(cfg.get("shared_expert_intermediate_size")),
                   num_moe_layers=_moe_layers(layers, step, dense_list=_layer_indices(cfg, "mlp_only_layers", source,
                                                                                      layers)))
        if cfg.get("intermediate_size") is None:  # every layer MoE: no dense width declared
            spec = dict(cfg, intermediate_size=moe["moe_intermediate_size"])
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else cfg
    return _models()._common(
        spec, name, source, qk_norm=True, attn_output_gate=_flag(cfg, "attn_output_gate", source, default=True),
        rotary_fraction=_fraction(rope, "partial_rotary_factor", source, 0.25),
        layer_types=_layer_types(cfg, source, layers, default), linear_attention=linear, **moe,
    )


def step3p7(cfg: dict, name: str, source: str):
    """Step-3.7-Flash: full and sliding-window GQA layers (``layer_types``), dense MLPs in the first
    ``first_k_dense_replace`` layers, then fine-grained MoE with ``n_shared_experts`` × ``share_expert_dim``."""
    layers = _int(cfg, "num_hidden_layers", source)
    experts = _int(cfg, "num_experts", source)
    copies = _count(cfg, "n_shared_experts", source) if cfg.get("n_shared_experts") is not None else 1
    shared = copies * _count(cfg, "share_expert_dim", source)
    return _models()._common(
        cfg, name, source, qk_norm=_flag(cfg, "use_qk_norm", source),
        num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        moe_intermediate_size=_int(cfg, "moe_intermediate_size", source), shared_expert_intermediate_size=shared,
        num_moe_layers=_moe_layers(layers, first_dense=_count(cfg, "first_k_dense_replace", source)),
        router_bias=_flag(cfg, "use_moe_router_bias", source),
        layer_types=_layer_types(cfg, source, layers), sliding_window=_optional(cfg, "sliding_window", source),
    )


def gemma4(cfg: dict, name: str, source: str):
    """Gemma-4: sliding-window and full GQA layers (``layer_types``), the full ones with their own head width and
    KV heads (``global_head_dim``, ``num_global_key_value_heads``; values equal to keys with
    ``attention_k_eq_v``), tied embeddings, GeGLU MLP; with ``enable_moe_block`` every layer adds routed experts
    (``num_experts``, ``top_k_experts`` × ``moe_intermediate_size``) beside its dense MLP (counted as an always-on
    shared expert of ``intermediate_size``). Gemma's extra per-layer norms (four, not two) are not counted."""
    layers = _int(cfg, "num_hidden_layers", source)
    head_dim = _int(cfg, "head_dim", source)
    kv = _int(cfg, "num_key_value_heads", source)
    glob = GlobalAttentionSpec(head_dim=_optional(cfg, "global_head_dim", source) or head_dim,
                               kv_heads=_optional(cfg, "num_global_key_value_heads", source) or kv,
                               k_eq_v=_flag(cfg, "attention_k_eq_v", source))
    moe = {}
    if cfg.get("enable_moe_block"):
        experts = _int(cfg, "num_experts", source)
        moe = dict(num_experts=experts, experts_per_token=_topk(cfg, source, experts, "top_k_experts"),
                   moe_intermediate_size=_int(cfg, "moe_intermediate_size", source),
                   shared_expert_intermediate_size=_int(cfg, "intermediate_size", source))
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    bias = _flag(cfg, "attention_bias", source)
    return _models()._common(
        dict(cfg, tie_word_embeddings=cfg.get("tie_word_embeddings", True)), name, source, activation=str(act),
        qkv_bias=bias, o_bias=bias, qk_norm=True, layer_types=_layer_types(cfg, source, layers),
        sliding_window=_optional(cfg, "sliding_window", source), global_attention=glob, **moe,
    )


def mimo_v2(cfg: dict, name: str, source: str):
    """MiMo-V2-Flash: sliding-window layers (``hybrid_layer_pattern`` 1; ``swa_num_key_value_heads``, sinks) and
    full layers (0; ``num_key_value_heads``), 192-wide queries and keys with ``v_head_dim``-wide values, dense
    MLPs where ``moe_layer_freq`` is 0 and routed experts elsewhere."""
    layers = _int(cfg, "num_hidden_layers", source)
    experts = _int(cfg, "n_routed_experts", source)
    pattern = _flags(cfg, "hybrid_layer_pattern", source, layers)
    types = tuple("sliding" if swa else "full" for swa in (pattern or [False] * layers))
    moe = _flags(cfg, "moe_layer_freq", source, layers)
    head_dim = _int(cfg, "head_dim", source)
    full_kv = _int(cfg, "num_key_value_heads", source)
    swa_kv = _optional(cfg, "swa_num_key_value_heads", source) or full_kv
    if _optional(cfg, "swa_num_attention_heads", source) not in (0, _int(cfg, "num_attention_heads", source)):
        raise InputError(f"{source}: swa_num_attention_heads must equal num_attention_heads (one query width)")
    shared = _count(cfg, "n_shared_experts", source) * _int(cfg, "moe_intermediate_size", source)
    return _models()._common(
        dict(cfg, num_key_value_heads=swa_kv), name, source, layer_types=types,
        sliding_window=_optional(cfg, "sliding_window", source), v_head_dim=_optional(cfg, "v_head_dim", source),
        global_attention=GlobalAttentionSpec(head_dim=head_dim, kv_heads=full_kv),
        rotary_fraction=_fraction(cfg, "partial_rotary_factor", source, 1.0),
        attention_sinks=_flag(cfg, "add_swa_attention_sink_bias", source),
        num_experts=experts, experts_per_token=_topk(cfg, source, experts, "num_experts_per_tok"),
        moe_intermediate_size=_int(cfg, "moe_intermediate_size", source), shared_expert_intermediate_size=shared,
        num_moe_layers=sum(moe) if moe is not None else -1, router_bias=cfg.get("topk_method") == "noaux_tc",
    )


PARSERS = {
    "deepseek_v2": deepseek, "deepseek_v3": deepseek, "deepseek_v32": deepseek, "kimi_k2": deepseek,
    "deepseek_v4": deepseek_v4, "deepseek_ref": deepseek_v4,
    "glm_moe_dsa": deepseek, "glm4_moe": glm4_moe, "qwen3": qwen3, "qwen3_moe": qwen3_moe,
    "qwen3_vl_text": qwen3, "qwen3_vl_moe_text": qwen3_moe,
    "qwen3_next": qwen3_next, "qwen3_5_text": qwen3_next, "qwen3_5_moe_text": qwen3_next,
    "gpt_oss": gpt_oss, "minimax_m2": minimax_m2, "llama4_text": llama4,
    "step3p7": step3p7, "minimax_m3": minimax_m3, "minimax_m3_vl": minimax_m3_vl, "gemma4_text": gemma4,
    "mimo_v2_flash": mimo_v2,
}
