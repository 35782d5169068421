"""Multi-LLM offline planner: sampling then simulation (after arXiv 2503.16893), with greedy and beam search.

1. **Sampling.** Draw K sets of output lengths (and prompts) from the application's distributions.
2. **Candidates.** At a stage boundary every unfinished LLM may be left out, kept where it runs, or placed
   on g GPUs with its fastest (TP, DP) for g (from a short simulation of its requests per TP degree).
   Every combination that fits the node (GPU budget, NVLink-aligned TP groups, chain order) is a candidate
   group, ranked by *useful throughput*: Σ over its LLMs of rate(config) / rate(best config on the whole
   node) — how many whole-node-equivalents of work the group does per second — with each LLM's term
   weighted by the useful share of its residency, (W/r) / (load + W/r) for W remaining requests at rate r
   (a kept placement loads nothing). Without that weight every group that fills the node ties, and
   switching models in one at a time (paying every load in sequence) looks as good as loading them
   together.
3. **Simulation.** A candidate is judged by the makespan of a complete plan — the candidate, then a greedy
   rollout (top-ranked group at each later stage) — simulated with the engine simulator
   (:mod:`scheduler.execution`) on ``search_samples`` draws (2 by default, to keep the search fast). The
   chosen plan and the baselines are then simulated on K *other* draws: the estimate is the mean makespan
   over them, with its p10–p90 spread. Estimating on draws the search never saw avoids the winner's curse
   (a plan picked because it did well on some draws looks better on those draws than it is).
4. **Search.** ``greedy`` (the paper's): at each stage keep the best of the top-k candidates. ``beam``:
   keep the ``beam_width`` best partial plans at each stage, each expanded with its top-k candidates; the
   result is never worse than greedy's (greedy's plan is among the rollouts it evaluates). Both stop
   expanding when the search has run ``max_simulations`` engine simulations (cached ones are free) and
   return the best complete plan found. The budget is a count, not seconds, so a plan is a function of the
   application, its seed and the settings: the same on a loaded machine as on a quiet one. ``time_budget_s``
   remains as an upper bound only (a run stopped by it says so: its plan depends on the machine's speed).

Work runs in forked worker processes where more than one CPU is available (:mod:`scheduler.plan_pool`): the
LLMs' rates, each beam level's expansions, the naive and largest-first baselines beside the search, and the
estimate draws. Their effects are replayed in the serial order, so plans, estimates and simulation counts are
those of one process; only the wall time changes.

Co-location (opt-in: ``search.colocation`` in the YAML or ``Planner(colocation=True)``): a candidate may
also place two LLMs without an upstream on the *same* GPUs (each with a memory partition, iterations stretched
by the contention model of :mod:`scheduler.colocation`) — one more option per pair next to giving each LLM
its own GPUs. A pair's rates come from a short co-located simulation per TP degree; its load is both loads in
sequence. Off, candidates and results are exactly as without it.

Baselines: **naive** — LLMs one after another (chain order), each alone on all GPUs with its fastest
configuration; **largest-first** — at each stage the largest unfinished LLMs take the smallest TP that
fits, until the GPUs run out.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from scheduler.execution import Execution, Executor, Plan, Stage
from scheduler.placement import Config, Placement, allocate, holds_a_sequence, legal_configs
from scheduler.plan_candidates import CandidateRanking, PairOption
from scheduler.plan_pool import OrderedPool, merge

__all__ = ["ESTIMATE_SEED_OFFSET", "PairOption", "PlanEstimate", "PlanResult", "Planner"]

RATE_SAMPLE_REQUESTS = 250
ESTIMATE_SEED_OFFSET = 1_000  # estimate draws use seeds seed+1000…, the search's seed, seed+1


@dataclass
class PlanEstimate:
    """A complete plan and its makespan (s) on each sample."""

    plan: Plan
    makespans_s: np.ndarray

    @property
    def mean_s(self) -> float:
        return float(self.makespans_s.mean())

    @property
    def p10_s(self) -> float:
        return float(np.quantile(self.makespans_s, 0.1))

    @property
    def p90_s(self) -> float:
        return float(np.quantile(self.makespans_s, 0.9))

    def to_dict(self) -> dict:
        return {"makespan_s": self.mean_s, "p10_s": self.p10_s, "p90_s": self.p90_s,
                "per_sample_s": self.makespans_s.tolist(), "stages": self.plan.describe()}


@dataclass
class PlanResult:
    chosen: PlanEstimate
    strategy: str
    baselines: dict[str, PlanEstimate]
    search_time_s: float
    evaluations: int
    simulations: int
    execution: Execution  # the chosen plan on the first estimate draw (for the Gantt chart)
    budget_exhausted: bool = False
    notes: list[str] = field(default_factory=list)
    stopped_by: str | None = None  # "simulations" (deterministic), "time" (machine-dependent) or None (finished)
    search_simulations: int = 0

    def to_dict(self) -> dict:
        out = {"strategy": self.strategy, "chosen": self.chosen.to_dict(),
               "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
               "speedup": {k: v.mean_s / self.chosen.mean_s for k, v in self.baselines.items()},
               "search_time_s": self.search_time_s, "evaluations": self.evaluations, "simulations": self.simulations,
               "search_simulations": self.search_simulations, "budget_exhausted": self.budget_exhausted,
               "stopped_by": self.stopped_by}
        return out


class Planner(CandidateRanking):
    """Plans an :class:`~scheduler.app.Application` on its node (see the module docstring).

    Parameters
    ----------
    app : Application
    predictor : predictor.Predictor
    samples, seed, strategy, top_k, beam_width, max_simulations, time_budget_s, colocation : optional
        Override the application's ``samples``, ``seed`` and ``search`` settings (``max_simulations``: the
        search's budget in engine simulations; ``time_budget_s``: an upper bound in seconds; ``colocation``:
        also consider pairs of LLMs sharing the same GPUs).
    workers : int, optional
        Processes for independent simulations (:mod:`scheduler.plan_pool`; results are identical whatever the
        number). Default: the CPUs available to this process (:func:`predictor.cpus.available_cpus`).
    """

    def __init__(self, app, predictor, *, samples: int | None = None, seed: int | None = None,
                 strategy: str | None = None, top_k: int | None = None, beam_width: int | None = None,
                 time_budget_s: float | None = None, search_samples: int = 2, colocation: bool | None = None,
                 max_simulations: int | None = None, workers: int | None = None):
        from predictor.cpus import available_cpus

        search = app.spec.search
        self.app = app
        self.predictor = predictor
        self.samples_k = samples or app.spec.samples
        self.seed = app.spec.seed if seed is None else seed
        self.strategy = strategy or search.strategy
        self.top_k = top_k or search.top_k
        self.beam_width = beam_width or search.beam_width
        self.time_budget_s = time_budget_s or search.time_budget_s
        self.max_simulations = max_simulations or search.max_simulations
        self.colocation = search.colocation if colocation is None else bool(colocation)
        self.executor = Executor(app, predictor, app.spec.engine)
        self.evaluations = 0
        self.search_samples = max(1, search_samples)
        self._states: dict = {}
        self._bound: tuple[int, float] | None = None  # (simulation count, perf_counter deadline) of the search
        self.stopped_by: str | None = None
        self.pool = OrderedPool(self, available_cpus() if workers is None else workers)
        self._recorder = None  # records a pool work item's effects in a worker (scheduler.plan_pool)
        self._segments: list = []  # effects of the current work item's finished segments
        self._seen: set = set()  # complete plans the beam search has evaluated
        self._background = None  # the baselines' work beside the search (scheduler.plan_pool.Background)
        self._serial_search = False  # a search level runs in this process (other work has the CPUs)

    # --- preparation ------------------------------------------------------------------------------
    def _prepare(self) -> None:
        app = self.app
        self._candidates_memo = {}  # candidates depend on what is prepared here (plan_candidates)
        self.search_draws = [app.sample(self.seed + k) for k in range(self.search_samples)]
        self.samples = [app.sample(self.seed + ESTIMATE_SEED_OFFSET + k) for k in range(self.samples_k)]
        self.planning = self.search_draws[0]
        groups = [len(g) for g in app.nvlink_groups]
        self.configs = {}
        for name in app.names:
            llm = app.by_name[name]
            configs = legal_configs(llm.spec, app.gpu, app.precision, llm.max_model_len, self.executor.engine,
                                    app.num_gpus, groups)
            if not configs:
                from predictor.errors import InputError

                raise InputError(f"app: model {name} ({llm.spec.name}) does not fit on {app.num_gpus}× {app.gpu.name} "
                                 f"in any TP, EP or PP configuration")
            self.configs[name] = configs
        for name in app.names:  # every replica's engine (and predictor tables) built here, shared with the workers
            for replica in sorted({c.replica for c in self.configs[name]}):
                self.executor._simulator(name, replica.layout)
        rates = self._merged(self.pool.map(self._rates, [(name,) for name in app.names]))
        self.rates = dict(zip(app.names, rates, strict=True))
        self.best_for_gpus = {}
        for name in app.names:
            best = {}
            for c in self.configs[name]:
                if c.gpus not in best or self.rates[name][c] > self.rates[name][best[c.gpus]]:
                    best[c.gpus] = c
            self.best_for_gpus[name] = best
        self.full_rate = {name: max(self.rates[name].values()) for name in app.names}
        self.pair_rates = self._pair_rates() if self.colocation else {}

    def _pair_rates(self) -> dict[tuple[str, str], dict[Config, tuple[float, float]]]:
        """Requests/s of each member of every co-locatable pair of root LLMs, per configuration."""
        from predictor.errors import InputError
        from scheduler.colocation import partition_memory
        from scheduler.execution import Remaining

        app = self.app
        roots = [n for n in app.names if app.by_name[n].upstream is None]
        out = {}
        for i, a in enumerate(roots):
            for b in roots[i + 1:]:
                # co-location shares plain-TP replicas only
                tps = sorted({c.tp for c in self.configs[a] if c.layout == c.tp}
                             & {c.tp for c in self.configs[b] if c.layout == c.tp})
                rates = {}
                for tp in tps:
                    try:
                        plans = partition_memory([app.by_name[a].spec, app.by_name[b].spec], app.gpu, tp,
                                                 app.precision,
                                                 max_num_batched_tokens=self.executor.engine.max_num_batched_tokens,
                                                 max_num_seqs=self.executor.engine.max_num_seqs)
                    except InputError:
                        continue
                    if not all(holds_a_sequence(plan, app.by_name[n].spec, tp, app.precision,
                                                app.by_name[n].max_model_len)
                               for plan, n in zip(plans, (a, b), strict=True)):
                        continue  # no room for one sequence (tokens and per-sequence state)
                    rem, zeros = {}, {}
                    for n in (a, b):
                        ids = np.arange(min(len(self.planning.prompts[n]), RATE_SAMPLE_REQUESTS))
                        rem[n] = Remaining(ids, np.zeros(ids.size, np.int64), self.planning.outputs[n][ids].copy())
                        zeros[n] = np.zeros(ids.size)
                    tls = self.executor.simulate_group([a, b], Config(tp, 1), self.planning, rem, 0.0, zeros)
                    per = tuple(rem[n].ids.size / max(tls[n].completion_s, 1e-9) for n in (a, b))
                    for c in self.configs[a]:
                        if c.replica == Config(tp, 1):
                            rates[c] = (per[0] * c.dp, per[1] * c.dp)
                if rates:
                    out[(a, b)] = rates
        return out

    def _rates(self, name: str) -> dict[Config, float]:
        """Requests/s of each configuration on (a slice of) the planning sample's requests, offline."""
        from scheduler.execution import Remaining

        n = len(self.planning.prompts[name])
        ids = np.arange(min(n, RATE_SAMPLE_REQUESTS))
        rem = Remaining(ids, np.zeros(ids.size, np.int64), self.planning.outputs[name][ids].copy())
        per_replica = {}
        for replica in sorted({c.replica for c in self.configs[name]}):
            tl = self.executor.simulate(name, replica, self.planning, rem, 0.0, np.zeros(ids.size))
            per_replica[replica] = ids.size / max(tl.completion_s, 1e-9)
        return {c: per_replica[c.replica] * c.dp for c in self.configs[name]}

    def fastest_config(self, name: str) -> Config:
        """The LLM's fastest configuration using at most all GPUs."""
        return max(self.configs[name], key=lambda c: self.rates[name][c])

    # --- state and candidates ------------------------------------------------------------------------
    def _state(self, stages: tuple[Stage, ...]) -> tuple[set[str], dict[str, Placement], dict[str, int]]:
        """(finished LLMs, placements still running, requests left per LLM) after ``stages`` on the planning sample."""
        if not stages:
            return set(), {}, {n: len(self.planning.prompts[n]) for n in self.app.names}
        if stages not in self._states:
            ex = self.executor.execute(Plan(stages), self.planning, complete=False)
            self._states[stages] = (ex.done, ex.running_at_end, ex.remaining_counts)
        return self._states[stages]

    def rollout(self, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
        """Complete ``stages`` greedily (top-ranked candidate at every later stage)."""
        stages = tuple(stages)
        while True:
            done, running, left = self._state(stages)
            if len(done) == len(self.app.names):
                return stages
            nxt = self.candidates(done, running, 1, left)
            if not nxt:
                return stages
            stages = stages + (nxt[0],)

    def evaluate(self, plan: Plan, full: bool = False) -> PlanEstimate:
        """Makespan of ``plan`` on the search draws (``full``: on the K estimate draws)."""
        self.evaluations += 1
        samples = self.samples if full else self.search_draws
        return PlanEstimate(plan, np.array([self._makespan(plan, s) for s in samples]))

    def _makespan(self, plan: Plan, sample) -> float:
        return self.executor.execute(plan, sample, fallback=self.fastest_config).makespan_s

    # --- strategies ------------------------------------------------------------------------------
    def naive_plan(self) -> Plan:
        """LLMs one after another (chain order), each alone on all GPUs with its fastest configuration."""
        stages = []
        for name in self.app.topological_order():
            c = self.fastest_config(name)
            stages.append(Stage((Placement(name, c, allocate(c, set(range(self.app.num_gpus)), self.app.nvlink_groups)),)))
        return Plan(tuple(stages))

    def naive(self) -> PlanEstimate:
        return self.evaluate(self.naive_plan(), full=True)

    def largest_first_plan(self) -> Plan:
        """At each stage the largest unfinished LLMs take the smallest TP that fits, until the GPUs run out."""
        stages: tuple[Stage, ...] = ()
        while True:
            done, running, _ = self._state(stages)
            if len(done) == len(self.app.names):
                break
            free = set(range(self.app.num_gpus))
            placements = []
            for p in running.values():
                placements.append(p)
                free -= set(p.gpus)
            included = set(running) | done
            order = sorted((n for n in self.app.names if n not in done and n not in running),
                           key=lambda n: (-self.app.by_name[n].spec.param_count(), self.app.topological_order().index(n)))
            progress = True
            while progress:  # repeat: placing an upstream can make its downstream models placeable
                progress = False
                for name in order:
                    up = self.app.by_name[name].upstream
                    if name in included or (up is not None and up not in included):
                        continue
                    smallest = min((c for c in self.configs[name] if c.dp == 1), key=lambda c: (c.replica_gpus, c))
                    gpus = allocate(smallest, free, self.app.nvlink_groups)
                    if gpus is not None:
                        placements.append(Placement(name, smallest, gpus))
                        free -= set(gpus)
                        included.add(name)
                        progress = True
            if not placements:
                break
            stages = stages + (Stage(tuple(placements)),)
        return Plan(stages)

    def largest_first(self) -> PlanEstimate:
        return self.evaluate(self.largest_first_plan(), full=True)

    def _spent(self) -> bool:
        """Whether the search's budget is spent (simulations first, then the seconds bound); records which."""
        if self._bound is None:
            return False
        last, deadline = self._bound
        if self.executor.simulations >= last:
            self.stopped_by = "simulations"
        elif time.perf_counter() > deadline:
            self.stopped_by = "time"
        return self.stopped_by is not None

    def _search_processes(self) -> int:
        """Workers for a search level: the CPUs, less one while the baselines' worker runs (their items share
        much of their work, which a pool repeats in each worker: a busy CPU is better spent on the baselines)."""
        if self._serial_search:
            return 1
        busy = self._background is not None and self._background.busy()
        return self.pool.workers - busy

    def _segment(self) -> None:
        """End a segment of the current pool work item here (see :mod:`scheduler.plan_pool`)."""
        self._segments.append(self._recorder.cut() if self._recorder is not None else None)

    def _expand(self, stages: tuple[Stage, ...], stage: Stage) -> tuple[tuple[Stage, ...], PlanEstimate | None]:
        """Pool work item: roll ``stages + (stage,)`` out (one segment), then evaluate the complete plan unless the
        beam has seen it (None)."""
        full = self.rollout(stages + (stage,))
        self._segment()
        return full, (None if full in self._seen else self.evaluate(Plan(full)))

    def greedy(self) -> tuple[PlanEstimate, bool]:
        """Greedy search (bounded by the budget while :meth:`run` searches, unbounded as a baseline)."""
        stages: tuple[Stage, ...] = ()
        best: PlanEstimate | None = None
        self._seen = set()
        while True:
            done, running, left = self._state(stages)
            if len(done) == len(self.app.names):
                break
            options = self.candidates(done, running, self.top_k, left)
            if not options:
                break
            scored = []
            with closing(self.pool.map(self._expand, [(stages, stage) for stage in options],
                                       self._search_processes())) as results:
                for stage, ((_, est), segments) in zip(options, results, strict=True):
                    for effects in segments:
                        merge(self, effects)
                    scored.append((est.mean_s, stage, est))
                    if best is None or est.mean_s < best.mean_s:
                        best = est
                    if self._spent():
                        return best, True
            stages = stages + (min(scored, key=lambda x: x[0])[1],)
        final = self.evaluate(Plan(stages))
        return (final if best is None or final.mean_s <= best.mean_s else best), False

    def beam(self) -> tuple[PlanEstimate, bool]:
        """Beam search within the budget (each level's expansions as pool work items, replayed in order)."""
        beams: list[tuple[float, tuple[Stage, ...]]] = [(0.0, ())]
        best: PlanEstimate | None = None
        seen = self._seen = set()
        while beams:
            expanded = []
            items = []
            for _, stages in beams:
                done, running, left = self._state(stages)  # a hit: the rollout that made this beam computed it
                if len(done) == len(self.app.names):
                    continue
                items += [(stages, stage) for stage in self.candidates(done, running, self.top_k, left)]
            with closing(self.pool.map(self._expand, items, self._search_processes())) as results:
                for (stages, stage), ((full, est), (rolled, evaluated)) in zip(items, results, strict=True):
                    merge(self, rolled)
                    if full in seen:
                        continue  # (a worker may have evaluated it again: dropped, its keys are all here)
                    seen.add(full)
                    merge(self, evaluated)
                    expanded.append((est.mean_s, stages + (stage,)))
                    if best is None or est.mean_s < best.mean_s:
                        best = est
                    if self._spent():
                        return best, True
            expanded.sort(key=lambda x: x[0])
            beams = expanded[: self.beam_width]
        return best, False

    # --- the estimate phase --------------------------------------------------------------------------
    def _work_item(self, kind: str, plan: Plan | None = None, k: int = 0):
        """One pool work item: the greedy baseline's plan, the largest-first plan with its makespans on the K
        estimate draws, or ``plan``'s makespan on estimate draw ``k``."""
        if kind == "greedy":
            return self.greedy()[0].plan
        if kind == "largest_first":
            plan = self.largest_first_plan()
            return plan, [self._makespan(plan, s) for s in self.samples]
        return self._makespan(plan, self.samples[k])

    def _merged(self, results) -> list:
        values = []
        for value, segments in results:
            for effects in segments:
                merge(self, effects)
            values.append(value)
        return values

    def _start_baselines(self):
        """Start what the baselines need that the search cannot share (naive draws, the largest-first plan and
        draws) in a worker beside the search; merged after it (:meth:`_estimates`), so the search is unchanged."""
        items = [("largest_first",)] + [("draw", self.naive_plan(), k) for k in range(len(self.samples))]
        return self.pool.start(self._work_item, items)

    def _estimates(self, chosen: Plan, background) -> tuple[PlanEstimate, dict[str, PlanEstimate]]:
        """The chosen plan and the baselines (``background``: from :meth:`_start_baselines`, or None for none) on
        the K estimate draws, each distinct plan simulated once. The chosen plan's draws start at once in workers;
        the greedy search runs here beside them (after the baselines' worker is merged: its rollouts are mostly the
        search's and the baselines', already known), then the greedy plan's draws start too if it is new. The
        values are those of doing it all in order in one process."""
        k = len(self.samples)
        naive = self.naive_plan() if background is not None else None
        draws = [] if chosen == naive else [("draw", chosen, j) for j in range(k)]
        first = self.pool.start(self._work_item, draws, self.pool.workers)
        plans = {"chosen": chosen}
        spans: dict[Plan, list[float]] = {}
        if background is not None:
            (largest, largest_spans), *naive_spans = self._merged(background.results())
            plans.update(naive=naive, largest_first=largest)
            spans[naive] = naive_spans
            spans.setdefault(largest, largest_spans)
            if self.strategy != "greedy":
                self._serial_search = True  # the draws' workers have the CPUs
                try:
                    plans["greedy"] = self.greedy()[0].plan
                finally:
                    self._serial_search = False
        todo = [plan for plan in dict.fromkeys(plans.values()) if plan not in spans and plan != chosen]
        second = self.pool.start(self._work_item, [("draw", p, j) for p in todo for j in range(k)], self.pool.workers)
        if draws:
            spans.setdefault(chosen, self._merged(first.results()))
        values = iter(self._merged(second.results()))
        for plan in todo:
            spans[plan] = [next(values) for _ in range(k)]
        self.evaluations += len(plans)
        out = {name: PlanEstimate(plan, np.array(spans[plan])) for name, plan in plans.items()}
        return out.pop("chosen"), {name: out[name] for name in ("naive", "largest_first", "greedy") if name in out}

    def run(self, baselines: bool = True) -> PlanResult:
        """Search, evaluate the baselines, and return the chosen plan with its estimate."""
        t0 = time.perf_counter()
        self._prepare()
        background = self._background = self._start_baselines() if baselines else None
        first = self.executor.simulations
        self._bound, self.stopped_by = (first + self.max_simulations, t0 + self.time_budget_s), None
        try:
            chosen, exhausted = self.greedy() if self.strategy == "greedy" else self.beam()
        finally:
            self._bound = None
        search_time = time.perf_counter() - t0
        search_simulations = self.executor.simulations - first
        chosen, result_baselines = self._estimates(chosen.plan, background)
        if "greedy" in result_baselines and result_baselines["greedy"].mean_s < chosen.mean_s:
            chosen = result_baselines["greedy"]  # rescored on all K samples
        execution = self.executor.execute(chosen.plan, self.samples[0], fallback=self.fastest_config)
        return PlanResult(chosen, self.strategy, result_baselines, search_time, self.evaluations,
                          self.executor.simulations, execution, exhausted, stopped_by=self.stopped_by,
                          search_simulations=search_simulations)
