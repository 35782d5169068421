"""Speed paths of the engine (issue 19) give exactly what the plain computations give."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.engine import EngineConfig
from scheduler.techniques.cluster import Cluster, Failure, InstanceSpec
from scheduler.techniques.cluster_parts import CountedQueue
from scheduler.workload import build_workload

MODEL, GPU = "llama-2-7b", "a100-80gb"


class RecountingCluster(Cluster):
    """Checks the O(1) load against recounting every queued request's blocks (the previous computation)."""

    checked = 0

    def _load(self, j: int) -> float:
        sim, view, s = self.sims[j], self.views[j], self.state
        w = np.fromiter(view.waiting, np.int64, len(view.waiting))
        tokens = np.where(s.prefilled[w], s.kv[w] + 1, s.target[w])
        recount = int((-(-sim.held(tokens) // sim.config.block_size)).sum())
        assert view.waiting.blocks == recount
        RecountingCluster.checked += 1
        return super()._load(j)


def test_least_loaded_load_equals_recounting_the_queues_through_handoffs_failures_and_budgets(hybrid):
    instances = [InstanceSpec(MODEL, GPU, role="prefill", config=EngineConfig(num_blocks=600)),
                 InstanceSpec(MODEL, GPU, role="decode", config=EngineConfig(num_blocks=500, kv_budget_tokens=900)),
                 InstanceSpec(MODEL, GPU, role="decode", config=EngineConfig(num_blocks=700, block_size=32))]
    wl = build_workload("poisson", 250, rate=20.0, trace="splitwise_conv", seed=4)
    cluster = RecountingCluster(hybrid, instances, router="least_loaded", failures=[Failure(2, 5.0, 2.0)],
                                failure_mode="migrate")
    result = cluster.run(wl)
    assert RecountingCluster.checked > 500
    assert result.result.summary()["finished"] > 0


def test_counted_queue_counts_each_request_once_and_refuses_other_changes():
    q = CountedQueue(lambda r: 10 * r)
    q.append(1)
    q.appendleft(2)
    q.append(3)
    assert q.blocks == 60 and list(q) == [2, 1, 3]
    assert q.popleft() == 2 and q.blocks == 40
    with pytest.raises(ValueError, match="already queued"):
        q.append(1)
    for change in (lambda: q.pop(), lambda: q.remove(1), lambda: q.clear(), lambda: q.extend([4])):
        with pytest.raises(TypeError, match="CountedQueue"):
            change()
    assert q.blocks == 40 and list(q) == [1, 3]


def test_decode_run_lookup_equals_the_vectorised_table_bit_for_bit(hybrid):
    table = hybrid.bind(MODEL, GPU).table
    for seqs in (1.0, 7.0, 40.0, 333.0, 9000.0):
        kv = (12_345 + seqs * np.arange(40, dtype=float) + seqs) / seqs
        assert np.array_equal(table.decode_column_ms(seqs, kv), table.decode_ms(np.full(len(kv), seqs), kv))
    # ascending runs (the engine's) take the clamp-free cell search: the same bits inside, at and beyond the grid
    from predictor.table_grids import DECODE_KV

    top = float(DECODE_KV[-1])
    for start, step in ((0.25, 0.05), (1.0, 1.0), (1_000.0, 1.0), (top - 20, 1.0), (top, 3.0), (3 * top, 1.0),
                        (5.0, 0.0)):
        kv = start + step * np.arange(40, dtype=float)
        for seqs in (1.0, 40.0, 9000.0):
            assert np.array_equal(table.decode_column_ms(seqs, kv, ascending=True),
                                  table.decode_ms(np.full(len(kv), seqs), kv))


def test_preemption_victim_from_the_heap_is_the_latest_arrived_running_request(hybrid):
    from scheduler.engine import Simulator

    victims = []

    class Checked(Simulator):
        def _evict_latest(self, state):
            expected = max(state.running, key=lambda r: (state.arrival[r], r))  # the plain linear search
            victim = super()._evict_latest(state)
            victims.append(victim)
            assert victim == expected
            return victim

    wl = build_workload("poisson", 200, rate=8.0, trace="splitwise_conv", seed=2)
    result = Checked(hybrid, MODEL, GPU, 1, "fp16", EngineConfig(num_blocks=250)).run(wl)
    assert len(victims) > 20 and result.summary()["preemptions"] == len(victims)


def test_running_ids_follow_every_join_leave_and_new_list(roofline):
    """The cached array of running ids equals the running list after joins, leaves and a list swapped in."""
    from scheduler.engine import Simulator
    from scheduler.engine_state import _State
    from scheduler.workload import Workload

    sim = Simulator(roofline, "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig())
    sim.start()
    state = _State(Workload(np.zeros(6), np.full(6, 8), np.full(6, 4)))
    assert state.running_ids().tolist() == []
    for r in (3, 1, 4):
        sim.join(state, r)
    first = state.running_ids()
    assert first.tolist() == [3, 1, 4] and state.running_ids() is first  # unchanged list: the cached array
    sim._leave(state, 1)
    assert state.running_ids().tolist() == [3, 4]
    state.running = [5]  # a new list object (a lost instance's reset, a view) is never the cached one
    assert state.running_ids().tolist() == [5]
    view = state.view()
    sim.join(view, 2)
    assert view.running_ids().tolist() == [2] and state.running_ids().tolist() == [5]


def test_record_work_off_keeps_every_time_and_drops_only_the_efficiency_report(hybrid):
    """``record_work = False`` (latency-only callers): the same per-request times, no efficiency report."""
    from scheduler.engine import Simulator

    wl = build_workload("poisson", 300, rate=8.0, trace="splitwise_conv", seed=2)
    full = Simulator(hybrid, "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig()).run(wl, record_iterations=False)
    lean_sim = Simulator(hybrid, "llama-2-7b", "a100-80gb", 1, "fp16", EngineConfig())
    lean_sim.record_work = False
    lean = lean_sim.run(wl, record_iterations=False)
    for column in ("first_token_s", "finish_s", "tpot_s", "arrival_s"):
        np.testing.assert_array_equal(lean.columns[column], full.columns[column])
    assert full.efficiency and lean.efficiency == {}
    assert lean.summary()["ttft_ms"] == full.summary()["ttft_ms"]
