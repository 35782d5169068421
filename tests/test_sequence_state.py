"""Per-sequence state (sliding/chunked windows, recurrent states) comes out of the simulator's KV blocks as each
sequence is admitted, as a hybrid KV allocator does, instead of being set aside for ``max_num_seqs`` sequences.

Gemma-4 31B keeps a 1,024-token window in 50 of its 60 layers: a short sequence holds only its own tokens there,
a long one the whole window (800 MiB on one GPU in bf16). Reserving the whole window for 1,024 sequences refused
the model on an H100 at vLLM's defaults; charging each admitted sequence its own state runs it.
"""

from __future__ import annotations

import numpy as np
import pytest

from predictor.errors import ModelDoesNotFitError
from predictor.gpus import get_gpu
from predictor.memory import plan_memory, state_block_counter
from predictor.models import get_model
from predictor.parallel import ParallelConfig
from predictor.precision import parse_dtype
from scheduler.engine import EngineConfig, Simulator
from scheduler.workload import Workload

FP16 = parse_dtype("fp16")
GEMMA = "gemma-4-31b"


def _workload(n: int, prompt: int, output: int, gap_s: float = 0.0) -> Workload:
    return Workload(np.arange(n) * gap_s, np.full(n, prompt), np.full(n, output))


def test_a_sequence_holds_its_window_up_to_the_window_and_no_more():
    m = get_model(GEMMA)
    sliding = m.attention_layer_counts()["sliding"]
    per_token = sliding * m.kv_elems_per_token(1, "sliding") * 2  # bf16 bytes of one token in every window
    full = m.per_sequence_cache_bytes(16, 1)
    assert m.sequence_state_bytes(100, 16, 1) == 100 * per_token
    assert m.sequence_state_bytes(m.sliding_window, 16, 1) == full
    assert m.sequence_state_bytes(10 * m.sliding_window, 16, 1) == full
    lengths = np.array([1, 100, m.sliding_window, 5000])
    assert np.array_equal(m.sequence_state_bytes(lengths, 16, 1), np.minimum(lengths, m.sliding_window) * per_token)


def test_state_blocks_are_whole_blocks_of_the_per_token_cache():
    m = get_model(GEMMA)
    count = state_block_counter(m, 1, FP16, block_size=16)
    block_bytes = m.kv_cache_bytes_per_token(16, 1) * 16
    assert count(149) == int(np.ceil(m.sequence_state_bytes(149, 16, 1) / block_bytes))
    assert np.array_equal(count(np.array([149, 4096])), [count(149), count(4096)])
    assert state_block_counter(get_model("llama-2-7b"), 1, FP16) is None  # no per-sequence state


def test_a_recurrent_state_alone_is_the_same_for_every_length():
    qwen = get_model("qwen3.5-397b-a17b")  # gated delta-net layers: a fixed-size state, no window
    count = state_block_counter(qwen, 8, parse_dtype("fp8"))
    assert count is not None and count(1) == count(100_000) > 0
    assert np.array_equal(count(np.array([1, 100_000])), [count(1)] * 2)


