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

import heapq
import time
from dataclasses import dataclass, field

import numpy as np

from scheduler.execution import Execution, Executor, Plan, Stage
from scheduler.placement import Config, Placement, allocate, legal_configs

RATE_SAMPLE_REQUESTS = 250


@dataclass(frozen=True)
class PairOption:
    """Candidate option: the LLM co-located with ``partner`` on one set of GPUs at ``config``."""

    partner: str
    config: Config
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


class Planner:
    """Plans an :class:`~scheduler.app.Application` on its node (see the module docstring).

    Parameters
    ----------
    app : Application
    predictor : predictor.Predictor
    samples, seed, strategy, top_k, beam_width, max_simulations, time_budget_s, colocation : optional
        Override the application's ``samples``, ``seed`` and ``search`` settings (``max_simulations``: the
        search's budget in engine simulations; ``time_budget_s``: an upper bound in seconds; ``colocation``:
        also consider pairs of LLMs sharing the same GPUs).
    """

    def __init__(self, app, predictor, *, samples: int | None = None, seed: int | None = None,
                 strategy: str | None = None, top_k: int | None = None, beam_width: int | None = None,
                 time_budget_s: float | None = None, search_samples: int = 2, colocation: bool | None = None,
                 max_simulations: int | None = None):
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

    # --- preparation ------------------------------------------------------------------------------
    def _prepare(self) -> None:
        app = self.app
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
        self.rates = {name: self._rates(name) for name in app.names}
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
                    if any(plan.max_tokens < min(app.by_name[n].max_model_len, 2048) for plan, n in zip(plans, (a, b), strict=True)):
                        continue
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

    def _useful(self, name: str, config: Config, left: int, loads: bool) -> float:
        rate = self.rates[name][config]
        serve = left / rate
        load = self.executor.load_time(name, config) if loads else 0.0
        return rate / self.full_rate[name] * serve / (load + serve) if serve > 0 else 0.0

    def candidates(self, done: set[str], running: dict[str, Placement], k: int,
                   left: dict[str, int] | None = None) -> list[Stage]:
        """The ``k`` candidate groups with the highest useful throughput (see the module docstring)."""
        app = self.app
        left = left or {n: len(self.planning.prompts[n]) for n in app.names}
        self._current = (done, running, left)
        names = [n for n in app.topological_order() if n not in done]
        options: dict[str, list[tuple[float, object]]] = {}
        for name in names:
            opts = []
            if name in running:
                opts.append((self._useful(name, running[name].config, left[name], False), running[name]))
            for g, c in self.best_for_gpus[name].items():
                if name in running and running[name].config == c:
                    continue
                opts.append((self._useful(name, c, left[name], True), c))
            options[name] = opts
        taken_by_pair: dict[str, str] = {}
        if self.colocation:
            self._pair_options(names, running, left, options, taken_by_pair)
        heap: list = []
        counter = 0
        gpus_total = app.num_gpus

        def dfs(i: int, used: int, score: float, chosen: list, included: set):
            nonlocal counter
            if i < len(names) and names[i] in included:
                dfs(i + 1, used, score, chosen, included)  # placed already, as a co-located partner
                return
            if i == len(names):
                if chosen:
                    counter += 1
                    item = (score, counter, list(chosen))
                    if len(heap) < 4 * k:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
                return
            name = names[i]
            dfs(i + 1, used, score, chosen, included)  # leave it out
            upstream = app.by_name[name].upstream
            if upstream is not None and upstream not in done and upstream not in included:
                return
            for value, opt in options[name]:
                if isinstance(opt, Placement):
                    g = opt.config.gpus
                    partners = [q.llm for q in running.values() if opt.group and q.group == opt.group
                                and q.gpus == opt.gpus and q.llm != name and q.llm in names]
                elif isinstance(opt, PairOption):
                    g = opt.config.gpus
                    partners = [opt.partner]
                else:
                    g = opt.gpus
                    partners = []
                if any(p in included for p in partners):
                    continue
                if used + g <= gpus_total:
                    chosen.append((name, opt))
                    included.update([name, *partners])
                    dfs(i + 1, used + g, score + value, chosen, included)
                    included.difference_update([name, *partners])
                    chosen.pop()

        dfs(0, 0, 0.0, [], set())
        stages = []
        for _, _, chosen in sorted(heap, reverse=True):
            stage = self._allocate(chosen)
            if stage is not None:
                stages.append(stage)
            if len(stages) == k:
                break
        return stages

    def _pair_options(self, names, running, left, options, taken_by_pair) -> None:
        """Add co-location options (the pair as one option of its first member; a running group kept whole)."""
        for name in names:
            p = running.get(name)
            if p is not None and p.group:  # a running co-located group: its first live member keeps it
                members = [q for q in running.values() if q.group == p.group and q.gpus == p.gpus and q.llm in names]
                if members and members[0].llm == name:
                    value = sum(self._useful_pair(q.llm, q.group, q.config, left[q.llm], False) for q in members)
                    options[name] = [(v, o) for v, o in options[name] if o is not p] + [(value, p)]
                else:
                    options[name] = [(v, o) for v, o in options[name] if o is not p]
        for (a, b), rates in self.pair_rates.items():
            if a not in names or b not in names:
                continue
            best: dict[int, tuple[float, Config]] = {}
            for c in rates:
                value = (self._useful_pair(a, (a, b), c, left[a], True)
                         + self._useful_pair(b, (a, b), c, left[b], True))
                if c.gpus not in best or value > best[c.gpus][0]:
                    best[c.gpus] = (value, c)
            first = a if names.index(a) < names.index(b) else b
            partner = b if first == a else a
            options[first] = options[first] + [(v, PairOption(partner, c)) for v, c in best.values()]

    def _useful_pair(self, name: str, group: tuple[str, ...], config: Config, left: int, loads: bool) -> float:
        """Useful throughput of ``name`` co-located in ``group`` (both loads charged to each member's residency)."""
        a, b = group
        rate = self.pair_rates[(a, b)][config][0 if name == a else 1]
        serve = left / rate
        load = (self.executor.load_time(a, config) + self.executor.load_time(b, config)) if loads else 0.0
        return rate / self.full_rate[name] * serve / (load + serve) if serve > 0 else 0.0

    def _allocate(self, chosen: list) -> Stage | None:
        free = set(range(self.app.num_gpus))
        placements = []
        for name, opt in chosen:  # running placements keep their GPUs
            if isinstance(opt, Placement):
                if not set(opt.gpus) <= free:
                    return None
                free -= set(opt.gpus)
                placements.append(opt)
                if opt.group:  # its co-located partners still running keep them too
                    done, running, _ = self._current
                    placements += [q for q in running.values() if q.group == opt.group and q.gpus == opt.gpus
                                   and q.llm != name and q.llm not in done]
        fresh = [x for x in chosen if not isinstance(x[1], Placement)]
        for name, opt in sorted(fresh, key=lambda x: -(x[1].config if isinstance(x[1], PairOption) else x[1]).replica_gpus):
            config = opt.config if isinstance(opt, PairOption) else opt
            gpus = allocate(config, free, self.app.nvlink_groups)
            if gpus is None:
                return None
            free -= set(gpus)
            if isinstance(opt, PairOption):
                group = tuple(sorted((name, opt.partner), key=self.app.names.index))
                placements += [Placement(name, config, gpus, group), Placement(opt.partner, config, gpus, group)]
            else:
                placements.append(Placement(name, opt, gpus))
        return Stage(tuple(placements))

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
        spans = [self.executor.execute(plan, s, fallback=self.fastest_config).makespan_s for s in samples]
        return PlanEstimate(plan, np.array(spans))

    # --- strategies ------------------------------------------------------------------------------
    def naive(self) -> PlanEstimate:
        stages = []
        for name in self.app.topological_order():
            c = self.fastest_config(name)
            stages.append(Stage((Placement(name, c, allocate(c, set(range(self.app.num_gpus)), self.app.nvlink_groups)),)))
        return self.evaluate(Plan(tuple(stages)), full=True)

    def largest_first(self) -> PlanEstimate:
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
        return self.evaluate(Plan(stages), full=True)

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

    def greedy(self) -> tuple[PlanEstimate, bool]:
        """Greedy search (bounded by the budget while :meth:`run` searches, unbounded as a baseline)."""
        stages: tuple[Stage, ...] = ()
        best: PlanEstimate | None = None
        while True:
            done, running, left = self._state(stages)
            if len(done) == len(self.app.names):
                break
            options = self.candidates(done, running, self.top_k, left)
            if not options:
                break
            scored = []
            for stage in options:
                est = self.evaluate(Plan(self.rollout(stages + (stage,))))
                scored.append((est.mean_s, stage, est))
                if best is None or est.mean_s < best.mean_s:
                    best = est
                if self._spent():
                    return best, True
            stages = stages + (min(scored, key=lambda x: x[0])[1],)
        final = self.evaluate(Plan(stages))
        return (final if best is None or final.mean_s <= best.mean_s else best), False

    def beam(self) -> tuple[PlanEstimate, bool]:
        """Beam search within the budget."""
        beams: list[tuple[float, tuple[Stage, ...]]] = [(0.0, ())]
        best: PlanEstimate | None = None
        seen: set = set()
        while beams:
            expanded = []
            for _, stages in beams:
                done, running, left = self._state(stages)
                if len(done) == len(self.app.names):
                    continue
                for stage in self.candidates(done, running, self.top_k, left):
                    prefix = stages + (stage,)
                    full = self.rollout(prefix)
                    if full in seen:
                        continue
                    seen.add(full)
                    est = self.evaluate(Plan(full))
                    expanded.append((est.mean_s, prefix))
                    if best is None or est.mean_s < best.mean_s:
                        best = est
                    if self._spent():
                        return best, True
            expanded.sort(key=lambda x: x[0])
            beams = expanded[: self.beam_width]
        return best, False

    def run(self, baselines: bool = True) -> PlanResult:
        """Search, evaluate the baselines, and return the chosen plan with its estimate."""
        t0 = time.perf_counter()
        self._prepare()
        first = self.executor.simulations
        self._bound, self.stopped_by = (first + self.max_simulations, t0 + self.time_budget_s), None
        try:
            chosen, exhausted = self.greedy() if self.strategy == "greedy" else self.beam()
        finally:
            self._bound = None
        search_time = time.perf_counter() - t0
        search_simulations = self.executor.simulations - first
        chosen = self.evaluate(chosen.plan, full=True)
        result_baselines = {}
        if baselines:
            result_baselines["naive"] = self.naive()
            result_baselines["largest_first"] = self.largest_first()
            if self.strategy != "greedy":
                greedy, _ = self.greedy()
                result_baselines["greedy"] = self.evaluate(greedy.plan, full=True)
                if result_baselines["greedy"].mean_s < chosen.mean_s:  # rescored on all K samples
                    chosen = result_baselines["greedy"]
        execution = self.executor.execute(chosen.plan, self.samples[0], fallback=self.fastest_config)
        return PlanResult(chosen, self.strategy, result_baselines, search_time, self.evaluations,
                          self.executor.simulations, execution, exhausted, stopped_by=self.stopped_by,
                          search_simulations=search_simulations)
