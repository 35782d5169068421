"""Property tests of the iteration predictor (hybrid and roofline-only) and of the memory model.

What the implementation guarantees, and so what is asserted here:

* every lookup table (token ops, sampling ops, decode attention over (sequences, mean KV length),
  prefill attention over (chunks, mean new tokens, mean cached context)) is made non-decreasing
  along each axis by a running maximum, and off-grid points are interpolated *multilinearly* in log
  space (a positively weighted mean of the cell's corners, monotone in each coordinate), with linear
  growth past the grid's end. Growing one sequence (a prefill chunk's new tokens or cached context,
  a decode sequence's context) raises one or two of the aggregates (tokens, mean new tokens, mean
  context, mean KV length) and leaves the others unchanged, so the prediction cannot decrease;
  adding a decode sequence at the current maximum context raises the token, sample and sequence
  counts and does not lower the mean KV length, so it cannot decrease either. Adding a sequence of
  *any* shape is not covered: it can lower a mean and hence one table's value.
* no op is predicted faster than ``MIN_RATIO_TO_ROOFLINE`` × its roofline time (a clamp in
  ``predict_ops``).
* the KV-cache capacity grows with fewer KV bits and fewer weight bits (less memory per token or for
  weights) and with TP (weights and KV heads are sharded).

Examples are derandomized so CI is stable; the hybrid tables of three configurations and the roofline
tables of two are built once per module (~3 s each).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from predictor import ModelDoesNotFitError, Predictor, get_gpu, get_model, gpu_names, model_names, parse_dtype
from predictor.memory import plan_memory
from predictor.predictor import MIN_RATIO_TO_ROOFLINE

SMALL = ("llama-2-7b", "a100-80gb", 1)
TP4 = ("llama-2-70b", "h100-sxm", 4)
MOE = ("mixtral-8x7b", "h100-sxm", 2)
CASES = [("hybrid", SMALL), ("hybrid", TP4), ("hybrid", MOE), ("roofline", SMALL), ("roofline", TP4)]
IDS = [f"{kind}-{cfg[0]}-tp{cfg[2]}" for kind, cfg in CASES]
ULP = 1e-12  # interpolating equal corners may round by an ulp or two

PROPERTY = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def predictors() -> dict[str, Predictor]:
    return {"hybrid": Predictor.load(), "roofline": Predictor.roofline_only()}


new_tokens = st.integers(1, 8192)
contexts = st.integers(0, 16384)


@st.composite
def batches(draw, min_chunks: int = 0, min_decode: int = 0):
    prefill = draw(st.lists(st.tuples(new_tokens, contexts), min_size=min_chunks, max_size=4))
    decode = draw(st.lists(st.integers(0, 32768), min_size=min_decode, max_size=48))
    assume(prefill or decode)
    return prefill, decode


def within_context(model: str, prefill, decode):
    """The drawn lengths mapped into ``model``'s context (beyond it a prediction is an error): new tokens up to
    16,384 and contexts up to 32,768 (the largest draw plus the largest growth) scale into half the context
    each, decode contexts up to 65,536 into ``max_position_embeddings − 1``. The map is monotone, so every
    property below (growing a length, adding a sequence at the maximum context) still holds after it."""
    limit = get_model(model).max_position_embeddings
    half = limit // 2
    return ([(max(1, n * half // 16384), c * half // 32768) for n, c in prefill],
            [c * (limit - 1) // 65536 for c in decode])


def predict(predictors, case, prefill, decode):
    kind, config = case
    prefill, decode = within_context(config[0], prefill, decode)
    return predictors[kind].predict_iteration(*config, "fp16", prefill=prefill, decode=decode)


def assert_not_decreasing(before, after, tolerance=ULP):
    assert after.kernel_ms >= before.kernel_ms * (1 - tolerance), (before.kernel_ms, after.kernel_ms)
    assert after.total_ms >= before.total_ms * (1 - tolerance), (before.total_ms, after.total_ms)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@PROPERTY
@given(batch=batches())
def test_finite_and_positive(predictors, case, batch):
    pred = predict(predictors, case, *batch)
    assert math.isfinite(pred.total_ms) and math.isfinite(pred.kernel_ms) and math.isfinite(pred.overhead_ms)
    assert pred.kernel_ms > 0
    assert pred.overhead_ms >= 0
    assert pred.total_ms == pytest.approx(pred.kernel_ms + pred.overhead_ms, rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@PROPERTY
@given(batch=batches(min_chunks=1), index=st.integers(0, 3), extra=st.integers(1, 8192))
def test_monotone_in_prefill_new_tokens(predictors, case, batch, index, extra):
    """One chunk's new tokens grow: more tokens, larger mean chunk, same mean context."""
    prefill, decode = batch
    i = index % len(prefill)
    grown = list(prefill)
    grown[i] = (prefill[i][0] + extra, prefill[i][1])
    assert_not_decreasing(predict(predictors, case, prefill, decode), predict(predictors, case, grown, decode))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@PROPERTY
@given(batch=batches(min_chunks=1), index=st.integers(0, 3), extra=st.integers(1, 16384))
def test_monotone_in_prefill_context(predictors, case, batch, index, extra):
    """One chunk's cached context grows: larger mean context, everything else unchanged."""
    prefill, decode = batch
    i = index % len(prefill)
    grown = list(prefill)
    grown[i] = (prefill[i][0], prefill[i][1] + extra)
    assert_not_decreasing(predict(predictors, case, prefill, decode), predict(predictors, case, grown, decode))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@PROPERTY