def test_on_demand_plans_set_nothing_aside_and_fit_where_reservation_refuses():
    m, g = get_model(GEMMA), get_gpu("h100-sxm")
    with pytest.raises(ModelDoesNotFitError, match="per-sequence state"):
        plan_memory(m, g, 1, FP16, max_num_seqs=1024)
    plan = plan_memory(m, g, 1, FP16, max_num_seqs=1024, state_on_demand=True)
    assert plan.state_on_demand and plan.num_blocks >= 1
    free = plan.usable_bytes - plan.weights_bytes - plan.activation_bytes - plan.overhead_bytes
    block_bytes = plan.kv_bytes_per_token * plan.block_size
    assert plan.num_blocks == int(free // block_bytes)
    # a model without per-sequence state plans the same either way
    llama = get_model("llama-2-7b")
    assert plan_memory(llama, g, 1, FP16, state_on_demand=True) == plan_memory(llama, g, 1, FP16)


def test_admission_takes_each_sequence_its_state_blocks(roofline):
    sim = Simulator(roofline, GEMMA, "h100-sxm", 1, "fp16", EngineConfig(max_num_seqs=1024))
    n, prompt, output = 6, 100, 50
    result = sim.run(_workload(n, prompt, output))
    state = sim._state_count(prompt + output - 1)
    first = result.iterations["kv_blocks_used"].iloc[0]  # all six are admitted in the first iteration
    assert first == n * (-(-prompt // 16) + state)
    assert (result.requests["finish_s"].notna()).all()
    assert sim.free_blocks == sim.num_blocks and sim.tokens_held == 0


def test_preemption_and_release_return_state_blocks(roofline):
    """A KV cache too small for the batch: sequences are evicted and readmitted, and every block comes back.
    gpt-oss-20b's 128-token windows are small beside its full layers' growing cache, so growth evicts."""
    model = "gpt-oss-20b"
    probe = Simulator(roofline, model, "h100-sxm", 1, "fp16", EngineConfig(max_num_seqs=64))
    assert probe._state_count is not None
    per_seq = -(-700 // 16) + probe._state_count(199 + 500)
    sim = Simulator(roofline, model, "h100-sxm", 1, "fp16",
                    EngineConfig(max_num_seqs=64, num_blocks=int(3.5 * per_seq)))
    result = sim.run(_workload(8, 200, 500))
    assert result.requests["preemptions"].sum() > 0
    assert result.requests["finish_s"].notna().all()
    assert sim.free_blocks == sim.num_blocks and sim.tokens_held == 0
    assert result.iterations["kv_blocks_used"].max() <= sim.num_blocks


def test_a_request_whose_state_and_tokens_exceed_the_cache_is_rejected(roofline):
    probe = Simulator(roofline, GEMMA, "h100-sxm", 1, "fp16", EngineConfig(max_num_seqs=8))
    tokens_blocks = -(-(400 + 100 - 1) // 16)
    sim = Simulator(roofline, GEMMA, "h100-sxm", 1, "fp16",
                    EngineConfig(max_num_seqs=8, num_blocks=tokens_blocks + probe._state_count(499) - 1))
    result = sim.run(_workload(1, 400, 100))
    assert result.requests["status"].iloc[0] == "rejected"
    assert "KV blocks" in result.requests["reject_reason"].iloc[0]


def test_llama4_maverick_runs_at_the_default_max_num_seqs_on_8_h200(roofline):
    """144 MiB of chunked-attention state per sequence on each GPU: reserved for 1,024 sequences it left no room;
    drawn per sequence the same deployment serves."""
    layout = ParallelConfig(tp=8, ep=8)
    config = EngineConfig(max_num_seqs=1024, max_num_batched_tokens=8192)
    with pytest.raises(ModelDoesNotFitError):
        plan_memory(get_model("llama-4-maverick"), get_gpu("h200"), layout, FP16, max_num_seqs=1024,
                    max_num_batched_tokens=8192)
    sim = Simulator(roofline, "llama-4-maverick", "h200", layout, "fp16", config)
    result = sim.run(_workload(32, 1000, 100, gap_s=0.05))
    assert result.requests["finish_s"].notna().all()


def test_a_static_batch_holds_the_state_of_its_own_sequences_at_their_length(roofline):
    """`estimate` once refused Gemma-4 31B on one H100 even for one sequence (state reserved for 256 sequences at
    full windows); now a batch fits while its sequences' tokens and windows (up to their length) fit."""
    import re

    from predictor.errors import InputError

    estimate = roofline.estimate(GEMMA, "h100-sxm", batch_size=1, input_len=128, output_len=128)
    assert estimate.tpot_ms > 0
    with pytest.raises(InputError, match=r"per-sequence state of [\d,]+ token slots each") as err:
        roofline.estimate(GEMMA, "h100-sxm", batch_size=500, input_len=128, output_len=128)
    fit = int(re.search(r"at most ([\d,]+) such sequences", str(err.value)).group(1).replace(",", ""))
    assert 1 < fit < 500
    roofline.estimate(GEMMA, "h100-sxm", batch_size=fit, input_len=128, output_len=128)
    with pytest.raises(InputError):
        roofline.estimate(GEMMA, "h100-sxm", batch_size=fit + 1, input_len=128, output_len=128)


def test_cli_estimate_and_predict_check_memory_for_their_own_batch(capsys):
    from inference_sim.cli import main

    args = ["--model", GEMMA, "--gpu", "h100-sxm"]
    assert main(["predict", *args, "--decode", "1000,2000", "--json"]) == 0
    assert main(["estimate", *args, "--batch-size", "5000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "try --batch-size" in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("layout", ["disaggregated", "migration"])
def test_clusters_hand_state_blocks_back(roofline, layout):
    """A prefill instance's handoff and a live migration move a sequence with its state: every instance ends with
    all its blocks free and nothing held."""
    from scheduler.techniques.cluster import Cluster, InstanceSpec, replicas

    model, gpu = "gpt-oss-20b", "h100-sxm"
    if layout == "disaggregated":
        instances = [InstanceSpec(model, gpu, role="prefill", config=EngineConfig(max_num_batched_tokens=8192)),
                     InstanceSpec(model, gpu, role="decode", config=EngineConfig(num_blocks=3000))]
        cluster = Cluster(roofline, instances)
    else:
        cluster = Cluster(roofline, replicas(model, gpu, 3, config=EngineConfig(num_blocks=2500)), migration=True)
    rng = np.random.default_rng(1)
    n = 200
    workload = Workload(np.sort(rng.uniform(0, 10, n)), rng.integers(50, 2000, n), rng.integers(20, 600, n))
    result = cluster.run(workload)
    assert (result.result.requests["status"] == "finished").all()
    assert result.handoffs == n if layout == "disaggregated" else result.migrations > 0
    assert all(s.free_blocks == s.num_blocks and s.tokens_held == 0 for s in cluster.sims)
