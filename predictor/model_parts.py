"""Architecture parts of today's models that a classic GQA decoder does not have.

Each part is a small frozen dataclass holding the config's numbers, with its parameter count and
cache/state footprint as methods (pure, in elements or bytes as named). :class:`~predictor.model_spec.ModelSpec`
holds at most one of each; the op builders in :mod:`predictor.op_blocks` read them.

* :class:`MLASpec` — DeepSeek-V2/V3, Kimi-K2 and GLM-5 multi-head latent attention: queries through a
  low-rank ``q_lora_rank`` bottleneck, keys and values compressed into one ``kv_lora_rank`` latent plus a
  shared ``qk_rope_head_dim`` RoPE key per token — the only thing cached.
* :class:`SparseIndexSpec` — DeepSeek sparse attention (DeepSeek-V3.2, GLM-5): a light "indexer" scores
  every cached token and each query attends to its ``topk`` best only. MiniMax-M3's block-sparse GQA layers
  (kind ``sparse``) use the same spec: ``topk`` is then the kept blocks' tokens.
* :class:`LinearAttentionSpec` — gated delta-net layers (Qwen3.5 / Qwen3-Next): a fixed recurrent state
  per sequence instead of a KV cache, plus a short causal convolution.
* :class:`GlobalAttentionSpec` — the full-attention layers' own GQA shape when it differs from the sliding
  layers' (Gemma-4: wider heads, fewer KV heads, values that are the keys).
* :class:`Mamba2Spec` — Mamba-2 mixers (Nemotron-H): the same shape of state (heads × d_state × head_dim) and
  convolution, keys and queries being the B and C projections shared by each group of heads.
* :class:`KDASpec` — Kimi delta attention (Kimi-Linear, Kimi-K3): gated delta-net's state with a forget gate
  per channel, a β per head and a low-rank output gate.
* :class:`CompressedAttentionSpec` — DeepSeek-V4's attention: one shared key/value head per token, a sliding
  window of recent tokens in every layer, plus the older tokens compressed ``ratio`` to one entry — with an
  indexer keeping the top entries (``csa`` layers) or all of them (``hca`` layers, a higher ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Attention kinds a layer can have (``ModelSpec.attention_layer_counts`` keys).
ATTENTION_KINDS = ("full", "sliding", "chunked", "linear", "mla", "sparse", "window", "csa", "hca")
#: HF ``layer_types`` values → attention kind.
HF_LAYER_TYPES = {
    "full_attention": "full", "attention": "full", "sliding_attention": "sliding",
    "chunked_attention": "chunked", "linear_attention": "linear",
}
STATE_BYTES = 4  # recurrent states are kept in fp32


@dataclass(frozen=True)
class MLASpec:
    """Multi-head latent attention dimensions (HF keys of the same names)."""

    q_lora_rank: int          # 0: queries projected directly from the hidden state (no bottleneck)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head when decompressed: nope + rope dims."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Elements cached per token and layer: the KV latent plus the shared RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def linear_params(self, hidden: int, heads: int) -> int:
        """Weights of the projections: q_a/q_b (or q), kv_a (latent + rope key), kv_b (per-head K-nope and V), o."""
        q = (hidden * self.q_lora_rank + self.q_lora_rank * heads * self.qk_head_dim if self.q_lora_rank
             else hidden * heads * self.qk_head_dim)
        kv_a = hidden * self.latent_dim
        kv_b = self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim)
        return q + kv_a + kv_b + heads * self.v_head_dim * hidden

    def norm_params(self) -> int:
        """The RMSNorms on the query and KV latents."""
        return self.q_lora_rank + self.kv_lora_rank


@dataclass(frozen=True)
class SparseIndexSpec:
    """DeepSeek-sparse-attention indexer: ``heads`` scoring heads of ``head_dim``; each query keeps ``topk`` keys."""

    heads: int
    head_dim: int
    topk: int

    def linear_params(self, hidden: int, q_lora_rank: int) -> int:
        """wq_b (from the query latent), wk (one shared key head) and the per-head weights projection."""
        return q_lora_rank * self.heads * self.head_dim + hidden * self.head_dim + hidden * self.heads

    def norm_params(self) -> int:
        """The LayerNorm (weight and bias) on the indexer key."""
        return 2 * self.head_dim


@dataclass(frozen=True)
class GlobalAttentionSpec:
    """Head width and KV heads of the ``full`` layers; ``k_eq_v``: their values are their keys (one projection,
    one cached tensor per token: HF ``attention_k_eq_v``)."""

    head_dim: int
    kv_heads: int
    k_eq_v: bool = False

    @property
    def kv_tensors(self) -> int:
        """Tensors cached per KV head and token: K and V, or K alone when the values are the keys."""
        return 1 if self.k_eq_v else 2


@dataclass(frozen=True)
class LinearAttentionSpec:
    """Gated delta-net dimensions (HF ``linear_*`` keys)."""

    num_key_heads: int
    num_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int = 4

    @property
    def key_dim(self) -> int:
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_value_heads * self.value_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels through the causal convolution: q, k and v."""
        return 2 * self.key_dim + self.value_dim

    #: Op-name prefix of this mixer's projections, convolution and norm.
    op_prefix = "gdn"

    @property
    def in_proj_width(self) -> int:
        """Outputs of the input projections: q, k, v, the output gate z, and the β and α gates per value head."""
        return 2 * self.key_dim + 2 * self.value_dim + 2 * self.num_value_heads

    def linear_params(self, hidden: int) -> int:
        """The input projections (:attr:`in_proj_width`) and out_proj."""
        return hidden * self.in_proj_width + self.value_dim * hidden

    def small_params(self) -> int:
        """Convolution weights, A_log and dt_bias per value head, the gated RMSNorm weight."""
        return self.conv_dim * self.conv_kernel + 2 * self.num_value_heads + self.value_head_dim

    def state_bytes_per_seq(self, tp: int = 1) -> float:
        """Recurrent state of one sequence in one layer on one GPU: value heads/tp × dk × dv fp32 numbers,
        plus the convolution's last ``conv_kernel − 1`` inputs (16-bit)."""
        heads = max(self.num_value_heads // tp, 1)
        conv = self.conv_dim / tp * (self.conv_kernel - 1) * 2
        return heads * self.key_head_dim * self.value_head_dim * STATE_BYTES + conv


@dataclass(frozen=True)
class Mamba2Spec(LinearAttentionSpec):
    """Mamba-2 mixer dimensions in :class:`LinearAttentionSpec` terms: ``num_key_heads`` = ``n_groups`` (B and C
    are shared by each group of heads), ``key_head_dim`` = ``ssm_state_size``, ``num_value_heads`` =
    ``mamba_num_heads``, ``value_head_dim`` = ``mamba_head_dim`` (so ``value_dim`` is the inner width)."""

    conv_bias: bool = True

    op_prefix = "mamba"

    @property
    def in_proj_width(self) -> int:
        """in_proj's outputs: the gate z and x (inner width each), B and C (groups × d_state each), dt per head."""
        return 2 * self.value_dim + 2 * self.key_dim + self.num_value_heads

    def small_params(self) -> int:
        """Convolution weights (and bias), A_log, D and dt_bias per head, the gated RMSNorm over the inner width."""
        conv = self.conv_dim * (self.conv_kernel + (1 if self.conv_bias else 0))
        return conv + 3 * self.num_value_heads + self.value_dim


@dataclass(frozen=True)
class KDASpec(LinearAttentionSpec):
    """Kimi delta attention in :class:`LinearAttentionSpec` terms (``heads`` key and value heads of ``head_dim``):
    q, k and v projections each through a short convolution, a per-channel forget gate (from the hidden state at
    full rank with ``full_rank_gate``, else through a ``head_dim`` bottleneck), a β per head, an output gate
    through a ``head_dim`` bottleneck, the gated RMSNorm and out_proj. The bottlenecks' second GEMMs (``head_dim``
    → the value width) are counted as weights but not costed (their FLOPs are ~2% of the projections')."""

    full_rank_gate: bool = True

    op_prefix = "kda"

    @property
    def in_proj_width(self) -> int:
        """Projections from the hidden state: q, k, v, the forget gate (or its bottleneck), β, the output gate's
        bottleneck."""
        gate = self.value_dim if self.full_rank_gate else self.value_head_dim
        return 2 * self.key_dim + self.value_dim + gate + self.num_value_heads + self.value_head_dim

    def linear_params(self, hidden: int) -> int:
        """The hidden-state projections, out_proj, and the bottlenecks' second halves."""
        second = self.value_head_dim * self.value_dim * (1 if self.full_rank_gate else 2)
        return hidden * self.in_proj_width + self.value_dim * hidden + second

    def small_params(self) -> int:
        """The q/k/v convolutions' weights, A_log per head, dt_bias per channel, the output norm's weight."""
        return self.conv_dim * self.conv_kernel + self.num_value_heads + self.value_dim + self.value_head_dim


@dataclass(frozen=True)
class CompressedAttentionSpec:
    """DeepSeek-V4 attention (HF ``deepseek_v4`` keys): queries through a ``q_lora_rank`` bottleneck into ``heads``
    of ``head_dim``; one ``head_dim`` key/value head per token, shared by every query head (its last ``rope_dim``
    dims rotary); the output through ``o_groups`` groups of heads, each projected to ``o_lora_rank``, then to the
    hidden size. Every layer attends the last ``window`` tokens as they are; ``csa`` layers also attend the
    ``indexer.topk`` best of the older tokens compressed ``csa_ratio`` to one entry (the :class:`SparseIndexSpec`
    indexer, its query from the query latent, scores every entry), ``hca`` layers every entry of ``hca_ratio``
    tokens; ``window`` layers nothing more. The compressors' own small weights and the hyper-connections' mixing weights
    (``hc_mult`` residual streams) are not counted."""

    q_lora_rank: int
    head_dim: int
    rope_dim: int
    o_lora_rank: int
    o_groups: int
    window: int
    csa_ratio: int
    hca_ratio: int
    indexer: SparseIndexSpec
    hc_mult: int = 1

    def ratio(self, kind: str) -> int:
        """Tokens per compressed entry in layers of ``kind`` (0: the window only)."""
        return {"csa": self.csa_ratio, "hca": self.hca_ratio}.get(kind, 0)

    def linear_params(self, hidden: int, heads: int, kind: str) -> int:
        """q_a, q_b, the key/value projection, the grouped low-rank output (o_a, o_b), and a csa layer's indexer."""
        q = hidden * self.q_lora_rank + self.q_lora_rank * heads * self.head_dim
        out = heads * self.head_dim * self.o_lora_rank + self.o_groups * self.o_lora_rank * hidden
        index = self.indexer.linear_params(hidden, self.q_lora_rank) if kind == "csa" else 0
        return q + hidden * self.head_dim + out + index

    def norm_params(self, kind: str) -> int:
        """The RMSNorms on the query latent and the key/value head, and a csa layer's indexer norm."""
        return self.q_lora_rank + self.head_dim + (self.indexer.norm_params() if kind == "csa" else 0)

    def cached_per_token(self, kind: str) -> float:
        """Elements a layer of ``kind`` keeps per token of context beyond its window: the compressed entry's share
        (head_dim / ratio), and a csa layer's indexer key share (indexer.head_dim / ratio)."""
        r = self.ratio(kind)
        if not r:
            return 0.0
        return (self.head_dim + (self.indexer.head_dim if kind == "csa" else 0)) / r
