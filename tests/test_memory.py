"""Memory model: weights, workspace, KV capacity per GPU, and the does-not-fit error."""

from __future__ import annotations

import pytest

from predictor.errors import ModelDoesNotFitError
from predictor.gpus import get_gpu
from predictor.memory import GIB, plan_memory, weights_bytes_per_gpu
from predictor.models import get_model
from predictor.precision import parse_dtype

FP16 = parse_dtype("fp16")


def test_llama_2_7b_on_a100_80gb_by_hand():
    plan = plan_memory(get_model("llama-2-7b"), get_gpu("a100-80gb"), 1, FP16)
    linear = 32 * (4096 * 12288 + 4096 * 4096 + 22016 * 4096 + 4096 * 11008) * 2
    embed_and_head = 2 * 32000 * 4096 * 2
    norms = (32 * 2 * 4096 + 4096) * 2
    assert plan.weights_bytes == linear + embed_and_head + norms == 13_476_831_232
    # workspace: 8192 tokens × (2·hidden + gate_up 22016 + act 11008) × 2 B + fp32 logits and probs of 256 seqs
    assert plan.activation_bytes == 8192 * (2 * 4096 + 22016 + 11008) * 2 + 256 * 32000 * 4 * 2
    assert plan.overhead_bytes == 1 * GIB
    free = 0.9 * 80 * GIB - plan.weights_bytes - plan.activation_bytes - plan.overhead_bytes
    assert plan.num_blocks == int(free // (524288 * 16)) == 7393
    assert plan.max_tokens == 7393 * 16
    assert plan.max_sequences(2048) == 7393 // 128


def test_tp_shards_weights_and_kv():
    m = get_model("llama-2-70b")
    w1, w4 = weights_bytes_per_gpu(m, 1, FP16), weights_bytes_per_gpu(m, 4, FP16)
    assert w4 == pytest.approx(w1 / 4, rel=0.001)  # norms are replicated: a hair over a quarter
    plan = plan_memory(m, get_gpu("a100-80gb"), 4, FP16)
    assert plan.kv_bytes_per_token == 2 * 80 * 2 * 128 * 2
    assert plan.overhead_bytes == 1.4 * GIB  # NCCL buffers at tp > 1


def test_4bit_weights_shrink_linear_layers_only():
    m = get_model("llama-2-7b")
    w16, w4 = weights_bytes_per_gpu(m, 1, FP16), weights_bytes_per_gpu(m, 1, parse_dtype("w4a16"))
    linear_params = 32 * (4096 * 12288 + 4096 * 4096 + 22016 * 4096 + 4096 * 11008)
    assert w16 - w4 == linear_params * 1.5


def test_more_memory_utilisation_means_more_kv():
    m, g = get_model("llama-3-8b"), get_gpu("h100-sxm")
    assert plan_memory(m, g, 1, FP16, gpu_memory_utilization=0.95).max_tokens > plan_memory(m, g, 1, FP16).max_tokens


def test_model_that_does_not_fit_is_a_clear_error():
    with pytest.raises(ModelDoesNotFitError, match=r"llama-2-70b does not fit on a100-80gb at tp=1.*try --tp 4"):
        plan_memory(get_model("llama-2-70b"), get_gpu("a100-80gb"), 1, FP16)


def test_per_sequence_state_that_does_not_fit_names_the_max_num_seqs_that_would():
    """Gemma-4 31B keeps a 1,024-token window of 16 KV heads × 256 in each sliding layer: 800 MiB per sequence,
    reserved for every sequence max_num_seqs admits. The error says so (it once called it all workspace) and
    names the largest max_num_seqs that fits, which then fits."""
    m, g = get_model("gemma-4-31b"), get_gpu("h100-sxm")
    with pytest.raises(ModelDoesNotFitError) as err:
        plan_memory(m, g, 1, FP16, max_num_seqs=1024)
    message = str(err.value)
    assert "per-sequence state 800.0 GiB (800.0 MiB × 1024 sequences)" in message
    fitting = int(message.rsplit("--max-num-seqs ", 1)[1])
    assert plan_memory(m, g, 1, FP16, max_num_seqs=fitting).num_blocks >= 1
    with pytest.raises(ModelDoesNotFitError):
        plan_memory(m, g, 1, FP16, max_num_seqs=fitting + 1)


def test_moe_weights_hold_every_expert():
    m = get_model("mixtral-8x7b")
    w = weights_bytes_per_gpu(m, 1, FP16)
    assert w == pytest.approx(m.param_count() * 2, rel=1e-6)


def test_the_roofline_report_plans_memory_for_its_own_batch():
    """A batch of 4 Llama-4 Maverick sequences holds 4 chunked-attention states, not an engine's 256: it fits on 8
    H200s in bf16 (the report once refused it, reserving state for 256 sequences)."""
    from predictor.analysis import roofline_report
    from predictor.parallel import ParallelConfig

    layout = ParallelConfig(tp=8, ep=8)
    with pytest.raises(ModelDoesNotFitError):
        plan_memory(get_model("llama-4-maverick"), get_gpu("h200"), layout, FP16, max_num_seqs=256)
    report = roofline_report("llama-4-maverick", "h200", tp=layout, batch_size=4, input_len=1024)
    memory = report["memory"]
    assert memory["max_tokens"] > 0
    assert memory["usable_bytes"] - memory["weights_bytes"] - memory["activation_bytes"] - memory["overhead_bytes"] \
        - memory["kv_cache_bytes"] == pytest.approx(4 * memory["per_sequence_bytes"], rel=1e-6, abs=2 ** 20)
