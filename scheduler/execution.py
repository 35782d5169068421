"""Executing a multi-LLM plan on one draw of the application's lengths.

A :class:`Plan` is a sequence of stages; a stage places some LLMs on disjoint GPUs. Execution semantics:

* A stage starts when the previous one ends. An LLM placed exactly as in the previous stage keeps running
  undisturbed; an LLM placed anew (or differently) first pays its load time, then serves its remaining
  requests. An LLM absent from the next stage stops: requests it finished stay finished, requests in
  flight keep the tokens they generated (their next run recomputes prompt + those tokens as a prefill,
  like preemption by recompute).
* A stage ends when the first of its LLMs finishes all its requests; after the last stage the LLMs still
  running continue to completion. LLMs the plan never places (it can happen when lengths differ from the
  ones the plan was made for) run afterwards, one at a time on all GPUs with their fastest configuration.
  A stage in which nothing can progress (its LLMs all wait for upstream requests that are not being served)
  is skipped: its LLMs stop at once.
* Chains: a downstream request becomes available when its upstream request finishes; a downstream LLM
  running while its upstream runs sees those arrivals as they happen. When the upstream stops (or is
  re-placed), the downstream's schedule is recomputed from what the upstream has actually finished.

Co-located LLMs (placements with a ``group``, :mod:`scheduler.colocation`) share their GPUs: they are
loaded one after another (their load times add: one host-to-GPU path) and served together from then on,
simulated jointly (one co-located simulation per DP replica) with the engine's contention model. The group is
kept undisturbed while its placements are unchanged, also after one member finishes (the survivor keeps its
memory partition). Only LLMs without an upstream are co-located (the planner enforces it).

Every LLM's serving within a stage is simulated with the engine simulator (one simulation per DP replica,
requests dealt round-robin in arrival order), and results are cached by (LLM, configuration, remaining
requests, their arrival offsets), so plans that share a prefix or a placement share the work.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from scheduler.engine_state import REJECTED
from scheduler.placement import Config, Placement, load_time_s

INF = math.inf


@dataclass(frozen=True)
class Stage:
    placements: tuple[Placement, ...]

    def llms(self) -> set[str]:
        return {p.llm for p in self.placements}


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]

    def describe(self) -> list[list[dict]]:
        return [[{"llm": p.llm, "tp": p.config.tp, "dp": p.config.dp, "ep": p.config.ep, "pp": p.config.pp,
                  "gpus": list(p.gpus),
                  **({"colocated": list(p.group)} if p.group else {})} for p in s.placements]
                for s in self.stages]


@dataclass
class Remaining:
    """Unfinished requests of one LLM: ids (into the sample arrays), extra prompt tokens, outputs left."""

    ids: np.ndarray
    extra: np.ndarray
    out_left: np.ndarray

    @property
    def empty(self) -> bool:
        return self.ids.size == 0


@dataclass
class Timeline:
    """Simulated serving of ``remaining`` from ``start_s`` (absolute seconds)."""

    remaining: Remaining
    start_s: float
    first_token_s: np.ndarray
    finish_s: np.ndarray
    tpot_s: np.ndarray

    @property
    def completion_s(self) -> float:
        return float(self.finish_s.max()) if self.finish_s.size else self.start_s

    def cut(self, t: float) -> tuple[np.ndarray, np.ndarray, Remaining]:
        """(finished ids, their finish times, what remains) if serving stops at ``t``."""
        r = self.remaining
        done = self.finish_s <= t
        started = ~done & (self.first_token_s <= t)
        generated = np.zeros(r.ids.size, np.int64)
        if started.any():
            steps = np.floor((t - self.first_token_s[started]) / np.where(self.tpot_s[started] > 0,
                                                                          self.tpot_s[started], np.inf))
            generated[started] = np.minimum(1 + np.nan_to_num(steps).astype(np.int64), r.out_left[started] - 1)
        keep = ~done
        left = Remaining(r.ids[keep], r.extra[keep] + generated[keep], r.out_left[keep] - generated[keep])
        return r.ids[done], self.finish_s[done], left


@dataclass
class Interval:
    """An LLM on GPUs: loading from ``load_s``, serving from ``serve_s`` until ``end_s``."""

    llm: str
    config: Config
    gpus: tuple[int, ...]
    load_s: float
    serve_s: float
    end_s: float


@dataclass
class Execution:
    makespan_s: float
    intervals: list[Interval] = field(default_factory=list)
    finish_s: dict[str, np.ndarray] = field(default_factory=dict)
    stage_ends_s: list[float] = field(default_factory=list)
    first_finisher: list[str] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)
    done: set = field(default_factory=set)
    running_at_end: dict = field(default_factory=dict)
    remaining_counts: dict = field(default_factory=dict)


class Executor:
    """Simulates plans on application samples (with a cache of per-LLM simulations)."""

    def __init__(self, app, predictor, engine_spec):
        from scheduler.engine import EngineConfig

        self.app = app
        self.predictor = predictor
        self.engine = EngineConfig(max_num_seqs=engine_spec.max_num_seqs,
                                   max_num_batched_tokens=engine_spec.max_num_batched_tokens,
                                   chunked_prefill=engine_spec.chunked_prefill)
        self.contention = getattr(engine_spec, "contention", "shared")
        self._simulators: dict = {}
        self._cache: dict = {}
        self._sims_by_key: dict = {}  # engine simulations each cache entry cost (for scheduler.plan_pool)
        self.touched: list | None = None  # when a list, every cache key looked up is appended (scheduler.plan_pool)
        self.simulations = 0

    # --- one LLM ---------------------------------------------------------------------------------
    def _simulator(self, llm: str, tp: int):
        key = (llm, tp)
        if key not in self._simulators:
            from scheduler.engine import Simulator

            spec = self.app.by_name[llm]
            self._simulators[key] = Simulator(self.predictor, spec.spec, self.app.gpu, tp,
                                              self.app.precision, self.engine)
        return self._simulators[key]

    def load_time(self, llm: str, config: Config) -> float:
        """Seconds to bring ``llm`` up on ``config`` (measured start-up time where known)."""
        spec = self.app.by_name[llm]
        return load_time_s(spec.model_id, spec.spec, config.layout, self.app.precision)

    def simulate(self, llm: str, config: Config, sample, remaining: Remaining, start_s: float,
                 available_s: np.ndarray) -> Timeline:
        """Serve ``remaining`` on ``config`` from ``start_s``; ``available_s`` gives each request's arrival."""
        from scheduler.workload import Workload

        offsets = np.maximum(available_s - start_s, 0.0)
        finite = np.isfinite(offsets)
        prompts = sample.prompts[llm][remaining.ids] + remaining.extra
        key = (llm, config, hashlib.blake2b(b"".join(a.tobytes() for a in (
            remaining.ids, prompts, remaining.out_left, np.round(np.where(finite, offsets, -1.0), 6))),
            digest_size=16).digest())
        if self.touched is not None:
            self.touched.append(key)
        cached = self._cache.get(key)
        if cached is None:
            before = self.simulations
            n = remaining.ids.size
            first = np.full(n, INF)
            finish = np.full(n, INF)
            tpot = np.zeros(n)
            order = np.flatnonzero(finite)
            order = order[np.argsort(offsets[order], kind="stable")]
            sim = self._simulator(llm, config.layout)
            for replica in range(config.dp):
                idx = order[replica::config.dp]
                if idx.size == 0:
                    continue
                wl = Workload(offsets[idx], prompts[idx], remaining.out_left[idx], name=llm)
                res = sim.timings(wl)
                self.simulations += 1
                ft, fin = res.first_token_s, res.finish_s
                rejected = res.status_code == REJECTED
                # a request the engine can never hold is dropped at once (counted as finished at arrival)
                ft[rejected] = wl.arrival_s[rejected]
                fin[rejected] = wl.arrival_s[rejected]
                first[idx], finish[idx] = ft, fin
                tpot[idx] = np.nan_to_num(res.tpot_s)
            cached = (first, finish, tpot)
            self._cache[key] = cached
            self._sims_by_key[key] = self.simulations - before
        first, finish, tpot = cached
        return Timeline(remaining, start_s, first + start_s, finish + start_s, tpot)

    def simulate_group(self, names: list[str], config: Config, sample, remaining: dict, start_s: float,
                       available_s: dict) -> dict[str, Timeline]:
        """Serve each ``names[i]``'s ``remaining`` co-located on the same GPUs (``config``) from ``start_s``."""
        from scheduler.workload import Workload

        if len(names) == 1:
            return {names[0]: self.simulate(names[0], config, sample, remaining[names[0]], start_s, available_s[names[0]])}
        offsets = {n: np.maximum(available_s[n] - start_s, 0.0) for n in names}
        prompts = {n: sample.prompts[n][remaining[n].ids] + remaining[n].extra for n in names}
        key = ("group", tuple(names), config, self.contention, hashlib.blake2b(b"".join(
            a.tobytes() for n in names for a in (remaining[n].ids, prompts[n], remaining[n].out_left,
                                                 np.round(np.where(np.isfinite(offsets[n]), offsets[n], -1.0), 6))),
            digest_size=16).digest())
        if self.touched is not None:
            self.touched.append(key)
        cached = self._cache.get(key)
        if cached is None:
            before = self.simulations
            cached = {}
            orders = {}
            for n in names:
                size = remaining[n].ids.size
                cached[n] = (np.full(size, INF), np.full(size, INF), np.zeros(size))
                order = np.flatnonzero(np.isfinite(offsets[n]))
                orders[n] = order[np.argsort(offsets[n][order], kind="stable")]
            sim = self._colocated(tuple(names), config.tp)
            for replica in range(config.dp):
                idx = {n: orders[n][replica::config.dp] for n in names}
                wls = [Workload(offsets[n][idx[n]], prompts[n][idx[n]], remaining[n].out_left[idx[n]], name=n)
                       for n in names]
                out = sim.run(wls)
                self.simulations += 1
                for n, wl, res in zip(names, wls, out.results, strict=True):
                    req = res.requests
                    rejected = req["status"].astype(str).to_numpy() == "rejected"
                    ft = req["first_token_s"].to_numpy(float, copy=True)
                    fin = req["finish_s"].to_numpy(float, copy=True)
                    ft[rejected] = wl.arrival_s[rejected]
                    fin[rejected] = wl.arrival_s[rejected]
                    first, finish, tpot = cached[n]
                    first[idx[n]], finish[idx[n]] = ft, fin
                    tpot[idx[n]] = np.nan_to_num(req["tpot_s"].to_numpy(float))
            self._cache[key] = cached
            self._sims_by_key[key] = self.simulations - before
        return {n: Timeline(remaining[n], start_s, cached[n][0] + start_s, cached[n][1] + start_s, cached[n][2])
                for n in names}

    def _colocated(self, names: tuple[str, ...], tp: int):
        key = ("group", names, tp)
        if key not in self._simulators:
            from scheduler.colocation import ColocatedSimulator

            self._simulators[key] = ColocatedSimulator(self.predictor, [self.app.by_name[n].spec for n in names],
                                                       self.app.gpu, tp, self.app.precision, self.engine,
                                                       contention=self.contention)
        return self._simulators[key]

    # --- a whole plan ----------------------------------------------------------------------------
    def execute(self, plan: Plan, sample, fallback=None, complete: bool = True) -> Execution:
        """Run ``plan`` on ``sample``. ``fallback(llm) -> Config`` places LLMs the plan never reaches.

        With ``complete=False`` execution stops at the end of the plan's last stage and the result carries
        the state there (``done`` LLMs, ``running_at_end`` placements): what a planner extends.
        """
        app = self.app
        remaining = {name: Remaining(np.arange(len(sample.prompts[name])), np.zeros(len(sample.prompts[name]), np.int64),
                                     sample.outputs[name].copy()) for name in app.names}
        finish = {name: np.full(len(sample.prompts[name]), INF) for name in app.names}
        done = {name: remaining[name].empty for name in app.names}
        running: dict[str, tuple[Placement, Timeline, float]] = {}  # llm -> (placement, timeline, load start)
        result = Execution(0.0)
        t = 0.0
        stages = list(plan.stages)
        used = set()
        k = 0
        while True:
            if k >= len(stages) and not complete:
                result.done = {n for n, d in done.items() if d}
                result.running_at_end = {n: v[0] for n, v in running.items()}
                counts = {n: int(r.ids.size) for n, r in remaining.items()}
                for n, (_, tl, _) in running.items():  # requests a running LLM has finished by t
                    counts[n] = int((tl.finish_s > t).sum())
                result.remaining_counts = counts
                result.makespan_s = t
                return result
            if k < len(stages):
                wanted = [p for p in stages[k].placements if not done[p.llm]]
                used |= {p.llm for p in wanted}
            elif running:
                wanted = [running[name][0] for name in running]  # after the last stage: run to completion
            else:
                leftovers = [n for n in app.topological_order() if not done[n]]
                if not leftovers or fallback is None:
                    break
                name = leftovers[0]
                result.unplanned.append(name)
                config = fallback(name)
                from scheduler.placement import allocate

                wanted = [Placement(name, config, allocate(config, set(range(app.num_gpus)), app.nvlink_groups))]
            k += 1
            if not wanted:
                continue
            wanted_by = {p.llm: p for p in wanted}
            for name in [n for n in running if n not in wanted_by]:  # LLMs this stage does not keep
                p, timeline, load_start = running.pop(name)
                self._stop(name, p, timeline, load_start, t, remaining, finish, result)
            new_running = {}
            restarted = set()
            order = app.topological_order()
            for p in sorted(wanted, key=lambda p: order.index(p.llm)):
                if p.group:
                    if p.llm not in new_running:
                        self._start_group(p, wanted, running, new_running, restarted, t, sample, remaining, finish,
                                          result)
                    continue
                prev = running.get(p.llm)
                same = prev is not None and prev[0] == p
                upstream = app.by_name[p.llm].upstream
                # a downstream LLM keeps its schedule only while its upstream is done or still running as planned
                upstream_steady = upstream is None or done[upstream] or (upstream in wanted_by and upstream not in restarted)
                if same and upstream_steady:
                    new_running[p.llm] = prev  # undisturbed
                    continue
                if prev is not None:  # stop here (keeping progress), then serve again
                    self._stop(p.llm, prev[0], prev[1], prev[2], t, remaining, finish, result)
                serve = t if same else t + self.load_time(p.llm, p.config)
                avail = self._availability(sample, p.llm, remaining[p.llm], finish, new_running)
                timeline = self.simulate(p.llm, p.config, sample, remaining[p.llm], serve, avail)
                new_running[p.llm] = (p, timeline, t)
                restarted.add(p.llm)
            running = new_running
            end = min(tl.completion_s for _, tl, _ in running.values())
            if not math.isfinite(end):
                # only LLMs waiting for an upstream that is not running: nothing can progress in this stage;
                # stop them (keeping what they finished) and go on with the next stage or the fallback
                for name, (p, timeline, load_start) in running.items():
                    self._stop(name, p, timeline, load_start, t, remaining, finish, result)
                running = {}
                continue
            first = min(running, key=lambda n: running[n][1].completion_s)
            result.first_finisher.append(first)
            result.stage_ends_s.append(end)
            t = end
            finished_now = [n for n, (_, tl, _) in running.items() if tl.completion_s <= t]
            for name in finished_now:
                p, timeline, load_start = running.pop(name)
                self._stop(name, p, timeline, load_start, t, remaining, finish, result)
                done[name] = True
        for name, (p, timeline, load_start) in running.items():
            self._stop(name, p, timeline, load_start, timeline.completion_s, remaining, finish, result)
            t = max(t, timeline.completion_s)
            done[name] = remaining[name].empty
        result.makespan_s = max([t] + [iv.end_s for iv in result.intervals]) if all(done.values()) else INF
        result.finish_s = finish
        return result

    def _start_group(self, p, wanted, running, new_running, restarted, t, sample, remaining, finish, result) -> None:
        """Keep a co-located group undisturbed, or (re)start its wanted members together on its GPUs."""
        members = [q for q in wanted if q.group == p.group and q.gpus == p.gpus]
        names = [q.llm for q in members]
        if all(n in running and running[n][0] == q for n, q in zip(names, members, strict=True)):
            for n in names:
                new_running[n] = running[n]
            return
        loads = 0.0
        for n, q in zip(names, members, strict=True):
            prev = running.get(n)
            if prev is not None:
                self._stop(n, prev[0], prev[1], prev[2], t, remaining, finish, result)
            if prev is None or prev[0] != q:
                loads += self.load_time(n, q.config)
        avail = {n: self._availability(sample, n, remaining[n], finish, new_running) for n in names}
        timelines = self.simulate_group(names, p.config, sample, remaining, t + loads, avail)
        for n, q in zip(names, members, strict=True):
            new_running[n] = (q, timelines[n], t)
            restarted.add(n)

    def _availability(self, sample, llm, remaining: Remaining, finish: dict, running: dict) -> np.ndarray:
        upstream = self.app.by_name[llm].upstream
        if upstream is None:
            return np.zeros(remaining.ids.size)
        times = finish[upstream].copy()  # finished upstream requests
        if upstream in running:
            tl = running[upstream][1]
            times[tl.remaining.ids] = tl.finish_s
        index = sample.upstream_index[llm]
        return times[index[remaining.ids]]

    def _stop(self, name, placement, timeline, load_start, t, remaining, finish, result) -> None:
        ids, times, left = timeline.cut(t)
        finish[name][ids] = times
        remaining[name] = left
        result.intervals.append(Interval(name, placement.config, placement.gpus, load_start, timeline.start_s, t))
