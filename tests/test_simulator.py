"""The serving-engine simulator (scheduler.engine): hand-checked timelines, preemption by recompute,
invariants over random workloads, agreement with Predictor.estimate, static vs continuous batching,
chunked prefill on vs off, and the ``simulate`` CLI.

Iteration tables cost ~3-5 s per predictor, so every test reuses the module-scoped predictors on one
configuration (llama-2-7b on a100-80gb, tp1, fp16).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import inference_sim.cli as cli
from inference_sim import common
from predictor import Predictor
from scheduler.engine import ITL_EDGES_S, EngineConfig, Simulator
from scheduler.workload import Workload

CONF = ("llama-2-7b", "a100-80gb", 1, "fp16")
REL = 1e-9



@pytest.fixture(scope="module", params=["hybrid", "roofline"])
def predictor(request, hybrid, roofline) -> Predictor:
    return hybrid if request.param == "hybrid" else roofline


def simulate(predictor, workload, **config):
    sim = Simulator(predictor, *CONF, config=EngineConfig(**config))
    return sim, sim.run(workload)


def workload(arrival, prompt, output) -> Workload:
    n = max(np.size(arrival), np.size(prompt), np.size(output))

    def full(values, dtype):
        return np.broadcast_to(np.asarray(values, dtype), (n,)).copy()

    return Workload(arrival_s=full(arrival, float), prompt_tokens=full(prompt, np.int64),
                    output_tokens=full(output, np.int64))


def random_workload(seed: int, n: int = 200, rate: float = 4.0, prompt=(1, 3000), output=(1, 500)) -> Workload:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n)
    return workload(np.cumsum(gaps) - gaps[0], rng.integers(prompt[0], prompt[1] + 1, n),
                    rng.integers(output[0], output[1] + 1, n))


# --- 1-2: hand-checked timelines ---------------------------------------------------------------------

@pytest.mark.parametrize("chunked", [True, False])
def test_single_request_timeline_is_prefill_then_decode_steps(predictor, chunked):
    bound = predictor.bind(*CONF)
    _, result = simulate(predictor, workload([0.0], [100], [10]), chunked_prefill=chunked)
    r = result.requests.iloc[0]
    ttft = bound.iteration_ms(1, 100, 100, 1, 0, 0) / 1e3
    decode = [bound.iteration_ms(0, 0, 0, 0, 1, 100 + j) / 1e3 for j in range(9)]
    assert r["status"] == "finished" and r["preemptions"] == 0
    assert r["first_scheduled_s"] == 0.0 and r["queue_s"] == 0.0
    assert r["ttft_s"] == pytest.approx(ttft, rel=REL)
    assert r["first_token_s"] == pytest.approx(ttft, rel=REL)
    assert r["e2e_s"] == pytest.approx(ttft + sum(decode), rel=REL)
    assert r["tpot_s"] == pytest.approx((r["e2e_s"] - r["ttft_s"]) / 9, rel=REL)
    it = result.iterations
    assert len(it) == 10
    assert it["duration_s"].to_numpy() == pytest.approx([ttft, *decode], rel=REL)
    assert it["prefill_tokens"].tolist() == [100] + [0] * 9
    assert it["decode_seqs"].tolist() == [0] + [1] * 9
    # 100 prompt tokens in 7 blocks of 16; the 9 decodes write positions 100..108, still in block 7
    assert it["kv_blocks_used"].tolist() == [7] * 10


def test_single_request_of_one_output_token_finishes_with_its_prefill(predictor):
    bound = predictor.bind(*CONF)
    _, result = simulate(predictor, workload([0.5], [300], [1]))
    r = result.requests.iloc[0]
    assert r["ttft_s"] == pytest.approx(bound.iteration_ms(1, 300, 300, 1, 0, 0) / 1e3, rel=REL)
    assert r["finish_s"] == r["first_token_s"] and r["first_scheduled_s"] == 0.5
    assert math.isnan(r["tpot_s"])
    assert len(result.iterations) == 1


def test_two_identical_requests_share_every_iteration(predictor):
    bound = predictor.bind(*CONF)
    _, result = simulate(predictor, workload([0.0, 0.0], [100, 100], [10, 10]))
    q = result.requests
    ttft = bound.iteration_ms(2, 200, 200, 2, 0, 0) / 1e3
    e2e = ttft + sum(bound.iteration_ms(0, 0, 0, 0, 2, 2 * (100 + j)) for j in range(9)) / 1e3
    assert (q["status"] == "finished").all()
    assert q["ttft_s"].iloc[0] == q["ttft_s"].iloc[1] == pytest.approx(ttft, rel=REL)
    assert q["finish_s"].iloc[0] == q["finish_s"].iloc[1]
    assert q["e2e_s"].to_numpy() == pytest.approx([e2e, e2e], rel=REL)
    assert len(result.iterations) == 10
    assert result.iterations["prefill_seqs"].tolist() == [2] + [0] * 9


def test_later_arrival_joins_running_batch_at_the_next_iteration(roofline):
    """Continuous batching: a request arriving mid-run is prefilled in the iteration after its arrival."""
    bound = roofline.bind(*CONF)
    first_prefill = bound.iteration_ms(1, 100, 100, 1, 0, 0) / 1e3
    arrival = first_prefill * 1.5  # lands inside the first decode step
    _, result = simulate(roofline, workload([0.0, arrival], [100, 100], [20, 5]))
    q = result.requests
    it = result.iterations
    ends = (it["start_s"] + it["duration_s"]).to_numpy()
    k = int(np.searchsorted(ends, arrival))  # the iteration running when it arrives
    assert q["first_scheduled_s"].iloc[1] == pytest.approx(ends[k], rel=REL)
    # that iteration decodes request 0 and prefills request 1 (100 new tokens) together
    assert it["decode_seqs"].iloc[k + 1] == 1 and it["prefill_tokens"].iloc[k + 1] == 100
    assert it["duration_s"].iloc[k + 1] == pytest.approx(
        bound.iteration_ms(1, 100, 100, 1, 1, 100 + k) / 1e3, rel=REL)
    assert q["first_token_s"].iloc[1] == pytest.approx(ends[k + 1], rel=REL)


# --- 3: preemption by recompute ------------------------------------------------------------------

@pytest.fixture
def eviction_spy(monkeypatch):
    """Records, for every eviction, the running requests (with arrivals) and the victim; and every finish."""
    log = {"evictions": [], "finished": []}
    evict, finish = Simulator._evict_latest, Simulator._finish

    def spy_evict(self, state):
        running = [(float(state.arrival[r]), r) for r in state.running]
        victim = evict(self, state)
        log["evictions"].append((running, victim))
        return victim

    def spy_finish(self, state, r):
        log["finished"].append(r)
        return finish(self, state, r)

    monkeypatch.setattr(Simulator, "_evict_latest", spy_evict)
    monkeypatch.setattr(Simulator, "_finish", spy_finish)
    return log


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("num_blocks", [20, 24])
def test_preemption_evicts_latest_arrival_and_everything_finishes_once(hybrid, eviction_spy, chunked, num_blocks):
    # 3 × (64 prompt + 120 output) needs 3 × 12 blocks of 16 tokens; the cache holds 20 or 24
    _, result = simulate(hybrid, workload([0.0] * 3, [64] * 3, [120] * 3), block_size=16,
                         num_blocks=num_blocks, chunked_prefill=chunked)
    q, it = result.requests, result.iterations
    assert (q["status"] == "finished").all()
    assert sorted(eviction_spy["finished"]) == [0, 1, 2]  # each finishes exactly once
    assert result.summary()["preemptions"] >= 1
    assert len(eviction_spy["evictions"]) == q["preemptions"].sum()
    for running, victim in eviction_spy["evictions"]:
        assert (0.0, victim) == max(running)  # latest arrival, highest id among ties
    assert eviction_spy["evictions"][0][1] == 2
    assert q["preemptions"].iloc[2] >= 1
    assert (it["kv_blocks_used"] <= num_blocks).all()
    assert it["kv_blocks_used"].max() == num_blocks
    assert (q["finish_s"] >= q["first_token_s"]).all()
    # tokens: one per completed (re)prefill and one per decode slot, output per request in total
    assert it["decode_seqs"].sum() <= q["output_tokens"].sum() - 3
    assert it["decode_seqs"].sum() >= q["output_tokens"].sum() - 3 - q["preemptions"].sum()


@pytest.mark.parametrize("chunked", [True, False])
def test_preemption_recomputes_prompt_plus_generated_tokens(hybrid, chunked):
    """Hand-derived: with 24 blocks only request 2 is ever evicted, at the decode that needs block 9 each.

    After the joint prefill each request holds 4 blocks (64 tokens) and its first token; decode steps
    need a new block at KV 64, 80, …; at KV 128 the three would need 27 blocks, so request 2 (KV 128,
    65 tokens generated) is evicted and later recomputes 64 + 65 = 129 tokens as one prefill, once
    requests 0 and 1 (12 blocks each at the end) have finished.
    """
    _, result = simulate(hybrid, workload([0.0] * 3, [64] * 3, [120] * 3), block_size=16, num_blocks=24,
                         chunked_prefill=chunked)
    q, it = result.requests, result.iterations
    assert q["preemptions"].tolist() == [0, 0, 1]
    assert q["finish_s"].iloc[0] == q["finish_s"].iloc[1] < q["finish_s"].iloc[2]
    prefills = it[it["prefill_seqs"] > 0]
    assert prefills["prefill_tokens"].tolist() == [192, 129]
    assert prefills["prefill_seqs"].tolist() == [3, 1]
    # decode iterations: 64 with three sequences, then 119 − 64 with two, then request 2's last 54 alone
    dec = it.loc[it["prefill_seqs"] == 0, "decode_seqs"].to_numpy()
    assert (dec == 3).sum() == 64 and (dec == 2).sum() == 55 and (dec == 1).sum() == 54
    # the recompute prefill starts when requests 0 and 1 have finished
    recompute = prefills.iloc[1]
    assert recompute["start_s"] == pytest.approx(q["finish_s"].iloc[0], rel=REL)
    # request 2's TTFT is its first prefill's, untouched by the recompute
    assert q["first_token_s"].iloc[2] == q["first_token_s"].iloc[0]


def test_preemption_stall_counts_in_time_between_tokens(hybrid):
    """metrics.itl_percentiles documents gaps 'stretched by preemption' as included; with recompute the stretched
    gap ends at the recompute prefill (which samples request 2's next token), and it is never recorded."""
    _, result = simulate(hybrid, workload([0.0] * 3, [64] * 3, [120] * 3), block_size=16, num_blocks=24)
    q, it = result.requests, result.iterations
    assert q["preemptions"].tolist() == [0, 0, 1]
    ends = (it["start_s"] + it["duration_s"]).to_numpy()
    last_before_eviction = ends[np.flatnonzero(it["decode_seqs"].to_numpy() == 3)[-1]]
    recompute_end = ends[np.flatnonzero(it["prefill_seqs"].to_numpy() > 0)[1]]
    stall = recompute_end - last_before_eviction
    assert stall > 0.1  # request 2 waited for requests 0 and 1 to finish
    assert int(result.itl_counts.sum()) == int((q["output_tokens"] - 1).sum())  # 357; the engine counts 356
    largest_bin = int(np.flatnonzero(result.itl_counts)[-1])
    assert ITL_EDGES_S[min(largest_bin, len(ITL_EDGES_S) - 1)] >= stall


@pytest.mark.parametrize("max_model_len", [0, -1])
def test_non_positive_max_model_len_is_an_input_error(roofline, max_model_len):
    from predictor.errors import InputError

    with pytest.raises(InputError, match="max_model_len"):
        Simulator(roofline, *CONF, config=EngineConfig(max_model_len=max_model_len))


def test_stop_ends_the_run_early_with_a_partial_result(hybrid):
    sim = Simulator(hybrid, *CONF, config=EngineConfig(fast_forward=False))  # polled once per iteration
    calls, seen = [], []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 5

    result = sim.run(workload(np.zeros(8), 100, 50), stop=stop, progress=lambda done, total: seen.append((done, total)))
    assert result.partial and result.summary()["partial"] is True
    assert len(result.iterations) == 5
    assert set(result.requests["status"].astype(str)) == {"running"}
    assert seen == [(0, 8)]


def test_progress_is_reported_every_500_iterations_fast_forwarded_or_not(hybrid):
    """Fast-forwarded runs count their iterations; a progress report comes as each multiple of 500 is passed."""
    seen = []
    result = Simulator(hybrid, *CONF).run(random_workload(3, n=400, rate=1e9),
                                          progress=lambda done, total: seen.append(done))
    iterations = len(result.iterations)
    assert iterations > 1000 and len(seen) == iterations // 500 + 1  # + the final report
    assert seen == sorted(seen) and seen[-1] == 400


# --- 4: invariants over random workloads ---------------------------------------------------------

def check_invariants(sim: Simulator, result, wl: Workload) -> None:
    cfg = sim.config
    q, it = result.requests, result.iterations
    status = q["status"].astype(str)
    assert status.isin(["finished", "rejected"]).all(), status.value_counts().to_dict()
    done = q[status == "finished"]
    assert (done["finish_s"] >= done["first_token_s"]).all()
    assert (done["first_token_s"] >= done["first_scheduled_s"]).all()
    assert (done["first_scheduled_s"] >= done["arrival_s"]).all()
    assert np.isfinite(done[["first_scheduled_s", "first_token_s", "finish_s"]].to_numpy()).all()
    rejected = q[status == "rejected"]
    assert (rejected["reject_reason"].str.len() > 0).all()
    assert rejected["first_scheduled_s"].isna().all() and rejected["finish_s"].isna().all()
    assert (done["reject_reason"] == "").all()
    # request table mirrors the workload
    assert q["arrival_s"].tolist() == wl.arrival_s.tolist()
    assert q["prompt_tokens"].tolist() == wl.prompt_tokens.tolist()
    assert q["output_tokens"].tolist() == wl.output_tokens.tolist()
    # iterations: KV and sequence limits, no overlap in time
    assert (it["kv_blocks_used"] <= sim.num_blocks).all()
    assert (it["kv_blocks_used"] >= 0).all()
    assert (it["running"] <= cfg.max_num_seqs).all()
    assert (it["decode_seqs"] + it["prefill_seqs"] >= 1).all()
    assert (it["duration_s"] > 0).all()
    ends = (it["start_s"] + it["duration_s"]).to_numpy()
    assert (it["start_s"].to_numpy()[1:] >= ends[:-1] * (1 - 1e-12)).all()
    if cfg.chunked_prefill and cfg.policy == "continuous":
        assert (it["prefill_tokens"] + it["decode_seqs"] <= cfg.max_num_batched_tokens).all()
    if cfg.policy == "static":
        assert (it["prefill_tokens"] <= cfg.max_num_batched_tokens).all()
        assert q["preemptions"].sum() == 0  # KV for the full output is reserved up front
    if not cfg.chunked_prefill and cfg.policy == "continuous":
        # vLLM v0: an iteration either prefills whole prompts or decodes
        assert not ((it["prefill_seqs"] > 0) & (it["decode_seqs"] > 0)).any()
        assert it["decode_seqs"].sum() + it["prefill_seqs"].sum() == done["output_tokens"].sum()
    # every finished request's first and last tokens come at the end of an iteration
    end_set = set(np.round(ends, 12))
    assert done["finish_s"].round(12).isin(end_set).all()
    assert done["first_token_s"].round(12).isin(end_set).all()
    # tokens: each completed (re)prefill samples one token, each decode slot another
    n, out, pre = len(done), int(done["output_tokens"].sum()), int(q["preemptions"].sum())
    assert out - n - pre <= it["decode_seqs"].sum() <= out - n
    if pre == 0:
        assert it["prefill_tokens"].sum() == done["prompt_tokens"].sum()
        assert it["decode_seqs"].sum() == out - n
    # time between tokens: one gap per token after a request's first
    itl_tokens = int(result.itl_counts.sum())
    assert out - n - pre <= itl_tokens <= out - n
    if pre == 0:
        assert itl_tokens == out - n
    summary = result.summary()
    assert summary["finished"] + summary["rejected"] == summary["requests"] == len(wl)
    assert summary["iterations"] == len(it)


CONFIG_GRID = [
    pytest.param(dict(policy=p, chunked_prefill=c, num_blocks=nb), id=f"{p}-{'chunked' if c else 'whole'}-{nb or 'mem'}")
    for p in ("continuous", "prefill_first", "static") for c in (True, False) for nb in (None, 150)
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("config", CONFIG_GRID)
def test_invariants_on_random_workloads(hybrid, config, seed):
    wl = random_workload(seed)
    sim, result = simulate(hybrid, wl, **config)
    check_invariants(sim, result, wl)
    if config["num_blocks"] == 150:  # 2400 tokens: long requests are rejected, the rest contend for KV
        q = result.requests
        # a request holds at most prompt + output − 1 tokens (its last token is never fed back)
        too_big = (q["prompt_tokens"] + q["output_tokens"] - 1 > 2400).to_numpy()
        assert too_big.any()
        assert (q.loc[too_big, "status"] == "rejected").all()
        assert q.loc[too_big, "reject_reason"].str.contains("150 KV blocks").all()
        assert (q.loc[~too_big, "status"] == "finished").all()
        if config["policy"] != "static":
            assert result.summary()["preemptions"] > 0
    else:
        assert (result.requests["status"] == "finished").all()


@pytest.mark.parametrize("config", [dict(max_num_seqs=4, max_num_batched_tokens=64, block_size=8, num_blocks=40),
                                    dict(max_num_seqs=3, max_num_batched_tokens=16, block_size=1, num_blocks=90,
                                         chunked_prefill=False),
                                    dict(max_num_seqs=2, max_num_batched_tokens=32, block_size=32, num_blocks=4,
                                         policy="static"),
                                    dict(max_num_seqs=256, max_num_batched_tokens=8, num_blocks=6),
                                    dict(max_num_seqs=256, max_num_batched_tokens=8, num_blocks=6,
                                         policy="prefill_first")])
@pytest.mark.parametrize("seed", range(4))
def test_invariants_under_tight_limits(roofline, config, seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 40))
    arrival = np.sort(rng.choice([0.0, 0.001, 0.01, 0.05], n) * np.arange(n))
    wl = workload(arrival, rng.integers(1, 80, n), rng.integers(1, 60, n))
    sim, result = simulate(roofline, wl, **config)
    check_invariants(sim, result, wl)


def test_same_seed_gives_identical_results(hybrid):
    config = dict(num_blocks=150, chunked_prefill=True)
    _, a = simulate(hybrid, random_workload(3), **config)
    sim, b = simulate(hybrid, random_workload(3), **config)
    assert a.summary()["preemptions"] > 0
    assert_frame_equal(a.requests, b.requests)
    assert_frame_equal(a.iterations, b.iterations)
    c = sim.run(random_workload(3))  # the same engine run again starts from an empty cache
    assert_frame_equal(a.requests, c.requests)
    assert_frame_equal(a.iterations, c.iterations)
    assert np.array_equal(a.itl_counts, c.itl_counts)
    d = sim.run(random_workload(4))
    assert not a.requests["finish_s"].equals(d.requests["finish_s"])


def test_request_beyond_max_model_len_is_rejected(hybrid):
    # llama-2-7b's context is 4096: 4000 + 200 does not fit; the others run
    wl = workload([0.0, 0.0, 0.1], [100, 4000, 3000], [10, 200, 1096])
    sim, result = simulate(hybrid, wl)
    assert sim.max_model_len == 4096
    q = result.requests
    assert q["status"].astype(str).tolist() == ["finished", "rejected", "finished"]
    assert "max_model_len" in q["reject_reason"].iloc[1] and "4096" in q["reject_reason"].iloc[1]
    assert math.isnan(q["first_token_s"].iloc[1])
    # an explicit limit overrides the model's
    _, result = simulate(hybrid, wl, max_model_len=1000)
    q = result.requests
    assert q["status"].astype(str).tolist() == ["finished", "rejected", "rejected"]
    assert q["reject_reason"].iloc[2].count("max_model_len 1000") == 1
    assert result.summary()["rejected"] == 2


@pytest.mark.parametrize("policy", ["continuous", "static"])
@pytest.mark.parametrize("chunked", [True, False])
def test_request_needing_more_blocks_than_the_cache_is_rejected(hybrid, policy, chunked):
    # 10 blocks × 16 = 160 tokens; a request holds at most prompt + output − 1 tokens:
    # 150 + 20 − 1 = 169 needs 11 blocks; 140 + 20 − 1 = 159 fits
    wl = workload([0.0, 0.0, 0.0], [150, 140, 30], [20, 20, 30])
    _, result = simulate(hybrid, wl, num_blocks=10, block_size=16, policy=policy, chunked_prefill=chunked)
    q = result.requests
    assert q["status"].astype(str).tolist() == ["rejected", "finished", "finished"]
    assert "KV blocks" in q["reject_reason"].iloc[0] and "10" in q["reject_reason"].iloc[0]
    assert (result.iterations["kv_blocks_used"] <= 10).all()
    assert result.summary()["rejected"] == 1


def test_all_rejected_workload_runs_no_iteration(hybrid):
    _, result = simulate(hybrid, workload([0.0, 1.0], [5000, 4096], [1, 1]))
    assert (result.requests["status"] == "rejected").all()
    assert len(result.iterations) == 0
    summary = result.summary()
    assert summary["finished"] == 0 and summary["rejected"] == 2 and summary["makespan_s"] == 0.0


# --- 5: agreement with Predictor.estimate --------------------------------------------------------

@pytest.mark.parametrize("chunked", [True, False])
def test_offline_batch_matches_static_estimate(hybrid, chunked):
    b, prompt, output = 16, 512, 128
    _, result = simulate(hybrid, workload(np.zeros(b), prompt, output), chunked_prefill=chunked,
                         max_num_batched_tokens=b * prompt, max_num_seqs=b)
    est = hybrid.estimate(*CONF[:2], tp=1, dtype="fp16", batch_size=b, input_len=prompt, output_len=output)
    q = result.requests
    assert (q["status"] == "finished").all() and q["preemptions"].sum() == 0
    assert result.iterations["prefill_seqs"].iloc[0] == b  # the whole batch prefills in one iteration
    assert q["e2e_s"].mean() == pytest.approx(est.e2e_ms / 1e3, rel=0.02)
    assert q["ttft_s"].mean() == pytest.approx(est.ttft_ms / 1e3, rel=0.02)
    assert q["tpot_s"].mean() == pytest.approx(est.tpot_ms / 1e3, rel=0.02)
    assert result.summary()["output_tokens_per_s"] == pytest.approx(est.output_tokens_per_s, rel=0.02)


# --- 6: static vs continuous batching -------------------------------------------------------------

def batches(requests: pd.DataFrame) -> list[pd.DataFrame]:
    return [g for _, g in requests.groupby("first_scheduled_s", sort=True)]


def test_static_policy_admits_only_when_the_engine_is_empty(hybrid):
    rng = np.random.default_rng(7)
    wl = workload(np.zeros(64), 256, rng.integers(10, 501, 64))
    _, result = simulate(hybrid, wl, policy="static", max_num_seqs=16)
    q = result.requests
    assert (q["status"] == "finished").all()
    groups = batches(q)
    assert [len(g) for g in groups] == [16, 16, 16, 16]
    assert groups[0]["first_scheduled_s"].iloc[0] == 0.0
    finishes = set(q["finish_s"])
    for prev, cur in zip(groups, groups[1:]):
        start = cur["first_scheduled_s"].iloc[0]
        assert start in finishes
        assert start == prev["finish_s"].max()  # the next batch starts when the last member of this one ends
    # FCFS: batch k holds requests 16k … 16k + 15
    assert [sorted(g["request_id"]) for g in groups] == [list(range(16 * k, 16 * k + 16)) for k in range(4)]


def test_static_policy_never_overlaps_batches_under_poisson_arrivals(hybrid):
    wl = random_workload(11, n=120, rate=8.0, prompt=(16, 1500), output=(1, 300))
    _, result = simulate(hybrid, wl, policy="static", max_num_seqs=32)
    q = result.requests
    assert (q["status"] == "finished").all()
    groups = batches(q)
    assert len(groups) > 2
    arrivals, finishes = set(q["arrival_s"]), set(q["finish_s"])
    for prev, cur in zip(groups, groups[1:]):
        start = cur["first_scheduled_s"].iloc[0]
        assert start >= prev["finish_s"].max()
        assert start in finishes or start in arrivals
        # nobody who had arrived by the time the engine emptied was left waiting for no reason
        if start > prev["finish_s"].max():
            assert start in arrivals and (cur["arrival_s"] <= start).all()


def test_continuous_batching_beats_static_throughput(hybrid):
    """Orca: with more requests than batch slots and varied output lengths, iteration-level scheduling
    refills finished slots at once instead of idling until the longest member of a batch ends."""
    rng = np.random.default_rng(7)
    wl = workload(np.zeros(64), 256, rng.integers(10, 501, 64))
    _, cont = simulate(hybrid, wl, policy="continuous", max_num_seqs=16)
    _, stat = simulate(hybrid, wl, policy="static", max_num_seqs=16)
    c, s = cont.summary(), stat.summary()
    assert c["output_tokens_per_s"] > 1.2 * s["output_tokens_per_s"]
    assert c["makespan_s"] < s["makespan_s"]
    assert c["e2e_ms"]["mean"] < s["e2e_ms"]["mean"]


# --- 7: chunked prefill ---------------------------------------------------------------------------

def test_chunked_prefill_lowers_tail_tpot(hybrid):
    """Sarathi-Serve: long whole prefills stall every running decode; budgeted chunks piggyback on decodes."""
    wl = random_workload(1, n=300, rate=2.0, prompt=(2000, 3800), output=(50, 200))
    _, chunked = simulate(hybrid, wl, chunked_prefill=True, max_num_batched_tokens=512)
    _, whole = simulate(hybrid, wl, chunked_prefill=False)
    c, w = chunked.summary(), whole.summary()
    assert c["finished"] == w["finished"] == 300
    assert c["tpot_ms"]["p99"] < w["tpot_ms"]["p99"]
    assert c["itl_ms"]["p99"] < w["itl_ms"]["p99"]
    assert (chunked.iterations["prefill_tokens"] + chunked.iterations["decode_seqs"] <= 512).all()


# --- 8: CLI ---------------------------------------------------------------------------------------

@pytest.fixture
def shared_cli(monkeypatch, hybrid):
    """The CLI on the module's predictor (its tables are already built)."""
    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: hybrid)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_simulate_json_and_outputs(capsys, shared_cli, tmp_path):
    code, out, err = run_cli(capsys, "simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--workload", "offline",
                             "--num-requests", "20", "--prompt-len", "64", "--output-len", "16", "--json",
                             "--out", str(tmp_path))
    assert code == 0, err
    summary = json.loads(out)
    for key in ("requests", "finished", "ttft_ms", "tpot_ms", "e2e_ms", "output_tokens_per_s", "requests_per_s",
                "slo", "kv_utilization", "batch_size", "config"):
        assert key in summary, key
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(summary[key]) >= {"p50", "p90", "p99"}
        assert summary[key]["p50"] <= summary[key]["p90"] <= summary[key]["p99"]
    assert summary["requests"] == summary["finished"] == 20
    assert summary["output_tokens_per_s"] > 0 and summary["requests_per_s"] > 0
    assert summary["config"]["policy"] == "continuous" and summary["config"]["chunked_prefill"] is True
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(requests) == 20
    for col in ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "ttft_s", "tpot_s", "e2e_s",
                "preemptions"):
        assert col in requests.columns, col
    assert (requests["ttft_s"] * 1e3).median() == pytest.approx(summary["ttft_ms"]["p50"], rel=1e-9)
    assert json.loads((tmp_path / "summary.json").read_text())["finished"] == 20
    trace = json.loads((tmp_path / "trace.json").read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == summary["iterations"] > 0
    assert (tmp_path / "latency_cdf.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--workload", "bogus", "--num-requests", "5", "--prompt-len", "8", "--output-len", "8"], "--workload"),
    (["--workload", "poisson", "--num-requests", "5", "--prompt-len", "8", "--output-len", "8"], "--rate"),
    (["--workload", "offline", "--trace", "/nonexistent.csv", "--num-requests", "5"], "--trace"),
    (["--workload", "offline", "--num-requests", "5", "--prompt-len", "8", "--output-len", "8", "--policy", "weird"],
     "--policy"),
    (["--workload", "offline", "--num-requests", "0", "--prompt-len", "8", "--output-len", "8"], "num-requests"),
])
def test_cli_simulate_bad_input_one_line_exit_2(capsys, shared_cli, args, message):
    code, out, err = run_cli(capsys, "simulate", "--model", "llama-2-7b", "--gpu", "a100-80gb", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0]
    assert out == ""


