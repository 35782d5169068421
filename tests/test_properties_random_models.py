"""Property tests over random *valid* models, GPUs and batches (not only the catalogue's).

Models are Hugging Face ``config.json`` dicts of llama-, mistral-, qwen2- and mixtral-like architectures
with random widths (hidden = heads × head_dim, so a multiple of 64 × heads), layers, heads, KV heads (a
divisor of the heads), MLP widths, vocabularies and contexts, parsed by :func:`predictor.models.parse_hf_config`;
GPUs are :class:`~predictor.gpus.GPUSpec` with random but plausible spec-sheet numbers; batches are random
prefill chunks and decode contexts. What is asserted:

* the roofline of an iteration, and every op in it, is finite and positive (ops may be 0 only when absent);
* hybrid per-op predictions (``Predictor.predict_ops`` on ``build_ops`` rows) are finite, positive and never
  below ``MIN_RATIO_TO_ROOFLINE`` × the op's roofline time;
* the roofline iteration time never decreases when a prefill chunk gets more new tokens or more cached
  context, when a decoding sequence's context grows, or when a decode sequence at the batch's largest context
  joins;
* the hybrid per-op total (``predict_ops`` summed over ``build_ops`` rows) is *not* exactly monotone: the
  learned residual ratio is only constrained to fall with the op's roofline time, so one more token or a
  longer context can predict a kernel a little more efficient (e.g. a 1-token prefill chunk growing to 2
  tokens, or a decode context growing, predicted ~2-3% faster). The dip is bounded here (at most
  :data:`HYBRID_DIP`); the table path that iteration predictions and the simulator use is exactly monotone
  (running maxima, ``tests/test_predictor_properties.py``);
* the memory model and the simulator agree: ``Simulator(...).num_blocks == plan_memory(...).num_blocks``
  for the same engine settings (or both refuse a model that does not fit), and ``max_tokens`` is
  ``num_blocks × block_size``.

Examples are derandomized (stable in CI) and few enough that the module runs in well under a minute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from predictor import Predictor
from predictor.analysis import iteration_roofline
from predictor.batch import from_lists
from predictor.errors import InputError, ModelDoesNotFitError
from predictor.gpus import GPUSpec, PeakTflops
from predictor.memory import plan_memory
from predictor.model_spec import ModelSpec
from predictor.models import parse_hf_config
from predictor.ops import build_ops
from predictor.precision import parse_dtype
from predictor.predictor import MIN_RATIO_TO_ROOFLINE

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])
DTYPES = ("fp16", "bf16", "fp8", "int8", "w8a16", "w4a16", "w4a16kv8")
REL = 1e-9  # float sums of many ops: allow rounding at the last digits
HYBRID_DIP = 0.10  # largest relative drop of the hybrid per-op total when a chunk or a context grows


# --- random models ----------------------------------------------------------------------------------
@st.composite
def hf_configs(draw) -> dict:
    """A valid HF config.json dict of a llama / mistral / qwen2 / mixtral-like model."""
    family = draw(st.sampled_from(["llama", "mistral", "qwen2", "mixtral"]))
    heads = draw(st.sampled_from([4, 8, 12, 16, 20, 24, 32, 40, 48, 56, 64]))
    head_dim = draw(st.sampled_from([64, 128]))
    kv_heads = draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0]))
    hidden = heads * head_dim
    cfg = {
        "model_type": family,
        "hidden_size": hidden,
        "intermediate_size": 256 * draw(st.integers(max(1, hidden // 256), max(1, 4 * hidden // 256))),
        "num_hidden_layers": draw(st.integers(1, 96)),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": draw(st.integers(1_000, 260_000)),
        "max_position_embeddings": draw(st.sampled_from([2048, 4096, 8192, 32768, 131072])),
        "tie_word_embeddings": draw(st.booleans()),
        "hidden_act": "silu",
    }
    if family == "mixtral":
        experts = draw(st.integers(2, 16))
        cfg.update(num_local_experts=experts, num_experts_per_tok=draw(st.integers(1, min(4, experts))))
    return cfg


@st.composite
def gpus(draw) -> GPUSpec:
    """A GPU with random but plausible spec-sheet numbers."""
    fp16 = draw(st.floats(20, 2500))
    return GPUSpec(
        name="random-gpu",
        peak_tflops=PeakTflops(fp16=fp16, bf16=draw(st.sampled_from([None, fp16])),
                               fp8=draw(st.sampled_from([None, 2 * fp16])),
                               int8=draw(st.sampled_from([None, 2 * fp16]))),
        hbm_bandwidth_gbps=draw(st.floats(300, 10_000)),
        memory_gib=draw(st.floats(16, 192)),
        sm_count=draw(st.integers(20, 200)),
        l2_mb=draw(st.floats(4, 128)),
        link_bandwidth_gbps=draw(st.floats(16, 1800)),
        link_latency_us=draw(st.floats(0.5, 30)),
    )


@st.composite
def setups(draw) -> tuple[ModelSpec, GPUSpec, int, str]:
    """(model, GPU, a tensor-parallel degree that shards the model, dtype)."""
    spec = parse_hf_config(draw(hf_configs()), name="random-model", source="random config.json")
    tps = [t for t in (1, 2, 4, 8) if spec.num_heads % t == 0 and spec._kv_ok(t)]
    return spec, draw(gpus()), draw(st.sampled_from(tps)), draw(st.sampled_from(DTYPES))


new_tokens = st.integers(1, 8192)
contexts = st.integers(0, 32768)


@st.composite
def batches(draw) -> tuple[list[tuple[int, int]], list[int]]:
    prefill = draw(st.lists(st.tuples(new_tokens, contexts), max_size=4))
    decode = draw(st.lists(contexts, min_size=0 if prefill else 1, max_size=64))
    return prefill, decode


@pytest.fixture(scope="module")
def hybrid_predictor() -> Predictor:
    return Predictor.load()


def roofline_ms(setup, prefill, decode) -> tuple[object, float]:
    spec, gpu, tp, dtype = setup
    return iteration_roofline(spec, gpu, tp=tp, dtype=dtype, prefill=prefill, decode=decode)


def hybrid_total_ms(predictor: Predictor, setup, prefill, decode) -> float:
    spec, gpu, tp, dtype = setup
    ops = build_ops(spec, tp, parse_dtype(dtype), from_lists(prefill, decode))
    pred = predictor.predict_ops(ops, gpu)
    return float((ops["count"] * pred["predicted_ms"]).sum())


# --- parsing ------------------------------------------------------------------------------------------
@PROPERTY
@given(cfg=hf_configs())
def test_random_configs_parse_to_consistent_specs(cfg):
    spec = parse_hf_config(cfg)
    assert spec.hidden_size == cfg["hidden_size"] and spec.num_layers == cfg["num_hidden_layers"]
    assert spec.num_heads * spec.head_dim == spec.hidden_size
    assert spec.num_heads % spec.num_kv_heads == 0
    assert spec.param_count() > 0 and spec.active_param_count() <= spec.param_count()
    assert spec.kv_cache_bytes_per_token() == 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * 2
    if cfg["model_type"] == "mixtral":
        assert spec.is_moe and 1 <= spec.experts_per_token <= spec.num_experts
    if cfg["model_type"] == "qwen2":
        assert spec.qkv_bias


# --- finite and positive ------------------------------------------------------------------------------
@PROPERTY
@given(setup=setups(), batch=batches())
def test_roofline_finite_and_positive(setup, batch):
    ops, total = roofline_ms(setup, *batch)
    assert math.isfinite(total) and total > 0
    for col in ("flops", "bytes", "ideal_ms", "total_ms"):
        values = ops[col].to_numpy(float)
        assert np.isfinite(values).all() and (values >= 0).all(), col
    present = ops["count"].to_numpy(float) > 0
    assert (ops["ideal_ms"].to_numpy(float)[present] > 0).all()


@PROPERTY
@given(setup=setups(), batch=batches())
def test_hybrid_per_op_predictions_finite_positive_and_clamped(hybrid_predictor, setup, batch):
    spec, gpu, tp, dtype = setup
    ops = build_ops(spec, tp, parse_dtype(dtype), from_lists(*batch))
    pred = hybrid_predictor.predict_ops(ops, gpu)
    roof, hyb = pred["roofline_ms"].to_numpy(float), pred["predicted_ms"].to_numpy(float)
    assert np.isfinite(hyb).all() and np.isfinite(roof).all()
    assert (hyb > 0).all() and (roof > 0).all()
    assert (hyb >= MIN_RATIO_TO_ROOFLINE * roof * (1 - REL)).all()
    total = float((ops["count"] * pred["predicted_ms"]).sum())
    assert math.isfinite(total) and total > 0


# --- monotone in tokens and context -------------------------------------------------------------------
@PROPERTY
@given(setup=setups(), batch=batches(), extra=st.integers(1, 4096), which=st.integers(0, 3), data=st.data())
def test_roofline_monotone_in_tokens_and_context(setup, batch, extra, which, data):
    prefill, decode = batch
    if which in (0, 1):
        assume(prefill)
        i = data.draw(st.integers(0, len(prefill) - 1))
        new, ctx = prefill[i]
        grown = list(prefill)
        grown[i] = (new + extra, ctx) if which == 0 else (new, ctx + extra)
        bigger = (grown, decode)
    elif which == 2:
        assume(decode)
        i = data.draw(st.integers(0, len(decode) - 1))
        bigger = (prefill, decode[:i] + [decode[i] + extra] + decode[i + 1:])
    else:  # a decode sequence at the batch's largest context joins
        bigger = (prefill, decode + [max(decode, default=0) + extra])
    _, before = roofline_ms(setup, prefill, decode)
    _, after = roofline_ms(setup, *bigger)
    assert after >= before * (1 - REL), (which, before, after)


@PROPERTY
@given(setup=setups(), batch=batches(), extra=st.integers(1, 4096), which=st.integers(0, 2), data=st.data())
def test_hybrid_per_op_total_dips_at_most_a_little_with_more_tokens_or_context(hybrid_predictor, setup, batch, extra,
                                                                              which, data):
    prefill, decode = batch
    if which in (0, 1):
        assume(prefill)
        i = data.draw(st.integers(0, len(prefill) - 1))
        grown = list(prefill)
        grown[i] = (prefill[i][0] + extra, prefill[i][1]) if which == 0 else (prefill[i][0], prefill[i][1] + extra)
        bigger = (grown, decode)
    else:
        assume(decode)
        i = data.draw(st.integers(0, len(decode) - 1))
        bigger = (prefill, decode[:i] + [decode[i] + extra] + decode[i + 1:])
    before = hybrid_total_ms(hybrid_predictor, setup, prefill, decode)
    after = hybrid_total_ms(hybrid_predictor, setup, *bigger)
    assert after >= before * (1 - HYBRID_DIP), (which, before, after)


# --- memory model and simulator agree -----------------------------------------------------------------
class _MemoryOnlyPredictor(Predictor):
    """Roofline predictor that skips building lookup tables: the simulator's constructor only needs the
    bound model, GPU and precision to size the KV cache."""

    def __init__(self):
        super().__init__(None, None)

    def tables(self, model, gpu, tp, precision):
        return None


_HUGE = parse_hf_config({"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
                         "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                         "vocab_size": 128256}, name="huge")
_SMALL_GPU = GPUSpec(name="small", peak_tflops=PeakTflops(fp16=100), hbm_bandwidth_gbps=900, memory_gib=24,
                     sm_count=80, l2_mb=6, link_bandwidth_gbps=32)


@PROPERTY
@given(setup=setups(), max_num_seqs=st.integers(1, 1024), max_num_batched_tokens=st.integers(1, 65536),
       block_size=st.sampled_from([1, 8, 16, 32, 128]), utilization=st.floats(0.3, 1.0))
@example(setup=(_HUGE, _SMALL_GPU, 1, "fp16"), max_num_seqs=256, max_num_batched_tokens=2048, block_size=16,
         utilization=0.9)  # does not fit: both must refuse it
@example(setup=(_HUGE, _SMALL_GPU, 8, "w4a16"), max_num_seqs=256, max_num_batched_tokens=2048, block_size=16,
         utilization=0.9)
def test_simulator_kv_capacity_equals_the_memory_plan(setup, max_num_seqs, max_num_batched_tokens, block_size,
                                                       utilization):
    from scheduler.engine import EngineConfig, Simulator

    spec, gpu, tp, dtype = setup
    config = EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                          block_size=block_size, gpu_memory_utilization=utilization)
    try:
        plan = plan_memory(spec, gpu, tp, parse_dtype(dtype), gpu_memory_utilization=utilization,
                           max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                           block_size=block_size, state_on_demand=True)  # the engine takes state from its blocks
    except ModelDoesNotFitError:
        with pytest.raises(ModelDoesNotFitError):
            Simulator(_MemoryOnlyPredictor(), spec, gpu, tp, dtype, config)
        return
    sim = Simulator(_MemoryOnlyPredictor(), spec, gpu, tp, dtype, config)
    assert sim.num_blocks == plan.num_blocks >= 1
    assert plan.max_tokens == plan.num_blocks * block_size
    assert plan.kv_cache_bytes <= plan.usable_bytes - plan.weights_bytes - plan.activation_bytes - plan.overhead_bytes
    # one block more would not fit
    free = plan.usable_bytes - plan.weights_bytes - plan.activation_bytes - plan.overhead_bytes
    if not plan.state_on_demand:  # else no per-sequence state, or none with no per-token cache: reserved here
        free -= plan.per_sequence_bytes * -(-max_num_seqs // plan.replicas)
    assert (plan.num_blocks + 1) * block_size * plan.kv_bytes_per_token > free


@PROPERTY
@given(cfg=hf_configs(), key=st.sampled_from(["hidden_size", "num_hidden_layers", "num_attention_heads",
                                               "intermediate_size", "vocab_size"]),
       bad=st.sampled_from([0, -1, 1.5, "64", None, True, float("nan"), 10**12]))
def test_a_broken_key_of_a_random_config_is_one_line_input_error(cfg, key, bad):
    cfg = dict(cfg, **{key: bad})
    with pytest.raises(InputError) as info:
        parse_hf_config(cfg)
    message = str(info.value)
    assert "\n" not in message and key in message
