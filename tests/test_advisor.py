"""The optimisation advisor: the bottleneck it names per phase, its ranking, skipped candidates and the CLI."""

from __future__ import annotations

import json

import pytest

from inference_sim.cli import main
from predictor import Predictor, get_gpu
from scheduler.advisor import Scenario, WorkloadSpec, advise, bottlenecks, gain, recheck, simulate

SLOW_LINK_GPU = ("slow-link-a100:\n  peak_tflops: {fp16: 312, bf16: 312, int8: 624}\n  hbm_bandwidth_gbps: 2039\n"
                 "  memory_gib: 80\n  sm_count: 108\n  l2_mb: 40\n  link_bandwidth_gbps: 2\n  link_latency_us: 10\n")


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load()


def phases(predictor, scenario, workload):
    return bottlenecks(simulate(predictor, scenario, workload.build())["efficiency"])


def test_small_batch_decode_is_memory_bound(predictor):
    b = phases(predictor, Scenario("llama-2-7b", "a100-80gb"), WorkloadSpec("offline", 4, prompt_len=128, output_len=512))
    e = b["decode"]["evidence"]
    assert b["decode"]["bottleneck"] == "memory"
    assert e["mbu"] > 10 * e["mfu"]
    assert e["memory_share"] > max(e["compute_share"], e["network_share"], e["overhead_share"])


def test_long_prompt_prefill_is_compute_bound(predictor):
    b = phases(predictor, Scenario("llama-2-7b", "a100-80gb"), WorkloadSpec("offline", 8, prompt_len=4000, output_len=1))
    e = b["prefill"]["evidence"]
    assert b["prefill"]["bottleneck"] == "compute"
    assert "decode" not in b  # one output token: the first comes with the prefill
    assert e["mfu"] > 0.4 and e["mfu"] > 2 * e["mbu"]


def test_high_tp_on_a_slow_link_is_network_bound(predictor, tmp_path):
    path = tmp_path / "gpus.yaml"
    path.write_text(SLOW_LINK_GPU)
    gpu = get_gpu("slow-link-a100", path)
    b = phases(predictor, Scenario("llama-2-7b", gpu, tp=4), WorkloadSpec("offline", 4, prompt_len=256, output_len=32))
    e = b["prefill"]["evidence"]
    assert b["prefill"]["bottleneck"] == "network"
    assert e["network_share"] > max(e["compute_share"], e["memory_share"], e["overhead_share"])
    assert e["mfu"] < 0.05 and e["mbu"] < 0.05  # the GPUs mostly wait for the link


def test_single_request_at_tp4_is_overhead_bound(predictor):
    # a 7B model split four ways leaves ~1 ms of kernels per decode step; the CPU time per iteration dominates
    b = phases(predictor, Scenario("llama-2-7b", "a100-80gb", tp=4), WorkloadSpec("offline", 1, prompt_len=64, output_len=64))
    e = b["decode"]["evidence"]
    assert b["decode"]["bottleneck"] == "overhead"
    assert e["overhead_share"] > 0.5
    assert e["roofline_distance"] > 3


@pytest.fixture(scope="module")
def report(predictor):
    return advise(predictor, Scenario("llama-2-7b", "a100-80gb"), WorkloadSpec("offline", 8, prompt_len=128, output_len=256))


def test_candidates_are_ranked_by_the_objective(report):
    gains = [row["gain"] for row in report["candidates"]]
    assert gains == sorted(gains, reverse=True)
    base = report["baseline"]
    for row in report["candidates"]:
        per_gpu = row["metrics"]["output_tokens_per_s"] / row["gpus"] / base["output_tokens_per_s"] - 1
        assert row["gain"] == pytest.approx(per_gpu)
        assert row["risks"]


def test_other_objectives_rank_by_their_latency(predictor):
    r = advise(predictor, Scenario("llama-2-7b", "a100-80gb"), WorkloadSpec("offline", 8, prompt_len=128, output_len=64),
               objective="ttft")
    base = r["baseline"]
    for row in r["candidates"]:
        assert row["gain"] == pytest.approx(base["ttft_p90_ms"] / row["metrics"]["ttft_p90_ms"] - 1)
    assert [row["gain"] for row in r["candidates"]] == sorted((row["gain"] for row in r["candidates"]), reverse=True)


def test_gain_of_a_twice_as_fast_candidate_on_twice_the_gpus_is_zero_per_gpu():
    base = {"output_tokens_per_s": 100.0}
    assert gain("per-gpu", {"output_tokens_per_s": 200.0}, 2, base, 1) == pytest.approx(0.0)
    assert gain("throughput", {"output_tokens_per_s": 200.0}, 2, base, 1) == pytest.approx(1.0)


def test_fp8_is_skipped_on_a_gpu_without_fp8_tensor_cores(report):
    skipped = {row["name"]: row["reason"] for row in report["skipped"]}
    assert "fp8" in skipped and "no fp8 tensor cores" in skipped["fp8"]
    assert "fp8" not in {row["name"] for row in report["candidates"]}


