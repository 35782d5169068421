"""`inference-sim sweep`: capacity planning over serving configurations (grid or per-configuration rate search)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.common import app


@app.command()
def sweep(
    spec_file: Annotated[Path, typer.Argument(metavar="SWEEP.yaml", help="Sweep spec (see examples/sweep.yaml).")],
    search: Annotated[bool, typer.Option("--search", help="Find each configuration's highest request rate that "
                                                          "meets the SLO (bisection) instead of the rate grid.")] = False,
    dask: Annotated[str | None, typer.Option(help="Run on Dask: 'local' (a 2-worker LocalCluster and its dashboard on "
                                                  "127.0.0.1 only) or "
                                                  "a scheduler address tcp://host:8786.")] = None,
    n_jobs: Annotated[int | None, typer.Option(help="Local worker processes (default 1; -1: one per core). With "
                                                    "--dask local: the number of workers.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for results.parquet/.csv (search.parquet/.csv), summary.json "
                                           "and the plot (an interrupted sweep writes to OUT/partial/).")] = Path("sweep_out"),
    force: Annotated[bool, typer.Option("--force", help="Replace files in --out that this tool did not write.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Sweep GPU × TP × batch limits × chunk size × rate × precision: cost, latency, SLO, Pareto front, cheapest."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from inference_sim.progress import ProgressLines
    from predictor.output_dir import PARTIAL, OutputFolder
    from scheduler.sweep import check_execution, load_sweep, run_sweep
    from scheduler.sweep_result import output_names

    spec = load_sweep(spec_file)
    n_jobs = 1 if n_jobs is None else n_jobs
    check_execution(n_jobs, dask)
    mode = "search" if search else "grid"
    folder = OutputFolder(out, output_names(mode).values(), force=force)
    folder.check()
    err_console = Console(stderr=True)
    unit = "configurations" if search else "points"
    with folder as staging:
        with Progress(TextColumn(f"{'searching' if search else 'sweeping'} {unit}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
                      disable=not err_console.is_terminal) as bar:
            task = bar.add_task("sweep", total=None)
            lines = ProgressLines(f"{'searching' if search else 'sweeping'} {unit}",
                                  enabled=not err_console.is_terminal)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)
                lines.update(done, total)

            result = run_sweep(spec, search=search, n_jobs=n_jobs, dask=dask, progress=progress)
        shown = out / PARTIAL if result.partial else out
        result.write(staging, shown_dir=shown)
        folder.publish(partial=result.partial)
    summary = result.summary()
    if result.partial:
        typer.echo(f"interrupted: {len(result.table):,} of {result.total:,} {unit} finished; partial results written "
                   f"to {shown} (marked partial)", err=True)
    if as_json:
        common._print_json(summary)
    else:
        _print(result, summary, out)
    if result.partial:
        raise typer.Exit(130)  # 143 when SIGTERM caused it (see inference_sim.signals)


def _money(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"${value:.{digits}g}"


def _num(value: float | None, fmt: str = ".0f") -> str:
    return "–" if value is None else format(value, fmt)


def _print(result, summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    slo = summary["slo"]
    target = " and ".join(f"{k.split('_')[0].upper()} ≤ {v:g} ms" for k, v in slo.items() if k != "attainment" and v)
    if result.mode == "grid":
        console.print(f"{summary['name']}: {summary['points']} points ({summary['simulated']} simulated, "
                      f"{summary['skipped']} skipped), {summary['meeting_slo']} meet the SLO ({target} for "
                      f"{slo['attainment']:.0%} of requests); {summary['wall_s']:.1f} s on {summary['backend']}")
        table = Table(title=f"Pareto front: USD per million output tokens vs {summary['pareto_metric']}",
                      title_justify="left")
        for col in ("gpu", "tp", "dtype", "seqs", "chunk", "req/s", "$/h", "$/M tok", "TTFT p90", "TPOT p99",
                    "SLO att.", "meets"):
            table.add_column(col, justify="left" if col in ("gpu", "dtype") else "right")
        for r in summary["pareto"][:20]:
            table.add_row(r["gpu"], str(r["tp"]), r["dtype"], str(r["max_num_seqs"]), str(r["chunk"]), _num(r["rate"], "g"),
                          _money(r["cost_usd_per_hour"]), _money(r["cost_usd_per_million_output_tokens"]),
                          _num(r["ttft_p90_ms"]), _num(r["tpot_p99_ms"], ".1f"), _num(r["slo_attainment"], ".0%"),
                          "yes" if r["meets_slo"] else "no")
        console.print(table)
        best = summary["cheapest"]
        if best is None:
            console.print("[bold]No configuration meets the SLO.[/]")
        else:
            rate = f" at {best['rate']:g} requests/s" if best["rate"] is not None else ""
            console.print(f"[bold]Cheapest meeting the SLO:[/] {best['gpu']} × {best['tp']} ({best['dtype']}, max_num_seqs "
                          f"{best['max_num_seqs']}, chunk {best['chunk']}){rate}: "
                          f"{_money(best['cost_usd_per_million_output_tokens'])} per million output tokens "
                          f"({_money(best['cost_usd_per_hour'])}/h), TTFT p90 {best['ttft_p90_ms']:.0f} ms, TPOT p99 "
                          f"{best['tpot_p99_ms']:.1f} ms, attainment {best['slo_attainment']:.1%}")
        for entry in summary["cheapest_per_rate"]:
            b = entry["best"]
            text = (f"{b['gpu']} × {b['tp']} ({b['dtype']}, seqs {b['max_num_seqs']}, chunk {b['chunk']}) at "
                    f"{_money(b['cost_usd_per_hour'])}/h" if b else "none meets the SLO")
            console.print(f"  at {entry['rate']:g} requests/s: {text}")
    else:
        console.print(f"{summary['name']}: {summary['configurations']} configurations ({summary['feasible']} meet the SLO "
                      f"at some rate, {summary['infeasible']} never, {summary['skipped']} skipped; {target} for "
                      f"{slo['attainment']:.0%} of requests); {summary['wall_s']:.1f} s on {summary['backend']}")
        t = result.table.sort_values("cost_usd_per_request", kind="stable")
        table = Table(title="Highest sustainable rate per configuration (cheapest per request first)",
                      title_justify="left")
        for col in ("gpu", "tp", "dtype", "seqs", "chunk", "max req/s", "$/h", "$/1k req", "TTFT p90", "TPOT p99",
                    "sims", "status"):
            table.add_column(col, justify="left" if col in ("gpu", "dtype", "status") else "right")
        for r in t.head(20).itertuples():
            ok = r.status == "ok"
            table.add_row(r.gpu, str(r.tp), r.dtype, str(r.max_num_seqs), str(r.chunk),
                          f"{r.max_rate_rps:.3g}" if ok else "–", f"${r.cost_usd_per_hour:.3g}",
                          f"${r.cost_usd_per_request * 1e3:.3g}" if ok else "–",
                          f"{r.ttft_p90_ms:.0f}" if ok else "–", f"{r.tpot_p99_ms:.1f}" if ok else "–",
                          str(r.simulations), r.status)
        console.print(table)
        best = summary["cheapest"]
        if best is None:
            console.print("[bold]No configuration meets the SLO at any rate tried.[/]")
        else:
            console.print(f"[bold]Cheapest per unit of sustained load:[/] {best['gpu']} × {best['tp']} ({best['dtype']}, "
                          f"max_num_seqs {best['max_num_seqs']}, chunk {best['chunk']}): {best['max_rate_rps']:.3g} "
                          f"requests/s at {_money(best['cost_usd_per_hour'])}/h = "
                          f"{_money(best['cost_usd_per_request'] * 1e3)} per 1,000 requests")
    if summary["skipped_reasons"]:
        console.print(f"skipped: {'; '.join(summary['skipped_reasons'][:3])}"
                      f"{' …' if len(summary['skipped_reasons']) > 3 else ''}")
    files = summary["files"]
    console.print(f"wrote {files['parquet']}, {Path(files['csv']).name}, {Path(files['summary']).name}, "
                  f"{Path(files['plot']).name}")
