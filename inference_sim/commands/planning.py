"""`inference-sim plan`: the multi-LLM offline planner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.common import app


_STOPPED = {"simulations": " (simulation budget reached)",
            "time": " (time bound reached: the plan depends on this machine's speed)"}


@app.command()
def plan(
    app_file: Annotated[Path, typer.Argument(metavar="APP.yaml", help="Application spec (see examples/).")],
    strategy: Annotated[str | None, typer.Option(help="beam or greedy (default: the spec's).")] = None,
    samples: Annotated[int | None, typer.Option(min=1, max=100, help="Output-length samples K.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Random seed (default: the spec's).")] = None,
    max_simulations: Annotated[int | None, typer.Option(min=1, max=1_000_000, help="Search budget in engine simulations "
                                                        "(default: the spec's; the plan depends only on inputs and seed).")] = None,
    time_budget_s: Annotated[float | None, typer.Option(min=0.1, help="Upper bound on the search, seconds (a search "
                                                        "stopped by it depends on the machine's speed).")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    gantt: Annotated[Path | None, typer.Option(help="Write a Gantt chart (GPUs × time) to this PNG file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Plan a multi-LLM offline application on one node: sampling then simulation, against baselines."""
    from predictor.errors import InputError
    from scheduler.app import load_application
    from scheduler.planner import Planner

    if strategy is not None and strategy not in ("beam", "greedy"):
        raise InputError(f"--strategy: unknown value {strategy!r}; allowed: beam, greedy")
    application = load_application(app_file)
    planner = Planner(application, common._load_predictor(artifacts), samples=samples, seed=seed, strategy=strategy,
                      time_budget_s=time_budget_s, max_simulations=max_simulations)
    from rich.console import Console

    with Console(stderr=True).status("planning (sampling then simulation)…", spinner="dots") as _:
        result = planner.run()
    if gantt is not None:
        from scheduler.gantt import gantt_chart

        gantt_chart(result.execution, application.num_gpus, gantt,
                    f"{application.spec.name}: {result.strategy} plan, makespan {result.chosen.mean_s:.0f} s "
                    f"(sample 1)")
    note = application.length_warning(planner.samples)
    if note:
        typer.echo(f"warning: {note}", err=True)
    payload = result.to_dict()
    payload["application"] = {"name": application.spec.name, "topology": application.spec.topology,
                              "llms": application.names, "gpus": application.num_gpus, "gpu": application.gpu.name,
                              "samples": planner.samples_k, "length_warning": note}
    if as_json:
        common._print_json(payload)
        return
    c = result.chosen
    typer.echo(f"{application.spec.name}: {len(application.names)} LLMs on {application.num_gpus}× {application.gpu.name}")
    typer.echo(f"chosen ({result.strategy}): makespan {c.mean_s:.1f} s (p10 {c.p10_s:.1f} – p90 {c.p90_s:.1f} s over "
               f"{planner.samples_k} samples); search {result.search_time_s:.1f} s, {result.evaluations} plan evaluations, "
               f"{result.simulations} engine simulations{_STOPPED.get(result.stopped_by, '')}")
    for i, stage in enumerate(c.plan.stages, 1):
        parts = ", ".join(f"{p.llm} {p.config} on GPUs {','.join(map(str, p.gpus))}" for p in stage.placements)
        typer.echo(f"  stage {i}: {parts}")
    for name, est in result.baselines.items():
        typer.echo(f"{name:13s} {est.mean_s:10.1f} s   (chosen plan is {est.mean_s / c.mean_s:.2f}x faster)")
    if gantt is not None:
        typer.echo(f"Gantt chart written to {gantt}")