def test_candidate_the_model_cannot_run_is_skipped_with_the_reason(predictor):
    # llama-2-13b in fp16 (24.2 GiB of weights) needs TP 2 on 24 GB L4s: halving TP cannot fit
    r = advise(predictor, Scenario("llama-2-13b", "l4", tp=2), WorkloadSpec("offline", 2, prompt_len=64, output_len=8))
    skipped = {row["name"]: row["reason"] for row in r["skipped"]}
    assert "does not fit on l4 at tp=1" in skipped["tp÷2"]
    assert "tp÷2 ×2 replicas" in skipped
    assert not {"tp÷2", "tp÷2 ×2 replicas"} & {row["name"] for row in r["candidates"]}
    assert "tp×2" in {row["name"] for row in r["candidates"]}


def test_speculative_candidate_is_labelled_analytic_and_leaves_ttft_unchanged(report):
    row = next(r for r in report["candidates"] if r["name"] == "speculative")
    assert row["effect"] == "analytic"
    assert row["relative"]["ttft_p50_ms"] == pytest.approx(0.0)
    assert row["relative"]["tpot_p50_ms"] < 0


def test_replicas_cost_twice_the_gpus(report):
    row = next(r for r in report["candidates"] if r["name"] == "2 replicas")
    assert row["gpus"] == 2 and row["gpus_vs_baseline"] == 2
    assert any("perfect router" in risk for risk in row["risks"])


def test_recheck_with_the_same_seed_delivers_the_prediction(predictor):
    base, spec = Scenario("llama-2-7b", "a100-80gb"), WorkloadSpec("offline", 8, prompt_len=128, output_len=256)
    r = advise(predictor, base, spec)
    check = recheck(predictor, base, spec, r, seed=spec.seed, name="w8a16")
    assert check["delivered_ratio"] == pytest.approx(check["predicted_ratio"])
    assert check["agree_within_5pct"]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_output_parses(capsys):
    code, out, err = run(capsys, "advise", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "offline",
                         "--num-requests", "4", "--prompt-len", "128", "--output-len", "64", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"setup", "workload", "baseline", "bottlenecks", "candidates", "skipped", "assumptions"} <= set(data)
    assert data["bottlenecks"]["decode"]["bottleneck"] in ("memory", "compute", "network", "overhead")


def test_cli_table_output(capsys):
    code, out, err = run(capsys, "advise", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "offline",
                         "--num-requests", "4", "--prompt-len", "128", "--output-len", "64", "--top", "3")
    assert code == 0, err
    assert "Bottleneck per phase" in out and "Candidates ranked by per-gpu" in out
    assert "skipped fp8" in out


@pytest.mark.parametrize("args, message", [
    (("--objective", "cheapest"), "--objective"),
    (("--workload", "bursty"), "--workload"),
    (("--workload", "poisson", "--prompt-len", "64", "--output-len", "8"), "--rate"),
    (("--tp", "0"), "--tp"),
])
def test_cli_bad_option_is_one_line_exit_2(capsys, args, message):
    code, out, err = run(capsys, "advise", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--num-requests", "4", *args)
    assert code == 2
    assert err.startswith("error:") and message in err
    assert len(err.strip().splitlines()) == 1


WORKLOAD_ARGS = ("--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "poisson", "--rate", "4",
                 "--num-requests", "60", "--trace", "splitwise_conv", "--seed", "0", "--json")


def test_cli_baseline_is_what_simulate_predicts_with_the_same_engine_profile(capsys):
    """advise and simulate share the default engine profile (vLLM's fitted step costs and its defaults)."""
    for framework, tokens in (("vllm", 8192), ("legacy", 2048)):
        code, out, err = run(capsys, "simulate", *WORKLOAD_ARGS, "--framework", framework)
        assert code == 0, err
        simulated = json.loads(out)
        code, out, err = run(capsys, "advise", *WORKLOAD_ARGS, "--framework", framework, "--top", "1")
        assert code == 0, err
        report = json.loads(out)
        assert report["setup"]["framework"] == framework
        assert report["setup"]["config"]["max_num_batched_tokens"] == tokens
        assert report["baseline"]["ttft_p50_ms"] == simulated["ttft_ms"]["p50"]
        assert report["baseline"]["tpot_p90_ms"] == simulated["tpot_ms"]["p90"]


def test_every_instance_of_a_multi_instance_candidate_runs_the_profile(predictor):
    from scheduler.engine_profiles import get_profile
    from scheduler.techniques.cluster import Cluster, InstanceSpec

    profile = get_profile("sglang")
    cluster = Cluster(predictor, [InstanceSpec("llama-2-7b", "a100-80gb", profile=profile)] * 2)
    assert all(sim.profile is profile for sim in cluster.sims)
    wl = WorkloadSpec("poisson", 40, rate=4.0, trace="splitwise_conv").build()
    with_profile = simulate(predictor, Scenario("llama-2-7b", "a100-80gb", replicas=2, profile=profile), wl)
    without = simulate(predictor, Scenario("llama-2-7b", "a100-80gb", replicas=2), wl)
    assert with_profile["tpot_ms"]["p50"] != without["tpot_ms"]["p50"]
