"""`inference-sim data summary | build | ingest`: kernel-profile tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.common import app


data_app = typer.Typer(help="Kernel-profile data: summaries and ingestion of your own profiles.", no_args_is_help=True)
app.add_typer(data_app, name="data")

INGEST_SOURCES = ("vidur", "aiconfigurator", "canonical")


@data_app.command("summary")
def data_summary(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (default: the repo's data/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    markdown: Annotated[Path | None, typer.Option(help="Also write the summary as Markdown to this file.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a measured/roofline vs intensity plot (PNG).")] = None,
) -> None:
    """Rows per source × GPU × op kind × dtype of the shipped kernel profiles, and rejected counts."""
    from features.canonical import load_kernels, read_report
    from features.summary import ratio_plot, summarize, summary_markdown, summary_payload, write_markdown

    kernels = load_kernels(data_dir)
    payload = summary_payload(summarize(kernels), read_report(data_dir))
    if markdown is not None:
        write_markdown(summary_markdown(payload), markdown)
    if plot is not None:
        ratio_plot(kernels, plot)
    if as_json:
        common._print_json(payload)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{payload['total_rows']:,} canonical kernel rows", title_justify="left")
    for col in ("source", "gpu", "op_kind", "dtype", "rows", "models"):
        table.add_column(col, justify="right" if col in ("rows", "models") else "left")
    for r in payload["table"]:
        table.add_row(r["source"], r["gpu"], r["op_kind"], r["dtype"], f"{r['rows']:,}", str(r["models"]))
    console = Console(width=max(Console().width, 100))
    console.print(table)
    for source, rep in payload["ingest"].items():
        rejected = ", ".join(f"{k} {v:,}" for k, v in rep.get("rejected", {}).items()) or "none"
        console.print(f"{source}: kept {rep['kept']:,}, merged duplicates {rep['merged_duplicates']:,}, rejected: {rejected}")


@data_app.command("build")
def data_build(
    shared: Annotated[Path, typer.Option(help="Folder holding the published vidur/ and aiconfigurator/ sources.")] = Path(
        "../shared/data"),
    out: Annotated[Path | None, typer.Option(help="Output data folder (default: the repo's data/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ingestion reports as JSON.")] = False,
) -> None:
    """Rebuild the shipped kernel tables (data/vidur, data/aiconfigurator, ingest_report.json) from the sources."""
    from features.build_data import build_kernel_data

    reports = build_kernel_data(shared, out)
    if as_json:
        common._print_json(reports)
        return
    for source, rep in reports.items():
        rejected = ", ".join(f"{k} {v:,}" for k, v in rep.get("rejected", {}).items()) or "none"
        typer.echo(f"{source}: kept {rep['kept']:,}, merged duplicates {rep['merged_duplicates']:,}, rejected: {rejected}")


@data_app.command("ingest")
def data_ingest(
    path: Annotated[Path, typer.Argument(help="Profile folder (vidur / aiconfigurator layout) or canonical table file.")],
    source: Annotated[str, typer.Option(help="Layout of PATH: vidur, aiconfigurator or canonical.")],
    out: Annotated[Path, typer.Option(help="Output canonical table (.parquet).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the ingestion report as JSON.")] = False,
) -> None:
    """Turn your own profiles (Vidur or aiconfigurator layout, or a canonical table) into a canonical table."""
    from features.canonical import read_table, write_table
    from features.schema import IngestReport, validate
    from predictor.errors import InputError

    if source not in INGEST_SOURCES:
        raise InputError(f"--source: unknown value {source!r}; allowed: {', '.join(INGEST_SOURCES)}")
    if out.suffix.lower() != ".parquet":
        raise InputError(f"--out: {str(out)!r} must end in .parquet")
    if source == "vidur":
        from features.ingest_vidur import load_vidur

        table, report = load_vidur(path)
    elif source == "aiconfigurator":
        from features.ingest_aiconfigurator import load_aiconfigurator

        table, report = load_aiconfigurator(path)
    else:
        table, report = validate(read_table(path, field="PATH"), source=str(path), report=IngestReport())
    if table.empty:
        raise InputError(f"{path}: no valid rows left after validation ({report.to_dict()['rejected']})")
    write_table(table, out)
    payload = {"out": str(out), **report.to_dict()}
    if as_json:
        common._print_json(payload)
    else:
        rejected = ", ".join(f"{k} {v:,}" for k, v in payload["rejected"].items()) or "none"
        typer.echo(f"wrote {payload['kept']:,} rows to {out} (merged duplicates {payload['merged_duplicates']:,}; "
                   f"rejected: {rejected})")