def test_request_filling_the_cache_to_the_last_token_runs(roofline):
    """prompt 16 + output 17 holds at most 32 tokens: exactly 2 blocks of 16 — it must run, not be rejected."""
    _, result = simulate(roofline, workload([0.0], [16], [17]), block_size=16, num_blocks=2)
    assert result.requests["status"].tolist() == ["finished"]


@pytest.mark.parametrize("config", [dict(), dict(chunked_prefill=False), dict(num_blocks=300),
                                    dict(policy="static", max_num_seqs=32), dict(policy="prefill_first"),
                                    dict(policy="prefill_first", num_blocks=300),
                                    dict(policy="prefill_first", max_num_batched_tokens=48)])
@pytest.mark.parametrize("offline", [False, True])
def test_fast_forward_matches_stepping_one_iteration_at_a_time(hybrid, config, offline):
    """Decode fast-forwarding computes runs of decode-only steps at once; every iteration must be the same
    (``offline``: every request at t = 0, so no arrival ends a run and the KV-block limit is found first)."""
    wl = random_workload(5, rate=1e9) if offline else random_workload(5)
    step = Simulator(hybrid, *CONF, config=EngineConfig(fast_forward=False, **config)).run(wl)
    fast = Simulator(hybrid, *CONF, config=EngineConfig(fast_forward=True, **config)).run(wl)
    assert len(step.iterations) == len(fast.iterations)
    for col in ("decode_seqs", "prefill_seqs", "prefill_tokens", "kv_blocks_used", "running"):
        assert (step.iterations[col].to_numpy() == fast.iterations[col].to_numpy()).all(), col
    for col in ("start_s", "duration_s"):
        np.testing.assert_allclose(step.iterations[col], fast.iterations[col], rtol=1e-9)
    for col in ("first_token_s", "finish_s", "preemptions"):
        np.testing.assert_allclose(step.requests[col].to_numpy(float), fast.requests[col].to_numpy(float), rtol=1e-9)
    np.testing.assert_array_equal(step.itl_counts, fast.itl_counts)
