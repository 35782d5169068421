"""`inference-sim train | report`: the residual model and its accuracy report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.common import app


@app.command()
def train(
    quick: Annotated[bool, typer.Option("--quick", help="Small configuration (~15 s) for smoke tests.")] = False,
    out: Annotated[Path | None, typer.Option(help="Artifact folder (default: the shipped artifacts/).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (default: the repo's data/).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                                         "else sqlite:///./mlflow.db).")] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the artifact even if the new model is worse.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Train the residual model, evaluate it against baselines on held-out splits, write the artifact."""
    from rich.console import Console

    from inference_sim.progress import ProgressLines
    from training.pipeline import TrainConfig
    from training.pipeline import train as run_training

    config = TrainConfig.quick(seed) if quick else TrainConfig(seed=seed)
    console = Console(stderr=True)
    warnings_seen: list[str] = []

    def warn(message: str) -> None:
        warnings_seen.append(message)
        typer.echo(f"warning: {message}", err=True)

    lines = ProgressLines("training", enabled=not console.is_terminal)

    def progress(message: str) -> None:
        status.update(message)
        lines.step(message)

    with console.status("training…") as status, lines.heartbeat("starting"):
        result = run_training(config, out_dir=out, data_dir=data_dir, tracking_uri=tracking_uri,
                              tracking=not no_tracking, force=force, progress=progress, warn=warn)
    payload = result.to_dict()
    if as_json:
        common._print_json(payload)
        return
    for split, methods in result.metrics.items():
        cells = ", ".join(f"{m} {v['mdape']:.1%}/{v['p90_ape']:.0%}" for m, v in methods.items())
        typer.echo(f"{split}: MdAPE/p90 {cells}")
    typer.echo(f"artifact: {'written to' if result.replaced else 'NOT replaced in'} {result.out_dir} ({result.reason})")
    if result.run_id:
        typer.echo(f"MLflow run {result.run_id}, model version {result.model_version}"
                   f"{' (now champion)' if result.promoted else ''}; see it with: mlflow ui --backend-store-uri "
                   f"{tracking_uri or common._default_tracking_uri()} --workers 1")
    typer.echo(f"took {result.timing_s['total']:.0f} s")


@app.command()
def report(
    artifacts: Annotated[Path | None, typer.Option(help="Artifact folder (default: the shipped artifacts/).")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where to write accuracy.md and plots (default: the project's "
                                                      "docs/ in a source checkout, else ./docs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the headline metrics as JSON.")] = False,
) -> None:
    """Accuracy of the residual model against baselines on held-out data; writes docs/accuracy.md."""
    from training.report import default_report_dir, load_evaluation, report_json, write_report

    evaluation, sample, metadata = load_evaluation(artifacts)
    target = out_dir if out_dir is not None else default_report_dir()
    path = write_report(evaluation, sample, target, metadata)
    payload = report_json(evaluation)
    if as_json:
        common._print_json(payload)
        return
    from rich.console import Console
    from rich.table import Table

    from predictor import Predictor

    table = Table(title="Held-out accuracy (MdAPE / p90 APE of kernel times)", title_justify="left")
    table.add_column("split")
    methods = list(next(iter(payload["splits"].values())))
    for m in methods:
        table.add_column(m, justify="right")
    for split, values in payload["splits"].items():
        table.add_row(split, *[f"{values[m]['mdape']:.1%} / {values[m]['p90_ape']:.0%}" for m in methods])
    console = Console(width=max(Console().width, 110))
    console.print(table)
    hybrid, baseline = Predictor.load(artifacts), Predictor.roofline_only()
    kwargs = dict(model="llama-2-7b", gpu="a100-80gb", tp=1, dtype="fp16", decode=[1024] * 16)
    h, r = hybrid.predict_iteration(**kwargs), baseline.predict_iteration(**kwargs)
    console.print(f"Example: one decode step of llama-2-7b on a100-80gb, 16 sequences at context 1024: "
                  f"hybrid {h.total_ms:.2f} ms, roofline {r.total_ms:.2f} ms")
    console.print(f"Report written to {path}")
