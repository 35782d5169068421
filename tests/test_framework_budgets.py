"""Token and sequence budgets under attention data parallelism: per rank (vLLM, TRT-LLM) or per instance (SGLang)."""

from __future__ import annotations

from predictor import Predictor
from predictor.parallel import ParallelConfig
from scheduler.engine import EngineConfig, Simulator
from scheduler.engine_profiles import kernel_only_profile
from scheduler.workload import build_workload

DP4 = ParallelConfig(tp=1, dp_attention=4, ep=4)


def _sim(framework: str, layout=DP4):
    profile = kernel_only_profile(framework)
    return Simulator(Predictor.roofline_only(), "qwen3-30b-a3b", "h100-sxm", layout, "fp16", profile.engine_config(),
                     profile=profile)


def test_vllm_and_trtllm_ranks_each_have_the_budgets():
    for framework in ("vllm", "trtllm"):
        profile = kernel_only_profile(framework)
        sim = _sim(framework)
        assert sim.config.max_num_batched_tokens == 4 * profile.max_num_batched_tokens
        assert sim.config.max_num_seqs == 4 * profile.max_num_seqs
        assert not sim.config.budget_per_dp_rank  # the simulator's config holds the instance's totals
        # without attention DP nothing changes
        assert _sim(framework, 4).config.max_num_batched_tokens == profile.max_num_batched_tokens


def test_sglang_divides_its_global_budget_among_the_ranks():
    profile = kernel_only_profile("sglang")
    assert _sim("sglang").config.max_num_batched_tokens == profile.max_num_batched_tokens
    assert EngineConfig().budget_per_dp_rank is False


def test_per_rank_budgets_take_a_burst_in_fewer_larger_iterations():
    """64 clients send 4,096-token prompts at once to 4 attention-DP ranks: with a budget per rank each prefill
    iteration takes four times the tokens, so the burst needs a quarter of the prefill iterations."""
    wl = build_workload("concurrency", 64, prompt_len=4096, output_len=8, concurrency=64, stagger=False)
    profile = kernel_only_profile("vllm")

    def prefill_iterations(config):
        it = Simulator(Predictor.roofline_only(), "qwen3-30b-a3b", "h100-sxm", DP4, "fp16", config,
                       profile=profile).run(wl).iterations
        return int((it["prefill_tokens"] > 0).sum()), int(it["prefill_tokens"].max())

    per_rank, shared = prefill_iterations(profile.engine_config()), prefill_iterations(
        profile.engine_config(budget_per_dp_rank=False))
    assert per_rank[1] == 4 * shared[1] == 4 * profile.max_num_batched_tokens
    assert per_rank[0] * 4 <= shared[0] + 4
