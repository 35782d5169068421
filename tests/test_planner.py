"""The multi-LLM planner: plan search, execution semantics, memory, load time and the ``plan`` command
(application specs and sampling: :mod:`tests.test_planner_specs`).

Small applications (tens of prompts, 7B–13B models, 2–4 GPUs) keep the module fast; the roofline predictor is
used wherever exact, deterministic arithmetic helps, the shipped hybrid predictor in the command-line test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from predictor.gpus import get_gpu
from predictor.memory import plan_memory, weights_bytes_per_gpu
from predictor.models import get_model
from predictor.precision import parse_dtype
from scheduler.app import Application
from scheduler.execution import INF, Executor, Plan, Stage
from scheduler.placement import (LOAD_BANDWIDTH_BYTES_PER_S, LOAD_CONSTANT_S, Config, Placement, allocate,
                                 fits, legal_configs, load_time_s)
from scheduler.planner import Planner
from tests.planner_helpers import ensemble_spec

FP16 = parse_dtype("fp16")


# --- helpers ------------------------------------------------------------------------------------------
def chain_spec(count: int = 30, samples: int = 2) -> dict:
    """summarizer (llama-2-7b) -> evaluator (llama-2-7b) on 2 GPUs, log-normal lengths (samples differ)."""
    return {"name": "tiny-chain", "topology": "chain", "node": {"count": 2},
            "prompts": {"lognormal": True, "mean": 400, "count": count},
            "models": [{"name": "summarizer", "model": "llama-2-7b", "output_lengths": {"lognormal": True, "mean": 200}},
                       {"name": "evaluator", "model": "llama-2-7b", "upstream": "summarizer",
                        "prompt_template_tokens": 64, "output_lengths": {"lognormal": True, "mean": 50}}],
            "samples": samples, "seed": 0}


def four_gpu_spec(groups) -> dict:
    """llama-2-70b (needs TP >= 2 on an A100-80GB) with two 7B models on 4 GPUs."""
    return {"name": "four", "topology": "ensemble", "node": {"count": 4, "nvlink_groups": groups},
            "prompts": {"lognormal": True, "mean": 300, "count": 30},
            "models": [{"name": "big", "model": "llama-2-70b", "output_lengths": {"lognormal": True, "mean": 150}},
                       {"name": "a", "model": "llama-2-7b", "output_lengths": {"lognormal": True, "mean": 200}},
                       {"name": "b", "model": "mistral-7b", "output_lengths": {"lognormal": True, "mean": 250}}],
            "samples": 2, "seed": 0}


def planner_for(spec: dict, predictor, **kwargs) -> Planner:
    return Planner(Application.from_dict(spec), predictor, **kwargs)



def check_stage_gpus(app, plan: Plan) -> None:
    """Disjoint GPUs in every stage, inside the node, each TP replica an aligned block of one NVLink group."""
    for stage in plan.stages:
        used: set[int] = set()
        for p in stage.placements:
            assert len(p.gpus) == p.config.gpus == p.config.tp * p.config.dp, p
            assert len(set(p.gpus)) == len(p.gpus), p
            assert all(0 <= g < app.num_gpus for g in p.gpus), p
            assert not used & set(p.gpus), (stage, p)
            used |= set(p.gpus)
            for r in range(p.config.dp):
                replica = list(p.gpus[r * p.config.tp:(r + 1) * p.config.tp])
                check_replica(app, replica, p)


def check_replica(app, replica: list[int], what) -> None:
    tp = len(replica)
    group = next((sorted(g) for g in app.nvlink_groups if replica[0] in g), None)
    assert group is not None and set(replica) <= set(group), (what, replica, app.nvlink_groups)
    start = group.index(sorted(replica)[0])
    assert start % tp == 0 and group[start:start + tp] == sorted(replica), (what, replica, group)


def check_intervals(execution, num_gpus: int, tol: float = 1e-9) -> None:
    """No two LLMs occupy one GPU at the same time (loading counts as occupying)."""
    per_gpu: dict[int, list] = {}
    for iv in execution.intervals:
        assert iv.load_s <= iv.serve_s + tol and iv.load_s <= iv.end_s + tol, iv
        for g in iv.gpus:
            assert 0 <= g < num_gpus, iv
            per_gpu.setdefault(g, []).append(iv)
    for g, ivs in per_gpu.items():
        for i, x in enumerate(ivs):
            for y in ivs[i + 1:]:
                if x.llm == y.llm:
                    continue
                overlap = min(x.end_s, y.end_s) - max(x.load_s, y.load_s)
                assert overlap <= tol, (g, x, y)


def check_memory(app, plan: Plan, engine) -> None:
    for stage in plan.stages:
        for p in stage.placements:
            model = app.by_name[p.llm].spec
            memory = plan_memory(model, app.gpu, p.config.tp, app.precision,
                                 max_num_batched_tokens=engine.max_num_batched_tokens, max_num_seqs=engine.max_num_seqs)
            assert memory.weights_bytes + memory.activation_bytes + memory.overhead_bytes < memory.usable_bytes
            assert memory.max_tokens >= min(app.by_name[p.llm].max_model_len, 2048), (p, memory.max_tokens)
            assert fits(model, app.gpu, p.config.tp, app.precision, app.by_name[p.llm].max_model_len, engine)


def check_result(planner: Planner, result) -> None:
    """GPU, time and memory invariants for the chosen plan and every baseline, on every sample."""
    app = planner.app
    for est in [result.chosen, *result.baselines.values()]:
        check_stage_gpus(app, est.plan)
        check_memory(app, est.plan, planner.executor.engine)
        for sample in planner.samples:
            execution = planner.executor.execute(est.plan, sample, fallback=planner.fastest_config)
            assert math.isfinite(execution.makespan_s)
            check_intervals(execution, app.num_gpus)
            for iv in execution.intervals:  # placements made at run time (fallback) obey the same rules
                for r in range(iv.config.dp):
                    check_replica(app, list(iv.gpus[r * iv.config.tp:(r + 1) * iv.config.tp]), iv)
    check_intervals(result.execution, app.num_gpus)


# --- module-scoped planner runs (shared by several tests) -------------------------------------------
@pytest.fixture(scope="module")
def chain_run(roofline):
    planner = planner_for(chain_spec(), roofline)
    return planner, planner.run()


@pytest.fixture(scope="module")
def estimate_run(roofline):
    spec = chain_spec(samples=3)
    planner = planner_for(spec, roofline, strategy="beam", top_k=3, beam_width=2)
    return planner, planner.run()


@pytest.fixture(scope="module", params=[[[0, 1], [2, 3]], [[0, 2], [1, 3]], None],
                ids=["groups01-23", "groups02-13", "one-group"])
def four_gpu_run(request, roofline):
    planner = planner_for(four_gpu_spec(request.param), roofline)
    return planner, planner.run()


# === 3. brute force on a tiny instance ================================================================
def hand_enumerated_plans(planner: Planner) -> dict[str, Plan]:
    """Every plan of the planner's space for two LLMs a, b on two GPUs (one NVLink group).

    Per LLM the space has its fastest configuration on 1 GPU and on 2 GPUs (``best_for_gpus``); a fresh
    placement takes the lowest free GPUs. Plans: one LLM alone (1 or 2 GPUs) then the other (1 or 2 GPUs), in
    both orders (8); both at once on one GPU each, the survivor then kept or moved to both GPUs (3).
    """
    best = planner.best_for_gpus
    one = {n: Placement(n, best[n][1], (0,)) for n in "ab"}
    two = {n: Placement(n, best[n][2], (0, 1)) for n in "ab"}
    plans = {}
    for first, second in (("a", "b"), ("b", "a")):
        for x in (one, two):
            for y in (one, two):
                key = f"{first}{x[first].config.gpus}->{second}{y[second].config.gpus}"
                plans[key] = Plan((Stage((x[first],)), Stage((y[second],))))
    both = Stage((Placement("a", best["a"][1], (0,)), Placement("b", best["b"][1], (1,))))
    plans["a|b"] = Plan((both,))
    plans["a|b->a2"] = Plan((both, Stage((two["a"],))))
    plans["a|b->b2"] = Plan((both, Stage((two["b"],))))
    return plans


BRUTE_FORCE_CASES = {"both-at-once": (40, 100, 150), "one-after-another": (60, 30, 3000),
                     "greedy-misses": (80, 50, 2000)}


@pytest.mark.parametrize("case", list(BRUTE_FORCE_CASES), ids=list(BRUTE_FORCE_CASES))
def test_beam_finds_the_brute_force_optimum(case, roofline):
    count, out_a, out_b = BRUTE_FORCE_CASES[case]
    spec = ensemble_spec(count=count, out_a=out_a, out_b=out_b)
    beam = planner_for(spec, roofline, strategy="beam", top_k=8, beam_width=8)
    result = beam.run()
    assert result.strategy == "beam" and not result.budget_exhausted

    # the first stage's candidates are exactly the hand-listed ones
    best = beam.best_for_gpus
    expected_first = {Stage((Placement("a", best["a"][1], (0,)), Placement("b", best["b"][1], (1,))))}
    for n in "ab":
        for g in (1, 2):
            expected_first.add(Stage((Placement(n, best[n][g], tuple(range(g))),)))
    assert set(beam.candidates(set(), {}, 100)) == expected_first
    assert set(best["a"]) == {1, 2}

    values = {key: beam.evaluate(plan, full=True) for key, plan in hand_enumerated_plans(beam).items()}
    for est in values.values():
        assert len(est.makespans_s) == 2 and est.makespans_s[0] == pytest.approx(est.makespans_s[1], rel=1e-12)
    optimum = min(v.mean_s for v in values.values())
    assert math.isfinite(optimum)
    assert result.chosen.mean_s == pytest.approx(optimum, rel=1e-9), (
        result.chosen.plan.describe(), sorted((v.mean_s, k) for k, v in values.items()))
    # greedy never beats beam (as a strategy of its own and as the baseline run() adds)
    greedy = planner_for(spec, roofline, strategy="greedy", top_k=8, beam_width=8).run()
    assert greedy.chosen.mean_s >= optimum * (1 - 1e-9)
    assert result.baselines["greedy"].mean_s >= result.chosen.mean_s * (1 - 1e-9)
    assert result.baselines["greedy"].mean_s == pytest.approx(greedy.chosen.mean_s, rel=1e-9)
    assert "greedy" not in greedy.baselines
    check_result(beam, result)


def test_brute_force_orders_are_symmetric_and_naive_is_in_the_space(roofline):
    planner = planner_for(ensemble_spec(), roofline)
    planner._prepare()
    plans = hand_enumerated_plans(planner)
    spans = {k: planner.evaluate(p).mean_s for k, p in plans.items()}
    # sequential plans in both orders take the same time (loads and serving simply add up)
    for key in [k for k in spans if k.startswith("a") and "->" in k and "|" not in k]:
        mirrored = "b" + key.split("->")[1][1:] + "->a" + key.split("->")[0][1:]
        assert spans[key] == pytest.approx(spans[mirrored], rel=1e-9), (key, mirrored)
    naive = planner.naive()
    assert naive.mean_s == pytest.approx(min(spans[k] for k in spans if "|" not in k), rel=1e-9)


# === 4. chains ==========================================================================================
def test_chain_dependencies_respected_by_every_plan(chain_run):
    planner, result = chain_run
    app = planner.app
    assert set(result.baselines) == {"naive", "largest_first", "greedy"}
    for est in [result.chosen, *result.baselines.values()]:
        for sample in planner.samples:
            execution = planner.executor.execute(est.plan, sample, fallback=planner.fastest_config)
            up, down = execution.finish_s["summarizer"], execution.finish_s["evaluator"]
            index = sample.upstream_index["evaluator"]
            assert np.all(np.isfinite(up)) and np.all(np.isfinite(down))
            assert np.all(down > up[index]), est.plan.describe()
            assert execution.makespan_s == pytest.approx(max(up.max(), down.max()), rel=1e-12)
            assert app.topological_order() == ["summarizer", "evaluator"]


def test_chain_concurrent_stage_pipelines(chain_run):
    """Evaluator next to the summarizer: it serves summaries as they arrive, never before."""
    planner, _ = chain_run
    s = Placement("summarizer", Config(1, 1), (0,))
    e = Placement("evaluator", Config(1, 1), (1,))
    execution = planner.executor.execute(Plan((Stage((s, e)),)), planner.planning)
    up, down = execution.finish_s["summarizer"], execution.finish_s["evaluator"]
    assert np.all(down > up)
    assert down.min() < up.max()  # pipelined: some evaluations finish before the last summary
    assert execution.first_finisher[0] == "summarizer"
    sequential = planner.executor.execute(Plan((Stage((s,)), Stage((e,)))), planner.planning)
    assert np.all(sequential.finish_s["evaluator"] > sequential.finish_s["summarizer"].max())
    assert execution.makespan_s < sequential.makespan_s


def test_chain_evaluator_first_makes_no_progress(chain_run):
    """A stage holding only an LLM whose upstream is not being served cannot progress: it is skipped (the LLM
    stops at once, having finished nothing). Without a fallback the plan then never completes (infinite
    makespan); with one, whatever the plan left is run afterwards in chain order."""
    planner, _ = chain_run
    e = Placement("evaluator", Config(1, 1), (1,))
    s = Placement("summarizer", Config(1, 2), (0, 1))
    for plan, unplanned in ((Plan((Stage((e,)),)), ["summarizer", "evaluator"]),
                            (Plan((Stage((e,)), Stage((s,)))), ["evaluator"])):
        stuck = planner.executor.execute(plan, planner.planning)
        assert stuck.makespan_s == INF
        assert np.all(np.isinf(stuck.finish_s["evaluator"]))
        rescued = planner.executor.execute(plan, planner.planning, fallback=planner.fastest_config)
        assert rescued.unplanned == unplanned
        assert math.isfinite(rescued.makespan_s)
        assert np.all(rescued.finish_s["evaluator"] > rescued.finish_s["summarizer"])
    # summarizer first, then the evaluator: finite without any fallback
    then_e = Stage((Placement("evaluator", Config(1, 2), (0, 1)),))
    ok = planner.executor.execute(Plan((Stage((s,)), then_e)), planner.planning)
    assert math.isfinite(ok.makespan_s)


def test_unplanned_llms_use_the_fallback(chain_run):
    planner, _ = chain_run
    empty = Plan(())
    assert planner.executor.execute(empty, planner.planning).makespan_s == INF
    execution = planner.executor.execute(empty, planner.planning, fallback=planner.fastest_config)
    assert execution.unplanned == ["summarizer", "evaluator"]
    assert math.isfinite(execution.makespan_s)
    up, down = execution.finish_s["summarizer"], execution.finish_s["evaluator"]
    assert np.all(down > up.max())  # one at a time, in chain order
    check_intervals(execution, planner.app.num_gpus)
    naive = planner.executor.execute(planner.naive().plan, planner.planning)
    assert execution.makespan_s == pytest.approx(naive.makespan_s, rel=1e-9)


def test_downstream_kept_while_upstream_stops_waits_for_it(roofline):
    raw = {"topology": "chain", "node": {"count": 3}, "prompts": {"fixed": 300, "count": 30},
           "models": [{"name": "x", "model": "mistral-7b", "output_lengths": {"fixed": 1}},
                      {"name": "s", "model": "llama-2-7b", "output_lengths": {"fixed": 1000}},
                      {"name": "e", "model": "llama-2-7b", "upstream": "s", "prompt_template_tokens": 64,
                       "output_lengths": {"fixed": 20}}], "samples": 1}
    planner = planner_for(raw, roofline)
    planner._prepare()
    c = Config(1, 1)
    x, s, e = Placement("x", c, (0,)), Placement("s", c, (1,)), Placement("e", c, (2,))
    # stage 1 ends when x finishes; stage 2 keeps e where it is but stops s (s runs later, by the fallback)
    execution = planner.executor.execute(Plan((Stage((x, s, e)), Stage((e,)))), planner.planning,
                                         fallback=planner.fastest_config)
    assert execution.first_finisher[0] == "x"
    assert "s" in execution.unplanned
    assert np.all(execution.finish_s["e"] > execution.finish_s["s"])


def test_planned_chain_respects_dependencies_on_every_sample(roofline):
    raw = {"topology": "chain", "node": {"count": 4}, "prompts": {"lognormal": True, "mean": 300, "count": 38},
           "models": [{"name": "m0", "model": "mistral-7b", "output_lengths": {"lognormal": True, "mean": 221.0, "sigma": 1.5}},
                      {"name": "m1", "model": "mistral-7b", "upstream": "m0",
                       "output_lengths": {"lognormal": True, "mean": 185.0, "sigma": 1.5}},
                      {"name": "m2", "model": "llama-2-13b", "output_lengths": {"lognormal": True, "mean": 189.0, "sigma": 1.5}}],
           "samples": 4, "seed": 1}
    planner = planner_for(raw, roofline, top_k=3, beam_width=2)
    result = planner.run()
    for sample in planner.samples:
        execution = planner.executor.execute(result.chosen.plan, sample, fallback=planner.fastest_config)
        up = execution.finish_s["m0"][sample.upstream_index["m1"]]
        assert np.all(execution.finish_s["m1"] > up), (sample.seed, execution.unplanned)


# === 5. GPUs never double-booked ======================================================================
def test_four_gpu_plans_respect_gpus_nvlink_and_time(four_gpu_run):
    planner, result = four_gpu_run
    assert Config(1, 1) not in planner.configs["big"]  # 70B needs TP >= 2 on an A100-80GB
    assert all(c.tp >= 2 for stage in result.chosen.plan.stages for p in stage.placements if p.llm == "big"
               for c in [p.config])
    assert set(result.baselines) == {"naive", "largest_first", "greedy"}
    check_result(planner, result)
    assert result.chosen.mean_s <= result.baselines["greedy"].mean_s * (1 + 1e-9)
    assert result.chosen.mean_s <= result.baselines["naive"].mean_s * (1 + 1e-9)


def test_chain_plans_respect_gpus_and_time(chain_run):
    check_result(*chain_run)


def test_allocate_respects_nvlink_groups():
    groups = [[0, 2], [1, 3]]
    assert allocate(Config(2, 2), set(range(4)), groups) == (0, 2, 1, 3)
    assert allocate(Config(2, 1), {0, 1, 3}, groups) == (1, 3)
    assert allocate(Config(2, 1), {0, 1}, groups) is None
    assert allocate(Config(4, 1), set(range(4)), groups) is None
    assert allocate(Config(2, 1), {1, 2, 3}, [[0, 1, 2, 3]]) == (2, 3)  # aligned: not (1, 2)
    assert allocate(Config(1, 3), {0, 3, 5}, [list(range(8))]) == (0, 3, 5)


def test_fallback_placement_respects_nvlink_groups(roofline):
    raw = four_gpu_spec([[0, 2], [1, 3]])
    raw["models"] = raw["models"][:1]
    planner = planner_for(raw, roofline)
    planner._prepare()
    execution = planner.executor.execute(Plan(()), planner.planning, fallback=lambda name: Config(2, 1))
    assert execution.unplanned == ["big"]
    for iv in execution.intervals:
        for r in range(iv.config.dp):
            check_replica(planner.app, list(iv.gpus[r * iv.config.tp:(r + 1) * iv.config.tp]), iv)


# === 6. memory ============================================================================================
def test_legal_configs_respect_memory():
    from scheduler.engine import EngineConfig

    engine = EngineConfig()
    gpu = get_gpu("a100-80gb")
    big = get_model("llama-2-70b")
    configs = legal_configs(big, gpu, FP16, big.max_position_embeddings, engine, 4, [4])
    assert configs and all(c.tp >= 2 for c in configs)
    assert Config(2, 1) in configs and Config(2, 2) in configs and Config(4, 1) in configs
    assert not fits(big, gpu, 1, FP16, big.max_position_embeddings, engine)
    small = get_model("llama-2-7b")
    configs = legal_configs(small, gpu, FP16, small.max_position_embeddings, engine, 4, [2, 2])
    assert set(configs) == {Config(1, 1), Config(1, 2), Config(1, 3), Config(1, 4), Config(2, 1), Config(2, 2)}
    for c in configs:
        plan_memory(small, gpu, c.tp, FP16)  # does not raise


def test_chosen_and_baseline_placements_fit_in_memory(four_gpu_run, chain_run):
    for planner, result in (four_gpu_run, chain_run):
        for est in [result.chosen, *result.baselines.values()]:
            check_memory(planner.app, est.plan, planner.executor.engine)


# === 7. estimates ===========================================================================================
def test_estimates_and_speedups(estimate_run):
    planner, result = estimate_run
    chosen = result.chosen
    assert planner.samples_k == 3 and len(planner.samples) == 3
    assert chosen.makespans_s.shape == (3,) and np.all(np.isfinite(chosen.makespans_s))
    assert len(set(np.round(chosen.makespans_s, 9))) > 1  # log-normal lengths: the samples differ
    assert chosen.p10_s <= chosen.mean_s <= chosen.p90_s
    assert chosen.p10_s >= chosen.makespans_s.min() and chosen.p90_s <= chosen.makespans_s.max()
    assert set(result.baselines) == {"naive", "largest_first", "greedy"}
    for est in result.baselines.values():
        assert est.makespans_s.shape == (3,)
    assert chosen.mean_s <= result.baselines["greedy"].mean_s * (1 + 1e-9)
    payload = result.to_dict()
    assert payload["strategy"] == "beam"
    assert payload["chosen"]["makespan_s"] == chosen.mean_s
    assert payload["chosen"]["per_sample_s"] == chosen.makespans_s.tolist()
    assert payload["chosen"]["stages"] == chosen.plan.describe()
    for name, est in result.baselines.items():
        assert payload["speedup"][name] == pytest.approx(est.mean_s / chosen.mean_s, rel=1e-12)
        assert payload["baselines"][name]["makespan_s"] == est.mean_s
    assert payload["evaluations"] == result.evaluations > 0
    assert result.simulations == planner.executor.simulations > 0
    # the execution returned for the Gantt chart is the chosen plan on the first sample
    assert result.execution.makespan_s == pytest.approx(chosen.makespans_s[0], rel=1e-12)
    json.dumps(payload)  # serialisable as is


def test_estimate_is_reproducible(roofline, estimate_run):
    _, first = estimate_run
    again = planner_for(chain_spec(samples=3), roofline, strategy="beam", top_k=3, beam_width=2).run()
    np.testing.assert_allclose(again.chosen.makespans_s, first.chosen.makespans_s, rtol=1e-12)
    assert again.chosen.plan == first.chosen.plan


def test_time_budget_stops_the_search(roofline):
    planner = planner_for(four_gpu_spec(None), roofline, time_budget_s=1e-9)
    result = planner.run(baselines=False)
    assert result.budget_exhausted and result.baselines == {} and result.stopped_by == "time"
    assert math.isfinite(result.chosen.mean_s)
    check_stage_gpus(planner.app, result.chosen.plan)


class _Clock:
    """A fake ``time.perf_counter`` advancing ``step_s`` per reading: a fast or a heavily loaded machine."""

    def __init__(self, step_s: float):
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


@pytest.mark.parametrize("budget", [3, 12])
def test_simulation_budget_makes_the_plan_independent_of_machine_speed(budget, roofline, monkeypatch):
    import scheduler.planner as planner_module

    runs = []
    for step_s, bound_s in ((1e-6, 1e9), (100.0, 1e9), (1e-6, 86_400.0)):  # quiet, 10^8× slower, smaller bound
        monkeypatch.setattr(planner_module.time, "perf_counter", _Clock(step_s))
        runs.append(planner_for(four_gpu_spec(None), roofline, max_simulations=budget,
                                time_budget_s=bound_s).run(baselines=False))
    first = runs[0]
    assert first.stopped_by == "simulations" and first.budget_exhausted
    # the search stops at the first evaluation that reaches the budget: at least `budget` simulations
    assert first.search_simulations >= budget
    for other in runs[1:]:
        assert other.stopped_by == "simulations"
        assert other.chosen.plan == first.chosen.plan
        assert (other.evaluations, other.search_simulations) == (first.evaluations, first.search_simulations)
        np.testing.assert_array_equal(other.chosen.makespans_s, first.chosen.makespans_s)


def test_a_larger_simulation_budget_searches_further(roofline):
    small = planner_for(four_gpu_spec(None), roofline, max_simulations=3).run(baselines=False)
    large = planner_for(four_gpu_spec(None), roofline, max_simulations=100_000).run(baselines=False)
    assert small.stopped_by == "simulations" and large.stopped_by is None and not large.budget_exhausted
    assert large.evaluations > small.evaluations and large.search_simulations > small.search_simulations


# === 8. load time ==========================================================================================
def test_load_time_measured_and_nearest_tp():
    vicuna = get_model("vicuna-13b")
    t1 = load_time_s("lmsys/vicuna-13b-v1.5", vicuna, 1, FP16)
    assert t1 == pytest.approx(29.98, abs=0.01)
    t2 = load_time_s("lmsys/vicuna-13b-v1.5", vicuna, 2, FP16)
    t4 = load_time_s("lmsys/vicuna-13b-v1.5", vicuna, 4, FP16)
    assert len({t1, t2, t4}) == 3
    assert load_time_s("lmsys/vicuna-13b-v1.5", vicuna, 8, FP16) == t4  # not measured: nearest (4)
    assert load_time_s("lmsys/vicuna-13b-v1.5", vicuna, 3, FP16) == t4  # tie between 2 and 4: the larger
    assert load_time_s("vicuna-13b", vicuna, 1, FP16) == t1  # short names and catalogue names match too
    big = get_model("llama-2-70b")
    assert load_time_s("meta-llama/Llama-2-70b-chat-hf", big, 1, FP16) == load_time_s("llama-2-70b", big, 2, FP16)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_load_time_unmeasured_model(tp):
    phi = get_model("phi-2")
    expected = weights_bytes_per_gpu(phi, tp, FP16) / LOAD_BANDWIDTH_BYTES_PER_S + LOAD_CONSTANT_S
    assert load_time_s("microsoft/phi-2", phi, tp, FP16) == pytest.approx(expected, rel=1e-12)
    assert expected > LOAD_CONSTANT_S
    if tp > 1:
        assert expected < load_time_s("microsoft/phi-2", phi, 1, FP16)


def test_executor_load_time_uses_the_entrys_model(roofline):
    raw = ensemble_spec()
    raw["models"][0].update(count=2)
    app = Application.from_dict(raw)
    executor = Executor(app, roofline, app.spec.engine)
    seven = load_time_s("llama-2-7b", get_model("llama-2-7b"), 1, FP16)
    assert executor.load_time("a-1", Config(1, 1)) == executor.load_time("a-2", Config(1, 2)) == seven
    assert executor.load_time("b", Config(1, 1)) == load_time_s("mistral-7b", get_model("mistral-7b"), 1, FP16)


def test_executor_load_time_with_prefix_names(roofline):
    raw = ensemble_spec()
    raw["models"][0].update(name="judge", model="llama-2-7b")
    raw["models"][1].update(name="judge-large", model="llama-2-13b")
    app = Application.from_dict(raw)
    executor = Executor(app, roofline, app.spec.engine)
    expected = load_time_s("llama-2-13b", get_model("llama-2-13b"), 1, FP16)
    assert executor.load_time("judge-large", Config(1, 1)) == pytest.approx(expected)


# === 9. the plan command ====================================================================================
TINY_YAML = """\
name: tiny
topology: ensemble
node: {gpu: a100-80gb, count: 2}
prompts: {fixed: 200, count: 30}
models:
  - {name: a, model: llama-2-7b, output_lengths: {fixed: 100}}
  - {name: b, model: phi-2, output_lengths: {fixed: 80}}
