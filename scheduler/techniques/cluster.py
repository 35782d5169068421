"""Several engine instances behind a router, co-simulated in time order.

Every instance is a :class:`scheduler.engine.Simulator` (its own GPUs, KV cache, clock and queue); the
requests' per-request arrays are shared, each instance holding its own running list and queue. Events are
processed in global time order: the busy instance with the earliest clock runs its next iteration (or a
fast-forwarded run of decode steps that stops before the next event), unless an event (an arrival, a KV
transfer landing, a failure or a restart) comes first. A one-instance cluster therefore reproduces
:meth:`Simulator.run` iteration for iteration.

Techniques
----------
* **Routing** (``router``): ``round_robin`` over the instances that accept the request, or ``least_loaded``
  — the lowest *load*, (KV blocks in use + blocks the queued requests need for their prompts + blocks
  reserved for incoming transfers) / KV blocks, a simplified form of Llumnix's virtual usage.
* **Live migration** (Llumnix, OSDI'24; ``migration=True``): after each step of an instance whose queue head
  waits for KV memory (or that just preempted a request), its latest-arrived decoding request is moved to the
  least-loaded instance when that instance's load is lower by at least ``migration_margin`` and it has the
  blocks. The request stops for the copy: its KV (tokens held × KV bytes per token per GPU) over the
  source's link at ``link_bandwidth_gbps`` plus the link latency; copies from one instance are serialised
  on its link. The target reserves the blocks when the copy starts; the source frees its blocks when the
  copy ends. (Llumnix overlaps the copy with decoding and stops the request only for the last few blocks,
  so charging the whole copy as downtime is conservative.)
* **Preemptible instances** (SpotServe, ASPLOS'24; ``failures``): an instance is lost at a given time and
  comes back empty after ``restart_after_s`` (or never). Requests it was serving are re-routed to the
  surviving instances: ``failure_mode="restart"`` starts them again from scratch (KV and generated tokens
  lost: the response is generated anew; the first token's time stays the first one the user saw);
  ``"recompute"`` drops their KV but keeps the tokens already streamed (they recompute prompt + generated
  tokens, like preemption by recompute); ``"migrate"`` copies the KV of
  decoding requests to a surviving instance with blocks for it (the copy must end within ``grace_s`` of the
  failure, the cloud's preemption notice), the others recompute. Finished requests are never lost. The
  iteration in flight at the failure time is allowed to complete (at most one iteration late).
* **Prefill/decode disaggregation** (DistServe, OSDI'24; instance ``role``): ``prefill`` instances run
  prefills only; when a prompt completes (the first token is produced there) the request's KV is pushed over
  the source's link (prompt tokens × KV bytes per token per GPU / link bandwidth, serialised per source
  link; the prefill instance holds the blocks until the copy ends) and the request queues at a ``decode``
  instance, which admits it straight into decoding when it has blocks for it. ``mixed`` instances do both
  (colocated serving).

Assumptions: all instances serve the same model; KV moves between GPUs of one node over NVLink at the
source GPU's ``link_bandwidth_gbps`` (per GPU, per direction; each TP shard moves its own slice in parallel)
unless ``link_bandwidth_gbps`` is given (e.g. ~25 GB/s for 200 Gb/s InfiniBand across nodes); transfers
are not slowed by the serving traffic; a request that cannot fit an instance's KV cache is rejected.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

import numpy as np

from predictor.errors import InputError
from scheduler.engine import (
    DONE,
    REJECTED,
    RUNNING,
    STUCK,
    WAITING,
    EngineConfig,
    Simulator,
    _State,
)
from scheduler.techniques.cluster_parts import ClusterResult, CountedQueue, Failure, InstanceSpec  # noqa: F401
from scheduler.workload import Workload

ROUTERS = ("round_robin", "least_loaded")
ROLES = ("mixed", "prefill", "decode")
FAILURE_MODES = ("restart", "recompute", "migrate")


class Cluster:
    """Co-simulates engine instances behind a router (see the module docstring).

    Parameters
    ----------
    predictor : predictor.Predictor
    instances : list of InstanceSpec
    router : {"round_robin", "least_loaded"}
    migration : bool
        Llumnix-style live migration between ``mixed`` instances.
    migration_margin : float
        Least load difference (fraction of a KV cache) between source and target for a migration.
    migration_check_s : float
        Longest fast-forwarded run (s) on an instance waiting for memory, so migration is considered at
        least this often.
    migration_batch : int
        Most migrations started from one instance per check (their copies queue on its link).
    failures : sequence of Failure
    failure_mode : {"restart", "recompute", "migrate"}
    grace_s : float
        Preemption notice (s): in ``migrate`` mode a KV copy must end within it.
    link_bandwidth_gbps : float, optional
        KV-copy bandwidth per GPU (GB/s); default: the source GPU's ``link_bandwidth_gbps``.
    """

    def __init__(self, predictor, instances: list[InstanceSpec], *, router: str = "round_robin",
                 migration: bool = False, migration_margin: float = 0.1, migration_check_s: float = 0.05,
                 migration_batch: int = 4,
                 failures=(), failure_mode: str = "recompute", grace_s: float = 30.0,
                 link_bandwidth_gbps: float | None = None):
        if not instances:
            raise InputError("cluster: at least one instance is needed")
        if router not in ROUTERS:
            raise InputError(f"router: unknown value {router!r}; allowed: {', '.join(ROUTERS)}")
        if failure_mode not in FAILURE_MODES:
            raise InputError(f"failure_mode: unknown value {failure_mode!r}; allowed: {', '.join(FAILURE_MODES)}")
        for spec in instances:
            if spec.role not in ROLES:
                raise InputError(f"role: unknown value {spec.role!r}; allowed: {', '.join(ROLES)}")
            if spec.role != "mixed" and spec.config.policy == "static":
                raise InputError("role: disaggregated instances need iteration-level batching (policy continuous or "
                                 "prefill_first)")
        roles = {s.role for s in instances}
        if ("prefill" in roles) != ("decode" in roles):
            raise InputError("role: a disaggregated cluster needs both prefill and decode instances")
        for f in failures:
            if not 0 <= f.instance < len(instances):
                raise InputError(f"failures: instance {f.instance} does not exist (0..{len(instances) - 1})")
            if not math.isfinite(f.at_s) or f.at_s < 0:
                raise InputError(f"failures: at_s must be finite and >= 0, got {f.at_s!r}")
        if link_bandwidth_gbps is not None and not link_bandwidth_gbps > 0:
            raise InputError(f"link_bandwidth_gbps: must be > 0, got {link_bandwidth_gbps!r}")
        self.specs = list(instances)
        self.sims = [Simulator(predictor, s.model, s.gpu, s.tp, s.dtype, s.config, profile=s.profile)
                     for s in instances]
        models = {sim.bound.model.name for sim in self.sims}
        if len(models) > 1:
            raise InputError(f"cluster: every instance must serve the same model, got {sorted(models)}")
        self.router = router
        self.migration = migration
        self.migration_margin = migration_margin
        self.migration_check_s = migration_check_s
        self.migration_batch = migration_batch
        self.failures = sorted(failures, key=lambda f: f.at_s)
        self.failure_mode = failure_mode
        self.grace_s = grace_s
        self.link_bandwidth_gbps = link_bandwidth_gbps

    # --- helpers ----------------------------------------------------------------------------------
    def _transfer_s(self, k: int, tokens: int) -> float:
        """Seconds to copy ``tokens`` KV tokens out of instance ``k`` (per-GPU shard over one link)."""
        sim = self.sims[k]
        bw = (self.link_bandwidth_gbps or sim.bound.gpu.link_bandwidth_gbps) * 1e9
        return tokens * sim.kv_bytes_per_token / bw + sim.bound.gpu.link_latency_us * 1e-6

    def _load(self, j: int) -> float:
        """(KV blocks in use + blocks the queued requests need) / KV blocks of instance ``j`` (O(1): see
        :class:`~scheduler.techniques.cluster_parts.CountedQueue`)."""
        sim = self.sims[j]
        return (sim.num_blocks - sim.free_blocks + self.views[j].waiting.blocks) / sim.num_blocks

    def _queue(self, j: int) -> CountedQueue:
        """An empty waiting queue for instance ``j`` that counts the blocks its requests need at admission."""
        sim, state = self.sims[j], self.state

        def need(r: int) -> int:
            tokens = int(state.kv[r]) + 1 if state.prefilled[r] else int(state.target[r])
            return -(-int(sim.held(tokens)) // sim.config.block_size)

        return CountedQueue(need)

    def _route(self, roles: tuple[str, ...], exclude: int = -1) -> int | None:
        eligible = [j for j in range(len(self.sims)) if self.alive[j] and self.specs[j].role in roles and j != exclude]
        if not eligible:
            return None
        if self.router == "round_robin":
            key = roles
            count = self._rr.get(key, 0)
            self._rr[key] = count + 1
            return eligible[count % len(eligible)]
        return min(eligible, key=lambda j: (self._load(j), j))

    def _wake(self, j: int, t: float) -> None:
        """An idle instance starts serving at ``t`` (its clock never runs backwards)."""
        view = self.views[j]
        if not view.running and not view.waiting:
            self.sims[j].now = max(self.sims[j].now, t)

    def _enqueue(self, j: int, r: int, t: float, front: bool = False) -> None:
        self._wake(j, t)
        self.state.status[r] = WAITING
        if front:
            self.views[j].waiting.appendleft(r)
        else:
            self.views[j].waiting.append(r)
        self.served_by[r] = j

    def _push(self, t: float, kind: str, *payload) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, self._seq, kind, payload))

    def _start_copy(self, k: int, r: int, j: int | None, kind: str, now: float, src_blocks: int,
                    deadline: float = math.inf) -> bool:
        """Copy ``r``'s KV out of ``k`` (to ``j``; for a handoff the decode instance is chosen on landing)."""
        tokens = int(self.sims[k].held(int(self.state.kv[r])))
        start = max(now, self.link_free[k])
        done = start + self._transfer_s(k, tokens)
        if done > deadline:
            return False
        self.link_free[k] = done
        self.transfers.append(done - now)
        self._push(done, kind, r, k, self.epoch[k], j, src_blocks, self.epoch[j] if j is not None else 0)
        return True

    def _migrate(self, k: int, r: int, j: int, now: float, deadline: float = math.inf) -> bool:
        """Move decoding request ``r`` from instance ``k`` to ``j`` (blocks reserved on ``j`` at once)."""
        sim_k, sim_j = self.sims[k], self.sims[j]
        state = self.state
        need = sim_j._admission_blocks(state, r, int(state.kv[r]) + 1)
        if need > sim_j.free_blocks:
            return False
        src_blocks = int(state.blocks[r])
        tokens = int(sim_k.held(int(state.kv[r])))
        if max(now, self.link_free[k]) + self._transfer_s(k, tokens) > deadline:
            return False
        if self.alive[k] and r in self.views[k].running:
            sim_k.release(self.views[k], r)
            sim_k.free_blocks -= src_blocks  # the source keeps the blocks until the copy ends
        state.blocks[r] = 0
        sim_j._take(state, r, need)  # its tokens' blocks and its per-sequence state's, reserved on j at once
        self.served_by[r] = j
        self._start_copy(k, r, j, "migrated", now, src_blocks if self.alive[k] else 0, deadline)
        return True

    def _recompute(self, r: int) -> None:
        """``r`` lost its KV (instance failure): it recomputes its prompt and the tokens it generated
        (``restart`` mode: the generated tokens are lost too and it starts from its prompt)."""
        s = self.state
        if self.failure_mode == "restart":
            s.generated[r] = 0
        s.kv[r] = 0
        s.blocks[r] = 0
        s.target[r] = s.prompt[r] + s.generated[r]
        s.status[r] = WAITING
        s.prefilled[r] = False
        self.restarts[r] += 1

    # --- events -----------------------------------------------------------------------------------
    def _arrive(self, r: int, t: float) -> None:
        j = self._route(("mixed", "prefill"))
        if j is None:
            self.orphans.append(r)
        else:
            self._enqueue(j, r, t)

    def _landed(self, kind: str, t: float, r: int, k: int, epoch_k: int, j, src_blocks: int, epoch_j: int) -> None:
        if self.alive[k] and self.epoch[k] == epoch_k:
            self.sims[k].free_blocks += src_blocks
        if kind == "handoff":
            self.landed[r] = t
            target = self._route(("decode",))
            if target is None:
                self._recompute(r)
                self.orphans.append(r)
                return
            self._enqueue(target, r, t)  # prefilled: admitted straight into decoding
            return
        # a live migration: join the target's running batch
        if not self.alive[j] or self.epoch[j] != epoch_j:
            self._recompute(r)
            self._reroute([r], t)
            return
        self._wake(j, t)
        self.sims[j].join(self.views[j], r)
        self.state.status[r] = RUNNING
        self.sims[j].tokens_held += self.sims[j].held(int(self.state.kv[r]))

    def _reroute(self, ids: list[int], t: float) -> None:
        """Put requests that lost their instance at the head of surviving instances' queues (arrival order)."""
        ids = sorted(ids, key=lambda r: (self.state.arrival[r], r))
        per: dict[int, list[int]] = {}
        for r in ids:
            roles = ("decode",) if self.state.prefilled[r] else ("mixed", "prefill")
            j = self._route(roles)
            if j is None:
                self.orphans.append(r)
            else:
                per.setdefault(j, []).append(r)
                self.served_by[r] = j
        for j, lst in per.items():
            self._wake(j, t)
            for r in reversed(lst):
                self.state.status[r] = WAITING
                self.views[j].waiting.appendleft(r)

    def _fail(self, k: int, t: float, restart_after_s: float | None) -> None:
        if not self.alive[k]:
            return
        view, sim, s = self.views[k], self.sims[k], self.state
        running, waiting = list(view.running), list(view.waiting)
        self.alive[k] = False
        self.epoch[k] += 1
        view.running, view.waiting, view.partial = [], self._queue(k), {}
        sim.free_blocks, sim.tokens_held = sim.num_blocks, 0
        sim._reset_running()
        self.interrupted[np.asarray(running, np.int64)] += 1
        lost = []
        for r in waiting:
            if s.prefilled[r]:
                self._recompute(r)  # its prompt KV was staged on the lost instance
            lost.append(r)
        for r in sorted(running, key=lambda r: (s.arrival[r], r)):
            moved = False
            if self.failure_mode == "migrate" and s.kv[r] >= s.target[r] and s.generated[r] > 0:
                j = self._route_with_room(r, exclude=k)
                if j is not None:
                    moved = self._migrate(k, r, j, t, deadline=t + self.grace_s)
            if not moved:
                self._recompute(r)
                lost.append(r)
        self._reroute(lost, t)
        if restart_after_s is not None:
            self._push(t + restart_after_s, "restart", k)

    def _route_with_room(self, r: int, exclude: int) -> int | None:
        """Least-loaded live instance (other than ``exclude``) with the blocks to take ``r`` now."""
        s = self.state
        best = None
        for j in range(len(self.sims)):
            if j == exclude or not self.alive[j] or self.specs[j].role == "prefill":
                continue
            if self.sims[j]._admission_blocks(s, r, int(s.kv[r]) + 1) > self.sims[j].free_blocks:
                continue
            key = (self._load(j), j)
            if best is None or key < best[0]:
                best = (key, j)
        return None if best is None else best[1]

    def _restart(self, k: int, t: float) -> None:
        self.alive[k] = True
        self.sims[k].now = max(self.sims[k].now, t)
        orphans, self.orphans = list(self.orphans), deque()
        self._reroute(orphans, t)

    def _maybe_migrate(self, k: int, preempted: bool) -> None:
        """Move decoding requests off ``k`` while it waits for memory and a less-loaded instance has room
        (latest arrival first — the request preemption would evict; at most ``migration_batch`` per check)."""
        sim, view, s = self.sims[k], self.views[k], self.state
        if self.specs[k].role != "mixed" or self.link_free[k] > sim.now:
            return
        for _ in range(self.migration_batch):
            if not view.running or not (preempted or sim.memory_blocked(view)):
                return
            preempted = False
            decoding = [r for r in view.running if s.kv[r] >= s.target[r] and r not in view.partial]
            if not decoding:
                return
            r = max(decoding, key=lambda r: (s.arrival[r], r))
            j = self._route_with_room(r, exclude=k)
            if j is None or self.specs[j].role != "mixed" or self._load(j) + self.migration_margin >= self._load(k):
                return
            if not self._migrate(k, r, j, sim.now):
                return
            self.migrations += 1

    # --- main loop --------------------------------------------------------------------------------
    def run(self, workload: Workload, stop: Callable[[], bool] | None = None) -> ClusterResult:
        """Serve ``workload`` with the cluster to completion; every request finishes once (or is rejected).

        ``stop``, when given, is polled whenever requests complete; returning True ends the run there (the
        result is marked partial; the requests finished by then keep exactly the times of a full run).
        """
        n = len(workload)
        self.state = state = _State(workload)
        state.lean = not any(sim.record_work for sim in self.sims)  # latency-only instances: see Simulator.record_work
        peaks = {sim.peaks for sim in self.sims}
        state.peaks = peaks.pop() if len(peaks) == 1 else None  # per-request MFU/MBU need one GPU kind
        for sim in self.sims:
            sim._reject_impossible(state)
            sim.start()
            sim._stream = None
            sim.handoff = None
            sim.accepts_prefilled = False
        for spec, sim in zip(self.specs, self.sims, strict=True):
            if spec.role == "prefill":
                sim.handoff = []
            if spec.role == "decode":
                sim.accepts_prefilled = True
        if state.closed is not None:  # a closed-loop workload: the first clients send at t = 0
            state.closed.release(state, 0.0)
        self.views = [state.view() for _ in self.sims]
        for j, view in enumerate(self.views):
            view.waiting = self._queue(j)
        m = len(self.sims)
        self.alive = [True] * m
        self.epoch = [0] * m
        self.link_free = [0.0] * m
        self.events: list = []
        self._seq = 0
        self._rr: dict = {}
        self.orphans: deque[int] = deque()
        self.transfers: list[float] = []
        self.migrations = 0
        self.handoffs = 0
        self.restarts = np.zeros(n, np.int64)
        self.interrupted = np.zeros(n, np.int64)
        self.served_by = np.full(n, -1, np.int64)
        self.landed = np.full(n, np.nan)
        for f in self.failures:
            self._push(f.at_s, "fail", f.instance, f.restart_after_s)
        finished = int((state.status == REJECTED).sum())
        next_arrival = 0
        while finished < n:
            while next_arrival < n and state.status[next_arrival] == REJECTED:
                next_arrival += 1
            t_arr = float(state.arrival[next_arrival]) if next_arrival < n else math.inf
            t_evt = self.events[0][0] if self.events else math.inf
            t_next = min(t_arr, t_evt)
            k, t_busy = -1, math.inf
            for j in range(m):
                if self.alive[j] and (self.views[j].running or self.views[j].waiting) and self.sims[j].now < t_busy:
                    k, t_busy = j, self.sims[j].now
            if k < 0 and t_next == math.inf:
                break  # nothing can happen any more (requests orphaned with no instance coming back)
            if t_next <= t_busy:
                if t_arr <= t_evt:
                    self._arrive(next_arrival, t_arr)
                    next_arrival += 1
                else:
                    t, _, kind, payload = heapq.heappop(self.events)
                    if kind == "fail":
                        self._fail(payload[0], t, payload[1])
                    elif kind == "restart":
                        self._restart(payload[0], t)
                    else:
                        self._landed(kind, t, *payload)
                continue
            sim, view = self.sims[k], self.views[k]
            limit = t_next
            if self.migration and sim.memory_blocked(view):
                limit = min(limit, sim.now + self.migration_check_s)
            preempted_before = sim.preemptions_total
            outcome, done, _ = sim.advance(view, None, limit, False)
            finished += done
            if done and stop is not None and stop():
                break
            if outcome == STUCK:
                if t_next < math.inf:
                    sim.now = max(sim.now, t_next)
                else:
                    finished += sim.reject_head(view)
                continue
            if sim.handoff:
                for r in sim.handoff:
                    blocks = -(-int(sim.held(int(state.kv[r]))) // sim.config.block_size)
                    sim.free_blocks -= blocks  # held until the copy ends
                    self._start_copy(k, r, None, "handoff", sim.now, blocks)
                    self.handoffs += 1
                sim.handoff.clear()
            if self.migration:
                self._maybe_migrate(k, sim.preemptions_total > preempted_before)
        return self._result(workload)

    def _result(self, workload: Workload) -> ClusterResult:
        import pandas as pd

        from scheduler.metrics import SimResult, request_columns

        state = self.state
        columns = request_columns(state)
        instances = []
        for spec, sim in zip(self.specs, self.sims, strict=True):
            st = sim.stats
            counts = st.batch_counts
            instances.append({
                "role": spec.role, "kv_blocks": int(sim.num_blocks),
                "kv_utilization_mean": st.kv_block_seconds / st.time_s / sim.num_blocks if st.time_s else 0.0,
                "busy_s": st.time_s, "preemptions": int(sim.preemptions_total),
                "batch_mean": float((np.arange(len(counts)) * counts).sum() / counts.sum()) if counts.sum() else 0.0,
            })
        first = self.sims[0]
        meta = {"workload": workload.name, "predictor": first.predictor_name, "model": first.bound.model.name,
                "gpu": first.bound.gpu.name, "tp": first.bound.tp, "dtype": first.bound.precision.label,
                "instances": [s.role for s in self.specs], "router": self.router, "migration": self.migration}
        result = SimResult(columns, pd.DataFrame(), first.config.to_dict(), sum(s.num_blocks for s in self.sims),
                           False, meta, state.itl_counts.copy(), None)
        unfinished = ~np.isin(state.status, (DONE, REJECTED))
        result.partial = bool(unfinished.any())
        return ClusterResult(result, instances, self.migrations, self.handoffs, np.asarray(self.transfers, float),
                             self.restarts, self.served_by, self.interrupted, self.landed)


def replicas(model, gpu, n: int, tp: int = 1, dtype: str = "fp16", config: EngineConfig | None = None,
             role: str = "mixed") -> list[InstanceSpec]:
    """``n`` identical instance specs."""
    return [InstanceSpec(model, gpu, tp, dtype, config or EngineConfig(), role) for _ in range(n)]
