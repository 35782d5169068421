"""SGLang's scheduler (``prefill_first``): a prefill iteration pauses the decodes; clients sent together stay in
step."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.errors import InputError
from scheduler.engine import EngineConfig, Simulator
from scheduler.engine_profiles import kernel_only_profile
from scheduler.workload import build_workload

CONF = ("llama-2-7b", "a100-80gb", 1, "fp16")


def _closed_loop(predictor, policy: str, clients: int = 8, waves: int = 4):
    wl = build_workload("concurrency", clients * waves, prompt_len=1500, output_len=40, concurrency=clients,
                        stagger=False)
    config = EngineConfig(policy=policy, max_num_batched_tokens=4096, max_num_seqs=64)
    return Simulator(predictor, *CONF, config=config).run(wl)


def test_a_prefill_iteration_runs_no_decodes(roofline):
    it = _closed_loop(roofline, "prefill_first").iterations
    prefilling = it["prefill_tokens"].to_numpy() > 0
    assert prefilling.any() and (~prefilling).any()
    assert (it["decode_seqs"].to_numpy()[prefilling] == 0).all()
    # the mixing scheduler runs decodes beside prefill chunks
    mixed = _closed_loop(roofline, "continuous").iterations
    assert ((mixed["prefill_tokens"] > 0) & (mixed["decode_seqs"] > 0)).any()


def test_clients_sent_together_stay_in_step(roofline):
    """Eight clients, 1,500-token prompts (three per 4,096-token iteration): prefill-first prefills every wave before
    any decode, so each wave's requests finish in one iteration and are sent again together — every wave waits as
    long as the first. Mixing prefill chunks with decodes spreads the clients out instead."""
    clients, waves = 8, 4
    first = _closed_loop(roofline, "prefill_first", clients, waves).requests
    finish = first["finish_s"].to_numpy().reshape(waves, clients)
    assert (np.ptp(finish, axis=1) == 0).all()
    ttft = first["ttft_s"].to_numpy().reshape(waves, clients)
    np.testing.assert_allclose(ttft.mean(axis=1), ttft[0].mean(), rtol=1e-6)
    mixed = _closed_loop(roofline, "continuous", clients, waves).requests["finish_s"].to_numpy().reshape(waves, clients)
    assert (np.ptp(mixed, axis=1) > 0).all()


def test_sglang_profile_schedules_prefill_first():
    assert kernel_only_profile("sglang").engine_config().policy == "prefill_first"
    assert kernel_only_profile("vllm").engine_config().policy == "continuous"
    assert kernel_only_profile("trtllm").engine_config().policy == "continuous"
    with pytest.raises(InputError, match="--policy: unknown value 'eager'; allowed: continuous, prefill_first, static"):
        EngineConfig(policy="eager").validate()


def test_a_sweep_can_hold_the_prefill_first_scheduler_fixed():
    from scheduler.sweep import run_sweep, sweep_from_dict

    raw = {"model": "llama-2-7b", "predictor": "roofline",
           "workload": {"kind": "offline", "num_requests": 24, "prompt_len": 1500, "output_len": 32},
           "slo": {"ttft_ms": 100_000}, "grid": {"gpu": ["a100-80gb"]}}
    tables = {policy: run_sweep(sweep_from_dict({**raw, "engine": {"policy": policy}}), n_jobs=1).table
              for policy in ("continuous", "prefill_first")}
    assert (tables["prefill_first"]["finished"] == 24).all()
    # every prompt is prefilled before the decodes start: the first tokens come sooner
    assert tables["prefill_first"]["ttft_p50_ms"].iloc[0] < tables["continuous"]["ttft_p50_ms"].iloc[0]


def test_disaggregated_pools_take_the_prefill_first_scheduler(roofline):
    """A prefill pool only prefills and a decode pool only decodes (no preemption here: its only prefills would be
    recomputes), so SGLang's scheduler gives the same requests as the mixing one; static batching is still refused
    for a pool."""
    from scheduler.techniques.cluster import Cluster, InstanceSpec

    wl = build_workload("poisson", 30, rate=20.0, prompt_len=700, output_len=20, seed=3)

    def run(policy):
        specs = [InstanceSpec("llama-2-7b", "a100-80gb", config=EngineConfig(policy=policy), role=role)
                 for role in ("prefill", "decode")]
        return Cluster(roofline, specs).run(wl).result.requests

    first, mixed = run("prefill_first"), run("continuous")
    assert (first["status"] == "finished").all()
    np.testing.assert_allclose(first["finish_s"].to_numpy(float), mixed["finish_s"].to_numpy(float), rtol=1e-12)
    with pytest.raises(InputError, match="role: disaggregated instances need iteration-level batching"):
        run("static")