samples: 2
search: {strategy: beam, top_k: 3, beam_width: 2, time_budget_s: 30}
"""


def test_cli_plan_json_and_gantt(tmp_path, capsys):
    from inference_sim.cli import main

    app_file = tmp_path / "app.yaml"
    app_file.write_text(TINY_YAML)
    png = tmp_path / "g.png"
    assert main(["plan", str(app_file), "--json", "--gantt", str(png)]) == 0
    payload = json.loads(capsys.readouterr().out)
    for key in ("strategy", "chosen", "baselines", "speedup", "search_time_s"):
        assert key in payload
    assert payload["strategy"] == "beam"
    for key in ("makespan_s", "p10_s", "p90_s", "stages"):
        assert key in payload["chosen"]
    assert set(payload["baselines"]) == {"naive", "largest_first", "greedy"}
    assert set(payload["speedup"]) == {"naive", "largest_first", "greedy"}
    chosen = payload["chosen"]["makespan_s"]
    assert chosen > 0 and payload["chosen"]["p10_s"] <= chosen <= payload["chosen"]["p90_s"] + 1e-9
    for name, est in payload["baselines"].items():
        assert payload["speedup"][name] == pytest.approx(est["makespan_s"] / chosen)
        assert est["makespan_s"] >= chosen * (1 - 1e-9) or name != "greedy"
    stages = payload["chosen"]["stages"]
    assert stages and {p["llm"] for s in stages for p in s} == {"a", "b"}
    for stage in stages:
        gpus = [g for p in stage for g in p["gpus"]]
        assert len(gpus) == len(set(gpus)) and all(0 <= g < 2 for g in gpus)
    assert payload["application"]["llms"] == ["a", "b"] and payload["application"]["gpus"] == 2
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plan_greedy_text(tmp_path, capsys):
    from inference_sim.cli import main

    app_file = tmp_path / "app.yaml"
    app_file.write_text(TINY_YAML)
    assert main(["plan", str(app_file), "--strategy", "greedy", "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "chosen (greedy)" in out and "stage 1:" in out and "naive" in out and "largest_first" in out


@pytest.mark.parametrize("case", ["missing", "invalid-yaml", "bad-strategy", "bad-spec", "directory"])
def test_cli_plan_bad_input(case, tmp_path, capsys):
    from inference_sim.cli import main

    app_file = tmp_path / "app.yaml"
    app_file.write_text(TINY_YAML)
    argv = {"missing": ["plan", str(tmp_path / "nope.yaml")],
            "invalid-yaml": ["plan", str(tmp_path / "bad.yaml")],
            "bad-strategy": ["plan", str(app_file), "--strategy", "weird"],
            "bad-spec": ["plan", str(tmp_path / "spec.yaml")],
            "directory": ["plan", str(tmp_path)]}[case]
    (tmp_path / "bad.yaml").write_text("topology: [ensemble\n")
    (tmp_path / "spec.yaml").write_text(TINY_YAML.replace("topology: ensemble", "topology: star"))
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert {"missing": "does not exist", "invalid-yaml": "not valid YAML", "bad-strategy": "weird",
            "bad-spec": "topology", "directory": "directory"}[case] in lines[0]
    assert captured.out == ""
