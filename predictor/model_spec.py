"""The architecture spec of a decoder-only model: :class:`ModelSpec`, the numbers the roofline needs, with its
derived sizes (parameters, KV-cache and per-sequence bytes) and the parallel layouts it allows.

Specs are built from Hugging Face ``config.json`` files by :mod:`predictor.models` (classic families) and
:mod:`predictor.model_families` (today's); the parts that classic decoders lack are in :mod:`predictor.model_parts`.

Assumptions (stated once, used everywhere):

* Linear layers store ``weight_bits`` per parameter (quantisation applies to them only);
  embeddings, lm_head, norms and biases stay 16-bit.
* Parameter counts include every weight and bias, and count tied embeddings once.
* Mistral-7B-v0.1's sliding window (4,096, equal to its context) is treated as full attention;
  today's families declare their sliding, chunked and linear-attention layers (``layer_types``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from predictor.errors import InputError
from predictor.model_parts import (
    CompressedAttentionSpec,
    GlobalAttentionSpec,
    LinearAttentionSpec,
    MLASpec,
    SparseIndexSpec,
)


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer.

    Attributes
    ----------
    name : str
        Catalogue name or the config's path.
    family : str
        HF ``model_type``.
    hidden_size, intermediate_size : int
        Model width and MLP (per-expert for MoE) width.
    num_layers, num_heads, num_kv_heads, head_dim : int
        Decoder layers; query heads; key/value heads (GQA when fewer than query heads); head width.
    vocab_size, max_position_embeddings : int
        Vocabulary rows; context limit in tokens.
    gated_mlp : bool
        Gate/up/down MLP (SwiGLU/GeGLU) rather than up/down.
    activation : str
        MLP activation name.
    norm : str
        ``"rms"`` or ``"layer"`` (LayerNorm has a bias, 2 parameters per channel, unless ``norm_bias``
        is false).
    norm_bias : bool
        LayerNorm carries a bias (MPT's ``no_bias`` LayerNorm does not); ignored for RMSNorm.
    qkv_bias, o_bias, mlp_bias, lm_head_bias : bool
        Which linear layers carry a bias.
    tie_word_embeddings : bool
        lm_head shares the embedding matrix.
    parallel_attn_mlp : bool
        Attention and MLP read the same layer input and add into one residual (phi-2, GPT-NeoX with
        ``use_parallel_residual``): one residual add per layer.
    norms_per_layer : int
        Norms in each decoder layer; 0 (the default) means 1 for parallel models and 2 otherwise.
        GPT-NeoX's parallel layers keep two LayerNorms (one for attention, one for the MLP).
    num_experts, experts_per_token : int
        MoE experts per layer and top-k; 0 and 0 for dense models.
    rotary_fraction : float
        Fraction of each head's dims that get RoPE.
    moe_intermediate_size : int
        Width of one routed expert (0: ``intermediate_size``, as Mixtral declares it); ``intermediate_size``
        is then the width of the dense layers' MLP.
    num_moe_layers : int
        Layers with an MoE block (-1: every layer of an MoE model); the others have a dense MLP
        (DeepSeek's ``first_k_dense_replace``, Llama-4 Maverick's interleaving).
    shared_expert_intermediate_size : int
        Total width of the always-active shared experts of an MoE layer (0: none).
    shared_expert_gate, router_bias : bool
        Qwen's sigmoid gate on the shared expert (hidden parameters); a per-expert router bias
        (gpt-oss, DeepSeek's score-correction bias).
    layer_types : tuple of str
        Attention kind of each layer (:data:`predictor.model_parts.ATTENTION_KINDS`); empty: every layer
        ``full`` (``mla`` for MLA models).
    sliding_window : int
        Window of ``sliding`` layers, or the chunk of ``chunked`` ones (Llama-4), in tokens.
    qk_norm, attn_output_gate, attention_sinks : bool
        RMSNorm on each query and key head (Qwen3, MiniMax); a sigmoid output gate doubling the query
        projection (Qwen3.5); a learned sink logit per head (gpt-oss; one extra score per query, not costed).
    mla, sparse_index, linear_attention : optional parts
        See :mod:`predictor.model_parts` (``linear_attention`` may be a Mamba-2 mixer, Nemotron-H).
    num_mlp_layers : int
        Layers with an MLP block (-1: every layer). Hybrid models whose blocks each hold one mixer or one MLP
        (Nemotron-H) count their mixers in ``num_layers`` and their MLP blocks here; each block has one norm.
    compressed_attention : CompressedAttentionSpec, optional
        DeepSeek-V4's attention (layer kinds ``window``, ``csa`` and ``hca``); see :mod:`predictor.model_parts`.
    v_head_dim : int
        Value (and attention output) width per head of the GQA layers when it differs from ``head_dim``
        (MiMo-V2: 192-wide queries and keys, 128-wide values); 0: ``head_dim``.
    global_attention : GlobalAttentionSpec, optional
        The ``full`` layers' own head width and KV heads (Gemma-4); None: every GQA layer has the model's.
    moe_latent_size : int
        Width the routed experts work in (0: ``hidden_size``). Nemotron-3's latent MoE projects each token
        down to it before dispatch and back up after the combine (two more GEMMs per MoE layer).
    """

    name: str
    family: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    gated_mlp: bool = True
    activation: str = "silu"
    norm: str = "rms"
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    tie_word_embeddings: bool = False
    parallel_attn_mlp: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    rotary_fraction: float = 1.0
    norm_bias: bool = True
    norms_per_layer: int = 0
    moe_intermediate_size: int = 0
    num_moe_layers: int = -1
    shared_expert_intermediate_size: int = 0
    shared_expert_gate: bool = False
    router_bias: bool = False
    layer_types: tuple[str, ...] = ()
    sliding_window: int = 0
    qk_norm: bool = False
    attn_output_gate: bool = False
    attention_sinks: bool = False
    mla: MLASpec | None = None
    sparse_index: SparseIndexSpec | None = None
    linear_attention: LinearAttentionSpec | None = None
    num_mlp_layers: int = -1
    moe_latent_size: int = 0
    global_attention: GlobalAttentionSpec | None = None
    v_head_dim: int = 0
    compressed_attention: CompressedAttentionSpec | None = None

    def __post_init__(self) -> None:
        if self.norms_per_layer == 0:
            object.__setattr__(self, "norms_per_layer", 1 if self.parallel_attn_mlp else 2)
        elif self.norms_per_layer not in (1, 2):
            raise InputError(f"{self.name}: norms_per_layer must be 1 or 2, got {self.norms_per_layer!r}")

    # --- derived sizes ------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_size(self) -> int:
        """Query projection width, heads × head_dim."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Key (or value) projection width, kv_heads × head_dim."""
        return self.num_kv_heads * self.head_dim

    @property
    def expert_intermediate_size(self) -> int:
        """Width of one routed expert's MLP."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def mlp_layer_count(self) -> int:
        """Layers (blocks) with an MLP, dense or MoE."""
        return self.num_layers if self.num_mlp_layers < 0 else self.num_mlp_layers

    @property
    def moe_layer_count(self) -> int:
        """Layers with an MoE block."""
        if not self.is_moe:
            return 0
        return self.mlp_layer_count if self.num_moe_layers < 0 else self.num_moe_layers

    @property
    def dense_layer_count(self) -> int:
        """Layers with a dense MLP."""
        return self.mlp_layer_count - self.moe_layer_count

    @property
    def expert_input_size(self) -> int:
        """Width of a routed expert's input and output: the latent (Nemotron-3) or the hidden size."""
        return self.moe_latent_size or self.hidden_size

    @property
    def layer_norm_count(self) -> int:
        """Norms inside the decoder layers (the final norm excluded): ``norms_per_layer`` per layer, or one per
        mixer block and one per MLP block when not every layer has an MLP (``num_mlp_layers``)."""
        if self.num_mlp_layers < 0:
            return self.num_layers * self.norms_per_layer
        return self.num_layers + self.num_mlp_layers

    def attention_layer_counts(self) -> dict[str, int]:
        """Layers per attention kind, e.g. ``{"sliding": 18, "full": 18}`` for gpt-oss."""
        base = "mla" if self.mla is not None else "full"
        if not self.layer_types:
            return {base: self.num_layers}
        counts: dict[str, int] = {}
        for kind in self.layer_types:
            kind = base if kind == "full" else kind
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def gqa_shape(self, kind: str = "full") -> tuple[int, int, int, int]:
        """(query/key head width, value head width, KV heads, cached tensors per KV head: 2, or 1 when the values
        are the keys) of a GQA layer of ``kind``."""
        g = self.global_attention
        if kind == "full" and g is not None:
            return g.head_dim, g.head_dim if g.k_eq_v else self.v_head_dim or g.head_dim, g.kv_heads, g.kv_tensors
        return self.head_dim, self.v_head_dim or self.head_dim, self.num_kv_heads, 2

    def _gqa_attention_params(self, kind: str = "full") -> int:
        h = self.hidden_size
        head_dim, v_dim, _, _ = self.gqa_shape(kind)
        q, kv = self.num_heads * head_dim, self.kv_elems_per_token(1, kind)  # K and V projections (K alone if K = V)
        params = h * (q + kv) + self.num_heads * v_dim * h
        if self.qkv_bias:
            params += q + kv
        if self.o_bias:
            params += h
        if self.attn_output_gate:
            params += h * self.num_heads * v_dim  # the gate on each head's output, projected with the query
        if self.qk_norm:
            params += 2 * head_dim
        if self.attention_sinks:
            params += self.num_heads
        return params

    def attention_params(self, kind: str | None = None) -> int:
        """Weights and biases of one layer's attention block of ``kind`` (default: the model's main kind)."""
        kind = kind or ("mla" if self.mla is not None else "full")
        h = self.hidden_size
        if kind == "mla":
            params = self.mla.linear_params(h, self.num_heads) + self.mla.norm_params()
            if self.attn_output_gate:  # a sigmoid gate on each head's output, projected from the hidden state
                params += h * self.num_heads * self.mla.v_head_dim
            if self.sparse_index is not None:
                params += self.sparse_index.linear_params(h, self.mla.q_lora_rank) + self.sparse_index.norm_params()
            return params
        if kind == "linear":
            return self.linear_attention.linear_params(h) + self.linear_attention.small_params()
        if kind == "sparse":  # block-sparse GQA (MiniMax-M3): queries of the indexer come from the hidden state
            indexer = self.sparse_index.linear_params(h, h) + self.sparse_index.norm_params()
            return self._gqa_attention_params() + indexer
        if kind in ("window", "csa", "hca"):
            ca = self.compressed_attention
            return ca.linear_params(h, self.num_heads, kind) + ca.norm_params(kind)
        return self._gqa_attention_params(kind)

    def dense_mlp_params(self, width: int | None = None, hidden: int | None = None) -> int:
        """Weights and biases of a dense MLP of ``width`` (default ``intermediate_size``) on inputs of ``hidden``
        (default ``hidden_size``)."""
        h, f = hidden or self.hidden_size, width if width is not None else self.intermediate_size
        n_in = 2 if self.gated_mlp else 1
        params = n_in * h * f + f * h
        if self.mlp_bias:
            params += n_in * f + h
        return params

    def expert_params(self) -> int:
        """One routed expert (weights and biases)."""
        return self.dense_mlp_params(self.expert_intermediate_size, self.expert_input_size)

    def shared_expert_params(self) -> int:
        """The shared experts of one MoE layer, with Qwen's gate."""
        if not self.shared_expert_intermediate_size:
            return 0
        params = self.dense_mlp_params(self.shared_expert_intermediate_size)
        return params + (self.hidden_size if self.shared_expert_gate else 0)

    def mlp_params(self) -> int:
        """Weights and biases of one MoE layer's MLP block (all experts, shared experts and the router) for an
        MoE model, else of the dense MLP."""
        if self.is_moe:
            latent = 2 * self.hidden_size * self.moe_latent_size  # the down and up projections around the experts
            return (self.num_experts * self.expert_params() + self.router_params() + self.shared_expert_params()
                    + latent)
        return self.dense_mlp_params()

    def norm_params_per_norm(self) -> int:
        return self.hidden_size * (2 if self.norm == "layer" and self.norm_bias else 1)

    def layer_params(self) -> int:
        """All parameters of one decoder layer of the main kind (classic models: every layer)."""
        return self.attention_params() + self.mlp_params() + self.norms_per_layer * self.norm_params_per_norm()

    def linear_params_per_layer(self) -> int:
        """Parameters of the quantisable linear weights of one classic layer (no biases, no norms)."""
        h, f = self.hidden_size, self.expert_intermediate_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        n_in = 2 if self.gated_mlp else 1
        mlp = (n_in * h * f + f * h) * max(self.num_experts, 1)
        return attn + mlp

    def router_params(self) -> int:
        """MoE router weights (and bias) of one MoE layer (0 for dense models)."""
        if not self.is_moe:
            return 0
        return self.hidden_size * self.num_experts + (self.num_experts if self.router_bias else 0)

    def small_params_per_layer(self) -> int:
        """Biases and norm weights of one classic layer (everything but linear weights and the router)."""
        return self.layer_params() - self.linear_params_per_layer() - self.router_params()

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def lm_head_params(self) -> int:
        """lm_head weights (0 when tied to the embedding) plus its bias."""
        params = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return params + (self.vocab_size if self.lm_head_bias else 0)

    def param_count(self) -> int:
        """Total parameters (tied embeddings counted once; multi-token-prediction heads not counted)."""
        attention = sum(n * self.attention_params(kind) for kind, n in self.attention_layer_counts().items())
        mlp = self.dense_layer_count * self.dense_mlp_params() + self.moe_layer_count * self.mlp_params()
        norms = self.layer_norm_count * self.norm_params_per_norm()
        return (
            self.embedding_params() + attention + mlp + norms
            + self.norm_params_per_norm()  # final norm
            + self.lm_head_params()
        )

    def active_param_count(self) -> int:
        """Parameters touched per token (MoE: only the top-k routed experts, plus the shared ones)."""
        idle = (self.num_experts - self.experts_per_token) * self.expert_params() if self.is_moe else 0
        return self.param_count() - self.moe_layer_count * idle

    def kv_heads_per_gpu(self, tp: int) -> int:
        """KV heads held by one GPU at tensor parallelism ``tp`` (replicated when kv_heads < tp)."""
        return max(1, self.num_kv_heads // tp)

    def kv_elems_per_token(self, tp: int, kind: str) -> int:
        """Elements one GQA layer of ``kind`` caches per token on one GPU (keys and values of its KV heads/tp;
        keys alone where the values are the keys): also the width of its K and V projections."""
        head_dim, v_dim, kv_heads, tensors = self.gqa_shape(kind)
        return max(1, kv_heads // tp) * (head_dim + (v_dim if tensors == 2 else 0))

    def kv_cache_bytes_per_token(self, kv_bits: int = 16, tp: int = 1) -> float:
        """KV-cache bytes per token on one GPU, over the layers that cache every token.

        GQA layers: 2 (K and V; 1 where the values are the keys) × kv_heads/tp × head_dim (the full layers'
        own shape with :attr:`global_attention`); DeepSeek-V4's layers: their compressed entries' share
        (:meth:`~predictor.model_parts.CompressedAttentionSpec.cached_per_token`); MLA layers: the latent
        (kv_lora_rank + rope dims), the same on every TP rank (it is not split by heads), plus the sparse indexer's
        key (DSA); sliding/chunked and linear-attention layers cache per sequence instead
        (:meth:`per_sequence_cache_bytes`). Times the KV element bytes.
        """
        counts = self.attention_layer_counts()
        if self.compressed_attention is not None:  # DeepSeek-V4: compressed entries (one head, not split by TP)
            return sum(n * self.compressed_attention.cached_per_token(kind) for kind, n in counts.items()) \
                * kv_bits / 8
        sparse = counts.get("sparse", 0)  # block-sparse GQA layers cache every token, and the indexer's key
        elems = sparse * self.kv_elems_per_token(tp, "sparse")
        if counts.get("full"):
            elems += counts["full"] * self.kv_elems_per_token(tp, "full")
        if sparse:
            elems += sparse * self.sparse_index.head_dim
        if self.mla is not None:
            per_layer = self.mla.latent_dim + (self.sparse_index.head_dim if self.sparse_index is not None else 0)
            elems += counts.get("mla", 0) * per_layer
        return elems * kv_bits / 8

    def per_sequence_cache_bytes(self, kv_bits: int = 16, tp: int = 1) -> float:
        """Cache bytes one running sequence holds on one GPU whatever its length (upper bound): the full
        window of every sliding/chunked layer (and of every DeepSeek-V4 layer), and the recurrent state of every
        linear-attention layer."""
        return float(self.sequence_state_bytes(float("inf"), kv_bits, tp))

    def sequence_state_bytes(self, tokens, kv_bits: int = 16, tp: int = 1):
        """Cache bytes a sequence of ``tokens`` tokens holds on one GPU beyond :meth:`kv_cache_bytes_per_token`
        × tokens: its last min(tokens, window) tokens in every sliding/chunked layer (and in every DeepSeek-V4
        layer's uncompressed window), and every linear-attention layer's recurrent state (whatever its length).
        ``tokens`` may be a numpy array (elementwise)."""
        return state_bytes(self.state_terms(kv_bits, tp), tokens)

    def state_terms(self, kv_bits: int = 16, tp: int = 1) -> tuple[float, tuple[tuple[float, float], ...]]:
        """(fixed bytes, ((window tokens, bytes per windowed token), ...)) of one sequence's per-sequence state on
        one GPU: the recurrent states of the linear-attention layers, and each kind of window (see
        :func:`state_bytes`)."""
        counts = self.attention_layer_counts()
        windowed = counts.get("sliding", 0) + counts.get("chunked", 0)
        windows = []
        if windowed:
            windows.append((self.sliding_window, windowed * self.kv_elems_per_token(tp, "sliding") * kv_bits / 8))
        if self.compressed_attention is not None:  # DeepSeek-V4: every layer's window of uncompressed tokens
            ca = self.compressed_attention
            windows.append((ca.window, self.num_layers * ca.head_dim * kv_bits / 8))
        fixed = (counts.get("linear", 0) * self.linear_attention.state_bytes_per_seq(tp)
                 if self.linear_attention is not None else 0.0)
        return fixed, tuple(windows)

    def check_tp(self, tp: int) -> None:
        """Raise :class:`InputError` unless ``tp`` shards this model evenly."""
        if not isinstance(tp, int) or tp < 1:
            raise InputError(f"--tp: must be a positive integer, got {tp!r}")
        if self.num_heads % tp:
            ok = [t for t in (1, 2, 4, 8, 16) if self.num_heads % t == 0 and self._kv_ok(t)]
            raise InputError(
                f"--tp: {tp} does not divide {self.name}'s {self.num_heads} attention heads; allowed: {ok}"
            )
        if not self._kv_ok(tp):
            ok = [t for t in (1, 2, 4, 8, 16) if self.num_heads % t == 0 and self._kv_ok(t)]
            full = f" ({self.global_attention.kv_heads} in its full layers)" if self.global_attention else ""
            raise InputError(
                f"--tp: {tp} neither divides nor is a multiple of {self.name}'s {self.num_kv_heads} KV heads{full}; "
                f"allowed: {ok}"
            )

    def check_parallel(self, parallel) -> None:
        """Raise :class:`InputError` unless ``parallel`` (a :class:`~predictor.parallel.ParallelConfig` or an
        int TP degree) fits this model: TP divides the heads, EP the routed experts, MoE-TP the expert
        width, and PP is at most the layer count."""
        from predictor.parallel import as_parallel

        par = as_parallel(parallel)
        self.check_tp(par.tp)
        if par.pp > self.num_layers:
            raise InputError(f"--pp: {par.pp} exceeds {self.name}'s {self.num_layers} layers; allowed: 1..{self.num_layers}")
        if not self.is_moe:
            if par.ep > 1:
                raise InputError(f"--ep: {self.name} has no experts (a dense model); allowed: 1")
            return
        if self.num_experts % par.ep:
            ok = [e for e in range(1, self.num_experts + 1) if self.num_experts % e == 0 and e <= 1024]
            raise InputError(f"--ep: {par.ep} does not divide {self.name}'s {self.num_experts} experts; allowed: {ok}")
        width = self.expert_intermediate_size
        if width % par.moe_tp:
            raise InputError(f"--moe-tp: {par.moe_tp} does not divide {self.name}'s expert width {width}; use a larger "
                             f"--ep (allowed moe_tp: {[t for t in (1, 2, 4, 8, 16, 32, 64) if width % t == 0]})")

    def _kv_ok(self, tp: int) -> bool:
        kvs = (self.num_kv_heads,) + ((self.global_attention.kv_heads,) if self.global_attention else ())
        return all(kv % tp == 0 or tp % kv == 0 for kv in kvs)

    def to_dict(self) -> dict:
        return asdict(self)


def state_bytes(terms: tuple[float, tuple[tuple[float, float], ...]], tokens):
    """Per-sequence state bytes of a sequence of ``tokens`` tokens (an int or a numpy array) from
    :meth:`ModelSpec.state_terms`: the fixed bytes plus, per kind of window, min(tokens, window) × its bytes per
    token."""
    fixed, windows = terms
    out = fixed
    for window, per_token in windows:
        out = out + np.minimum(tokens, window) * per_token
    return out