@given(batch=batches(min_decode=1), index=st.integers(0, 47), extra=st.integers(1, 32768))
def test_monotone_in_decode_context(predictors, case, batch, index, extra):
    """One decode sequence's context grows: larger mean KV length, everything else unchanged."""
    prefill, decode = batch
    i = index % len(decode)
    grown = list(decode)
    grown[i] += extra
    assert_not_decreasing(predict(predictors, case, prefill, decode), predict(predictors, case, prefill, grown))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@PROPERTY
@given(batch=batches(), context=st.integers(0, 32768))
def test_monotone_when_adding_a_decode_sequence_at_max_context(predictors, case, batch, context):
    """A decode sequence joins at the current maximum context (any context when there is none):
    one more token, sample and sequence, and a mean KV length that does not drop."""
    prefill, decode = batch
    joined = decode + [max(decode) if decode else context]
    assert_not_decreasing(predict(predictors, case, prefill, decode), predict(predictors, case, prefill, joined))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=batches())
def test_no_op_faster_than_min_ratio_of_roofline(predictors, case, batch):
    ops = predict(predictors, case, *batch).ops
    assert len(ops) > 0
    assert np.all(np.isfinite(ops["predicted_ms"])) and np.all(ops["roofline_ms"] > 0)
    assert np.all(ops["predicted_ms"] >= MIN_RATIO_TO_ROOFLINE * ops["roofline_ms"] * (1 - 1e-12))
    if case[0] == "roofline":
        np.testing.assert_array_equal(ops["predicted_ms"], ops["roofline_ms"])


# --- memory model ---------------------------------------------------------------------------------

MEMORY = settings(max_examples=60, deadline=None, derandomize=True)
TPS = (1, 2, 4, 8)
utilizations = st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0])


def max_tokens(model, gpu, tp, dtype, utilization=0.9) -> int | None:
    """KV-cache capacity in tokens, or None when the model does not fit (or TP does not shard it)."""
    spec = get_model(model)
    try:
        spec.check_tp(tp)
        return plan_memory(spec, get_gpu(gpu), tp, parse_dtype(dtype), gpu_memory_utilization=utilization).max_tokens
    except ModelDoesNotFitError:
        return None


@MEMORY
@given(dtype=st.sampled_from(["fp16", "bf16", "fp8", "w8a16", "w4a16", "w16a16kv8", "w4a16kv4"]),
       utilization=utilizations)
def test_kv_capacity_non_decreasing_in_tp_llama_70b_h100(dtype, utilization):
    capacities = [c for tp in TPS if (c := max_tokens("llama-2-70b", "h100-sxm", tp, dtype, utilization)) is not None]
    assert capacities, "llama-2-70b fits on h100-sxm at tp=8"
    assert all(c > 0 for c in capacities)
    assert capacities == sorted(capacities)
    if dtype == "fp16":
        assert max_tokens("llama-2-70b", "h100-sxm", 1, dtype, utilization) is None  # 140 GB of weights


def _shards(model: str, tp: int) -> bool:
    try:
        get_model(model).check_tp(tp)
    except Exception:  # noqa: BLE001 — InputError for a TP that does not shard the model
        return False
    return True


@MEMORY
@given(model=st.sampled_from(model_names()), gpu=st.sampled_from(gpu_names()),
       dtype=st.sampled_from(["fp16", "fp8", "w4a16"]), utilization=utilizations)
def test_kv_capacity_non_decreasing_in_tp(model, gpu, dtype, utilization):
    capacities = [c for tp in TPS if _shards(model, tp)
                  and (c := max_tokens(model, gpu, tp, dtype, utilization)) is not None]
    assert all(c > 0 for c in capacities)
    assert capacities == sorted(capacities)


@MEMORY
@given(model=st.sampled_from(model_names()), gpu=st.sampled_from(gpu_names()), tp=st.sampled_from(TPS),
       weight_bits=st.sampled_from([4, 8, 16]), utilization=utilizations)
def test_kv_capacity_non_increasing_in_kv_bits(model, gpu, tp, weight_bits, utilization):
    assume(_shards(model, tp))
    by_bits = [max_tokens(model, gpu, tp, f"w{weight_bits}a16kv{kv}", utilization) for kv in (4, 8, 16)]
    assume(by_bits[-1] is not None)  # fits at 16-bit KV ⇒ fits at fewer bits
    assert all(c is not None and c > 0 for c in by_bits)
    assert by_bits[0] >= by_bits[1] >= by_bits[2]


@MEMORY
@given(model=st.sampled_from(model_names()), gpu=st.sampled_from(gpu_names()), tp=st.sampled_from(TPS),
       kv_bits=st.sampled_from([8, 16]), utilization=utilizations)
def test_kv_capacity_non_increasing_in_weight_bits(model, gpu, tp, kv_bits, utilization):
    assume(_shards(model, tp))
    by_bits = [max_tokens(model, gpu, tp, f"w{w}a16kv{kv_bits}", utilization) for w in (4, 8, 16)]
    fitting = [c for c in by_bits if c is not None]
    # fitting with more weight bits implies fitting with fewer: the None entries come last
    assert by_bits[len(fitting):] == [None] * (len(by_bits) - len(fitting))
    assert all(c > 0 for c in fitting)
    assert fitting == sorted(fitting, reverse=True)
