"""`inference-sim advise`: bottleneck per phase and a ranked list of what-if changes (logic: scheduler.advisor)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.common import app


def _pct(x: float) -> str:
    return "—" if x != x else f"{x:+.0%}"


def _bottleneck_table(report: dict):
    from rich import box
    from rich.table import Table

    table = Table(title="Bottleneck per phase (baseline; shares of the phase's time)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for col in ("phase", "bound", "MFU", "MBU", "comp", "mem", "net", "ovh", "×roof"):
        table.add_column(col, justify="left" if col in ("phase", "bound") else "right", no_wrap=True)
    for phase, b in report["bottlenecks"].items():
        e = b["evidence"]
        table.add_row(phase, f"[bold]{b['bottleneck']}[/bold]", f"{e['mfu']:.1%}", f"{e['mbu']:.1%}",
                      *(f"{e[f'{k}_share']:.0%}" for k in ("compute", "memory", "network", "overhead")),
                      f"{e['roofline_distance']:.2f}")
    return table


def _candidates_table(report: dict, top: int):
    from rich import box
    from rich.table import Table

    base = report["baseline"]
    table = Table(title=f"Candidates ranked by {report['objective']} gain (change vs the baseline; TTFT/TPOT in ms)",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("#", "candidate", "gain", "GPUs", "tok/s", "TTFT50", "TTFT90", "TPOT50", "TPOT90", "effect"):
        table.add_column(col, justify="left" if col in ("candidate", "effect") else "right", no_wrap=True)
    table.add_row("", "baseline", "", str(base["gpus"]), f"{base['output_tokens_per_s']:.0f}",
                  *(f"{base[k]:.4g}" for k in ("ttft_p50_ms", "ttft_p90_ms", "tpot_p50_ms", "tpot_p90_ms")), "")
    for i, row in enumerate(report["candidates"][:top], 1):
        r = row["relative"]
        table.add_row(str(i), row["name"], _pct(row["gain"]), str(row["gpus"]),
                      *(_pct(r[k]) for k in ("output_tokens_per_s", "ttft_p50_ms", "ttft_p90_ms", "tpot_p50_ms",
                                             "tpot_p90_ms")), "sim" if row["effect"] == "simulated" else row["effect"])
    return table


@app.command()
def advise(
    model: Annotated[str, typer.Option(help="Catalogue model, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=1024, help="Tensor-parallel degree.")] = 1,
    pp: common.PipelineOption = 1,
    ep: common.ExpertOption = 1,
    dp_attention: common.DPAttentionOption = 1,
    moe_tp: common.MoETPOption = 0,
    dtype: common.DTypeOption = None,
    workload: Annotated[str, typer.Option(help="offline (a static batch), poisson, gamma or trace.")] = "poisson",
    rate: Annotated[float | None, typer.Option(help="Arrival rate, requests/s (poisson, gamma).")] = None,
    cv: Annotated[float, typer.Option(help="Coefficient of variation of gamma inter-arrival gaps.")] = 1.0,
    trace: Annotated[str | None, typer.Option(help="Trace for lengths/arrivals: splitwise_conv, splitwise_code, "
                                                    "arxiv_summarization or a CSV file.")] = None,
    num_requests: Annotated[int, typer.Option(min=1, help="Requests to simulate per candidate.")] = 300,
    prompt_len: Annotated[int | None, typer.Option(min=1, help="Fixed prompt tokens (else from the trace).")] = None,
    output_len: Annotated[int | None, typer.Option(min=1, help="Fixed output tokens (else from the trace).")] = None,
    output_dist: Annotated[str | None, typer.Option(help="Sample output lengths from this model's measured "
                                                         "distribution (e.g. Llama-2-7b-chat-hf).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (the same workload for every candidate).")] = 0,
    max_num_seqs: common.MaxNumSeqsOption = None,
    max_num_batched_tokens: common.MaxBatchedTokensOption = None,
    framework: common.FrameworkOption = "vllm",
    objective: Annotated[str, typer.Option(help="Ranking: per-gpu (tokens/s per GPU), throughput (tokens/s), "
                                                "ttft or tpot (p90).")] = "per-gpu",
    spec_acceptance: Annotated[float, typer.Option(help="Acceptance rate assumed for speculative decoding.")] = 0.8,
    top: Annotated[int, typer.Option(min=1, help="Candidates to show in the table.")] = 20,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file with your own GPU specs.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """Name the bottleneck of prefill and decode, then rank what-if changes, each re-simulated on the same workload."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from predictor import get_gpu
    from predictor.errors import InputError
    from scheduler.advisor import OBJECTIVES, Scenario, WorkloadSpec
    from scheduler.advisor import advise as run_advisor

    if objective not in OBJECTIVES:
        raise InputError(f"--objective: unknown value {objective!r}; allowed: {', '.join(OBJECTIVES)}")
    from inference_sim.commands.prediction import model_and_dtype

    _, dtype = model_and_dtype(model, dtype)
    spec = WorkloadSpec(workload, num_requests, rate=rate, cv=cv, trace=trace, prompt_len=prompt_len,
                        output_len=output_len, output_dist=output_dist, seed=seed)
    from scheduler.engine_profiles import get_profile

    profile = get_profile(framework)
    given = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens}
    config = profile.engine_config(**{k: v for k, v in given.items() if v is not None})
    base = Scenario(model, get_gpu(gpu, gpu_file), common.parallel_layout(tp, pp, ep, dp_attention, moe_tp), dtype,
                    config, profile=None if profile.framework == "legacy" else profile)
    predictor = common._load_predictor(artifacts)
    with Progress(TextColumn("simulating candidates"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, disable=as_json) as bar:
        task = bar.add_task("advise", total=None)
        report = run_advisor(predictor, base, spec, objective, spec_acceptance,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        common._print_json(report)
        return
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough for the candidates table
        console = Console(width=120)
    s = report["setup"]
    layout = f"TP {s['tp']}" if isinstance(s["tp"], int) else " ".join(
        f"{k}={v}" for k, v in s["tp"].items() if k == "tp" or v not in (0, 1) and k not in ("moe_tp", "micro_batches"))
    typer.echo(f"{s['model']} on {s['gpus']}× {s['gpu']} ({layout}, {s['dtype']}, {s['framework']} engine profile); "
               f"{report['workload']['requests']} {workload} requests, seed {seed}")
    console.print(_bottleneck_table(report))
    for phase, b in report["bottlenecks"].items():
        typer.echo(f"  {phase}: {b['explanation']}")
    if report["baseline"]["arrival_limited"] and objective in ("per-gpu", "throughput"):
        typer.echo("  note: the baseline keeps up with the arrivals, so throughput is set by the arrival rate; use "
                   "--workload offline or a higher --rate to rank by capacity, or --objective ttft/tpot")
    console.print(_candidates_table(report, top))
    for i, row in enumerate(report["candidates"][:top], 1):
        typer.echo(f"  {i}. {row['name']}: {row['change']}. Risks: {'; '.join(row['risks'])}.")
    for row in report["skipped"]:
        typer.echo(f"  skipped {row['name']}: {row['reason']}")
    typer.echo("Assumptions: " + "; ".join(report["assumptions"]) + ".")
