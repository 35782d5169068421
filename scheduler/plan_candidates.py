"""Candidate groups of a planner stage, ranked by useful throughput (see :mod:`scheduler.planner`).

:class:`CandidateRanking` is a mixin of :class:`scheduler.planner.Planner`: it reads the planner's ``app``,
``rates``, ``full_rate``, ``best_for_gpus``, ``pair_rates``, ``colocation`` and ``executor`` (for load times).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from scheduler.execution import Stage
from scheduler.placement import Config, Placement, allocate


@dataclass(frozen=True)
class PairOption:
    """Candidate option: the LLM co-located with ``partner`` on one set of GPUs at ``config``."""

    partner: str
    config: Config


class CandidateRanking:
    """The ``k`` best candidate groups of a stage (mixin of :class:`scheduler.planner.Planner`)."""

    def _useful(self, name: str, config: Config, left: int, loads: bool) -> float:
        rate = self.rates[name][config]
        serve = left / rate
        load = self.executor.load_time(name, config) if loads else 0.0
        return rate / self.full_rate[name] * serve / (load + serve) if serve > 0 else 0.0

    def candidates(self, done: set[str], running: dict[str, Placement], k: int,
                   left: dict[str, int] | None = None) -> list[Stage]:
        """The ``k`` candidate groups with the highest useful throughput (see the module docstring).

        A function of its arguments once the planner is prepared (rates, configurations and load times fixed), so
        it is remembered: the beam's rollouts and levels ask for the same states again."""
        app = self.app
        left = left or {n: len(self.planning.prompts[n]) for n in app.names}
        key = (frozenset(done), tuple(running.items()), k, tuple(left.items()))
        memo = self._candidates_memo  # set by Planner._prepare
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._candidates(done, running, k, left)
        return list(found)

    def _candidates(self, done: set[str], running: dict[str, Placement], k: int, left: dict[str, int]) -> list[Stage]:
        app = self.app
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
        heap = _best_groups(names, [self._option_moves(name, options[name], running, names) for name in names],
                            [app.by_name[n].upstream for n in names], done, app.num_gpus, 4 * k)
        stages = []
        for _, _, chosen in sorted(heap, reverse=True):
            stage = self._allocate(chosen)
            if stage is not None:
                stages.append(stage)
            if len(stages) == k:
                break
        return stages

    @staticmethod
    def _option_moves(name: str, options: list, running: dict[str, Placement], names: list[str]) -> list[tuple]:
        """(value, option, GPUs it takes, LLMs it places besides ``name``) for each of ``name``'s options."""
        moves = []
        for value, opt in options:
            if isinstance(opt, Placement):
                partners = [q.llm for q in running.values() if opt.group and q.group == opt.group
                            and q.gpus == opt.gpus and q.llm != name and q.llm in names]
                moves.append((value, opt, opt.config.gpus, partners))
            elif isinstance(opt, PairOption):
                moves.append((value, opt, opt.config.gpus, [opt.partner]))
            else:
                moves.append((value, opt, opt.gpus, []))
        return moves

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


def _best_groups(names: list[str], moves: list[list[tuple]], upstreams: list, done: set[str], gpus_total: int,
                 keep: int) -> list[tuple[float, int, list]]:
    """The ``keep`` best groups as a heap of (score, visit order, [(LLM, option)]), by depth-first search.

    Each LLM in turn is left out, then placed with each of its ``moves`` (value, option, GPUs, partners placed
    with it) that fits the GPUs left, its upstream done or in the group. Groups rank by score (Σ values), ties by
    visit order (later first). A subtree is skipped when even its best completion (the score so far plus every
    later LLM's best value) falls short of the worst group kept once ``keep`` are kept: such a group could never
    enter the heap (its threshold only rises), and the visit order of the others is unchanged, so the result is
    that of the exhaustive search.
    """
    n = len(names)
    best_after = [0.0] * (n + 1)  # Σ over LLMs i.. of their best value (values are >= 0): an upper bound
    for i in range(n - 1, -1, -1):
        best_after[i] = best_after[i + 1] + max([0.0] + [m[0] for m in moves[i]])
    heap: list = []
    counter = 0

    def dfs(i: int, used: int, score: float, chosen: list, included: set):
        nonlocal counter
        if len(heap) == keep:
            bound = score + best_after[i]
            if bound + 1e-9 * max(1.0, abs(bound)) < heap[0][0]:
                return
        if i < n and names[i] in included:
            dfs(i + 1, used, score, chosen, included)  # placed already, as a co-located partner
            return
        if i == n:
            if chosen:
                counter += 1
                item = (score, counter, list(chosen))
                if len(heap) < keep:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
            return
        name = names[i]
        dfs(i + 1, used, score, chosen, included)  # leave it out
        upstream = upstreams[i]
        if upstream is not None and upstream not in done and upstream not in included:
            return
        for value, opt, g, partners in moves[i]:
            if used + g > gpus_total or any(p in included for p in partners):
                continue
            chosen.append((name, opt))
            included.add(name)
            included.update(partners)
            dfs(i + 1, used + g, score + value, chosen, included)
            included.discard(name)
            included.difference_update(partners)
            chosen.pop()

    dfs(0, 0, 0.0, [], set())
    return heap
