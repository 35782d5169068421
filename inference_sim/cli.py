"""The ``inference-sim`` command line: a thin shell over the Python API.

Every command prints data as a rich table, or as JSON with ``--json``. Bad input exits with code 2
and a one-line ``error: …`` message on stderr; ``--debug`` (anywhere on the line) shows the full
traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from inference_sim import __version__

app = typer.Typer(
    name="inference-sim",
    help="Predict LLM inference latency on a GPU setup and plan multi-LLM workloads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_BAD_INPUT = 2


def _version(value: bool) -> None:
    if value:
        typer.echo(f"inference-sim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Predict LLM inference latency on a GPU setup and plan multi-LLM workloads."""


def _print_json(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=2, default=float))


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _shape_text(shape: dict) -> str:
    if "msg_bytes" in shape:
        return f"{_fmt_bytes(shape['msg_bytes'])} over {shape['world_size']:g} GPUs"
    return "×".join(f"{v:g}" for v in shape.values())


def _ops_table(title: str, section: dict):
    from rich.table import Table

    table = Table(title=f"{title}: {section['total_ms']:.3f} ms (ideal)", title_justify="left")
    for col in ("op", "×", "shape", "GFLOP", "MB", "FLOP/B", "bound", "µs/call", "ms", "share"):
        table.add_column(col, justify="left" if col in ("op", "shape", "bound") else "right", no_wrap=True)
    total = max(section["total_ms"], 1e-12)
    for op in section["ops"]:
        table.add_row(
            op["op"], str(op["count"]), _shape_text(op["shape"]),
            f"{op['flops'] / 1e9:.4g}", f"{(op['bytes'] + op['link_bytes']) / 1e6:.4g}", f"{op['intensity']:.3g}",
            op["bound"], f"{op['ideal_ms'] * 1e3:.4g}", f"{op['total_ms']:.4g}", f"{op['total_ms'] / total:.1%}",
        )
    return table


@app.command()
def roofline(
    model: Annotated[str, typer.Option(help="Catalogue model name, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU name (e.g. a100-80gb) or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=64, help="Tensor-parallel degree.")] = 1,
    dtype: Annotated[str, typer.Option(help="fp16, bf16, fp8, int8, w8a16, w4a16 or w<bits>a<bits>[kv<bits>].")] = "fp16",
    kv_bits: Annotated[int | None, typer.Option(help="KV-cache bits (4, 8, 16); default from --dtype.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1_000_000, help="Sequences in the batch.")] = 1,
    input_len: Annotated[int, typer.Option(min=1, max=10_000_000, help="Prompt tokens per sequence.")] = 512,
    decode_context: Annotated[int | None, typer.Option(min=0, max=10_000_000,
                                                       help="Cached tokens per sequence at the decode step (default: input-len).")] = None,
    attention: Annotated[str, typer.Option(help="flash (no N² score traffic) or naive.")] = "flash",
    gpu_memory_utilization: Annotated[float, typer.Option(min=0.01, max=1.0, help="Fraction of GPU memory usable.")] = 0.9,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file with your own GPU specs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a roofline chart to this PNG file.")] = None,
) -> None:
    """Ideal (roofline) time of one prefill iteration and one decode step, op by op, with memory use."""
    from predictor.analysis import roofline_report

    report = roofline_report(
        model, gpu, tp=tp, dtype=dtype, batch_size=batch_size, input_len=input_len, decode_context=decode_context,
        attention=attention, gpu_memory_utilization=gpu_memory_utilization, kv_bits=kv_bits, gpu_file=gpu_file,
    )
    if plot is not None:
        from predictor.plot import roofline_chart

        roofline_chart(report, plot)
    if not report["memory"]["batch_fits"]:
        typer.echo(f"warning: {batch_size} sequences of {max(input_len, report['decode_context']) + 1} tokens exceed the "
                   f"KV-cache capacity of {report['memory']['max_tokens']} tokens; times are for a batch that "
                   f"could not run at once", err=True)
    if as_json:
        _print_json(report)
        return
    from rich.console import Console

    console = Console(width=max(Console().width, 120))
    console.print(f"[bold]{report['model']}[/] on [bold]{report['gpu']}[/] · tp={tp} · {report['dtype']} · "
                  f"{report['attention']} attention · peak {report['gpu_spec']['peak_tflops']:.0f} TFLOP/s · "
                  f"{report['gpu_spec']['hbm_bandwidth_gbps']:.0f} GB/s · ridge "
                  f"{report['gpu_spec']['ridge_flops_per_byte']:.0f} FLOP/B")
    console.print(_ops_table(f"Prefill: {batch_size} × {input_len} tokens", report["prefill"]))
    console.print(_ops_table(f"Decode step: {batch_size} seqs at context {report['decode_context']}", report["decode"]))
    mem = report["memory"]
    console.print(
        f"Memory per GPU: weights {_fmt_bytes(mem['weights_bytes'])}, workspace "
        f"{_fmt_bytes(mem['activation_bytes'] + mem['overhead_bytes'])}, KV cache {_fmt_bytes(mem['kv_cache_bytes'])} "
        f"= {mem['max_tokens']:,} tokens ({_fmt_bytes(mem['kv_bytes_per_token'])}/token); "
        f"{mem['max_sequences_at_context']:,} sequences at this context"
    )
    if plot is not None:
        console.print(f"Roofline chart written to {plot}")


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
        _print_json(payload)
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
        table, report = validate(read_table(path), source=str(path), report=IngestReport())
    if table.empty:
        raise InputError(f"{path}: no valid rows left after validation ({report.to_dict()['rejected']})")
    write_table(table, out)
    payload = {"out": str(out), **report.to_dict()}
    if as_json:
        _print_json(payload)
    else:
        rejected = ", ".join(f"{k} {v:,}" for k, v in payload["rejected"].items()) or "none"
        typer.echo(f"wrote {payload['kept']:,} rows to {out} (merged duplicates {payload['merged_duplicates']:,}; "
                   f"rejected: {rejected})")


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

    from training.pipeline import TrainConfig
    from training.pipeline import train as run_training

    config = TrainConfig.quick(seed) if quick else TrainConfig(seed=seed)
    console = Console(stderr=True)
    warnings_seen: list[str] = []

    def warn(message: str) -> None:
        warnings_seen.append(message)
        typer.echo(f"warning: {message}", err=True)

    with console.status("training…") as status:
        result = run_training(config, out_dir=out, data_dir=data_dir, tracking_uri=tracking_uri,
                              tracking=not no_tracking, force=force, progress=lambda m: status.update(m), warn=warn)
    payload = result.to_dict()
    if as_json:
        _print_json(payload)
        return
    for split, methods in result.metrics.items():
        cells = ", ".join(f"{m} {v['mdape']:.1%}/{v['p90_ape']:.0%}" for m, v in methods.items())
        typer.echo(f"{split}: MdAPE/p90 {cells}")
    typer.echo(f"artifact: {'written to' if result.replaced else 'NOT replaced in'} {result.out_dir} ({result.reason})")
    if result.run_id:
        typer.echo(f"MLflow run {result.run_id}, model version {result.model_version}"
                   f"{' (now champion)' if result.promoted else ''}; see it with: mlflow ui --backend-store-uri "
                   f"{tracking_uri or _default_tracking_uri()} --workers 1")
    typer.echo(f"took {result.timing_s['total']:.0f} s")


def _default_tracking_uri() -> str:
    from training.tracking import default_tracking_uri

    return default_tracking_uri()


@app.command()
def report(
    artifacts: Annotated[Path | None, typer.Option(help="Artifact folder (default: the shipped artifacts/).")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where to write accuracy.md and plots (default: docs/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the headline metrics as JSON.")] = False,
) -> None:
    """Accuracy of the residual model against baselines on held-out data; writes docs/accuracy.md."""
    from training.report import load_evaluation, report_json, write_report

    evaluation, sample, metadata = load_evaluation(artifacts)
    target = out_dir if out_dir is not None else Path(__file__).resolve().parents[1] / "docs"
    path = write_report(evaluation, sample, target, metadata)
    payload = report_json(evaluation)
    if as_json:
        _print_json(payload)
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


def _load_predictor(artifacts: str | None):
    from predictor import Predictor

    return Predictor.load(artifacts)


def _fitting_config(model: str, gpu: str, gpu_file: Path | None, tp: int, dtype: str):
    """(model spec, GPU spec) after checking the model fits at this TP and precision (else an input error)."""
    from predictor import get_gpu
    from predictor.memory import plan_memory
    from predictor.models import get_model
    from predictor.precision import parse_dtype

    spec, gpu_spec = get_model(model), get_gpu(gpu, gpu_file)
    plan_memory(spec, gpu_spec, tp, parse_dtype(dtype))
    return spec, gpu_spec


def _parse_prefill(text: str) -> list[tuple[int, int]]:
    from predictor.errors import InputError

    chunks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        pieces = part.split(":")
        try:
            new, ctx = (int(pieces[0]), int(pieces[1]) if len(pieces) > 1 else 0)
        except ValueError:
            raise InputError(f"--prefill: {part!r} is not NEW[:CONTEXT] with integers (e.g. 512:0,128:1024)") from None
        if len(pieces) > 2:
            raise InputError(f"--prefill: {part!r} is not NEW[:CONTEXT] (e.g. 512:0,128:1024)")
        chunks.append((new, ctx))
    return chunks


def _parse_decode(text: str) -> list[int]:
    from predictor.errors import InputError

    try:
        return [int(p) for p in filter(None, (p.strip() for p in text.split(",")))]
    except ValueError:
        raise InputError(f"--decode: {text!r} must be comma-separated integers (cached context per sequence)") from None


@app.command()
def estimate(
    model: Annotated[str, typer.Option(help="Catalogue model, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=64, help="Tensor-parallel degree.")] = 1,
    dtype: Annotated[str, typer.Option(help="fp16, bf16, fp8, int8, w8a16, w4a16 or w<bits>a<bits>[kv<bits>].")] = "fp16",
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Requests in the static batch.")] = 1,
    input_len: Annotated[int, typer.Option(min=1, max=10_000_000, help="Prompt tokens per request.")] = 128,
    output_len: Annotated[int, typer.Option(min=1, max=10_000_000, help="Generated tokens per request.")] = 128,
    max_num_batched_tokens: Annotated[int | None, typer.Option(min=1, help="Prefill token budget per iteration "
                                                                            "(chunked prefill).")] = None,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file with your own GPU specs.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Latency and throughput of a static batch: TTFT, TPOT, end-to-end, tokens/s (hybrid and roofline)."""
    from predictor import Predictor

    spec, gpu_spec = _fitting_config(model, gpu, gpu_file, tp, dtype)
    args = dict(tp=tp, dtype=dtype, batch_size=batch_size, input_len=input_len, output_len=output_len,
                max_num_batched_tokens=max_num_batched_tokens)
    hybrid = _load_predictor(artifacts).estimate(spec, gpu_spec, **args)
    roofline = Predictor.roofline_only().estimate(spec, gpu_spec, **args)
    payload = {**hybrid.to_dict(), "roofline": roofline.to_dict()}
    if as_json:
        _print_json(payload)
        return
    typer.echo(f"{spec.name} on {gpu_spec.name} (tp={tp}, {dtype}), batch {batch_size} × {input_len} in / {output_len} out")
    for label, e in (("hybrid", hybrid), ("roofline", roofline)):
        typer.echo(f"  {label:9s} TTFT {e.ttft_ms:10.2f} ms   TPOT {e.tpot_ms:8.3f} ms   E2E {e.e2e_ms:11.2f} ms   "
                   f"{e.output_tokens_per_s:10.1f} output tokens/s")


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="Catalogue model, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=64, help="Tensor-parallel degree.")] = 1,
    dtype: Annotated[str, typer.Option(help="Precision preset or w<bits>a<bits>[kv<bits>].")] = "fp16",
    prefill: Annotated[str, typer.Option(help="Prefill chunks NEW[:CONTEXT], comma-separated (e.g. 512:0,128:1024).")] = "",
    decode: Annotated[str, typer.Option(help="Cached context of each decoding sequence, comma-separated.")] = "",
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file with your own GPU specs.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Predicted time of one iteration, with the per-op breakdown (roofline vs predicted)."""
    spec, gpu_spec = _fitting_config(model, gpu, gpu_file, tp, dtype)
    result = _load_predictor(artifacts).predict_iteration(spec, gpu_spec, tp, dtype, _parse_prefill(prefill),
                                                          _parse_decode(decode))
    ops = result.ops
    payload = {"total_ms": result.total_ms, "kernel_ms": result.kernel_ms, "overhead_ms": result.overhead_ms,
               "roofline_ms": result.roofline_ms,
               "ops": [{"op": r.op, "op_kind": r.op_kind, "count": int(r.count), "bound": r.bound,
                        "roofline_ms": float(r.roofline_ms), "predicted_ms": float(r.predicted_ms),
                        "total_ms": float(r.total_ms)} for r in ops.itertuples()]}
    if as_json:
        _print_json(payload)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kernels {result.kernel_ms:.3f} ms + overhead {result.overhead_ms:.3f} ms = "
                        f"{result.total_ms:.3f} ms (roofline {result.roofline_ms:.3f} ms)", title_justify="left")
    for col in ("op", "×", "bound", "roofline µs", "predicted µs", "ratio", "total ms"):
        table.add_column(col, justify="left" if col in ("op", "bound") else "right")
    for r in ops.itertuples():
        table.add_row(r.op, str(int(r.count)), r.bound, f"{r.roofline_ms * 1e3:.3g}", f"{r.predicted_ms * 1e3:.3g}",
                      f"{r.predicted_ms / r.roofline_ms:.2f}" if r.roofline_ms > 0 else "–", f"{r.total_ms:.4g}")
    Console(width=max(Console().width, 100)).print(table)


@app.command()
def evaluate(
    profiles: Annotated[Path, typer.Option(help="Canonical profile table (.parquet or .csv), e.g. from `data ingest`.")],
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score the predictor (and the roofline baseline) on your own kernel measurements."""
    from features.canonical import read_table
    from predictor.errors import InputError
    from training.scoring import score_profiles

    table = read_table(profiles, validate=True)
    if table.empty:
        raise InputError(f"--profiles: {str(profiles)!r} has no valid rows")
    payload = score_profiles(table, _load_predictor(artifacts))
    if as_json:
        _print_json(payload)
        return
    typer.echo(f"{payload['rows']:,} rows: hybrid MdAPE {payload['hybrid']['mdape']:.1%} (p90 {payload['hybrid']['p90_ape']:.0%}), "
               f"roofline MdAPE {payload['roofline']['mdape']:.1%} (p90 {payload['roofline']['p90_ape']:.0%})")
    for group in ("by_op_kind", "by_gpu"):
        for key, v in payload[group].items():
            typer.echo(f"  {group[3:]} {key}: {v['rows']:,} rows, hybrid {v['hybrid']['mdape']:.1%}, "
                       f"roofline {v['roofline']['mdape']:.1%}")


@app.command()
def simulate(
    model: Annotated[str, typer.Option(help="Catalogue model, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=64, help="Tensor-parallel degree.")] = 1,
    dtype: Annotated[str, typer.Option(help="Precision preset or w<bits>a<bits>[kv<bits>].")] = "fp16",
    workload: Annotated[str, typer.Option(help="offline, poisson, gamma or trace.")] = "poisson",
    rate: Annotated[float | None, typer.Option(help="Arrival rate, requests/s (poisson, gamma).")] = None,
    cv: Annotated[float, typer.Option(help="Coefficient of variation of gamma inter-arrival gaps.")] = 1.0,
    trace: Annotated[str | None, typer.Option(help="Trace for lengths/arrivals: splitwise_conv, splitwise_code, "
                                                    "arxiv_summarization or a CSV file.")] = None,
    num_requests: Annotated[int | None, typer.Option(min=1, help="Requests to simulate (default: 1000, "
                                                                 "or the whole trace for --workload trace).")] = None,
    prompt_len: Annotated[int | None, typer.Option(min=1, help="Fixed prompt tokens (else from the trace).")] = None,
    output_len: Annotated[int | None, typer.Option(min=1, help="Fixed output tokens (else from the trace).")] = None,
    output_dist: Annotated[str | None, typer.Option(help="Sample output lengths from this model's measured "
                                                         "distribution (e.g. Llama-2-7b-chat-hf).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    max_num_seqs: Annotated[int, typer.Option(min=1, help="Most running requests.")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option(min=1, help="Token budget per iteration.")] = 2048,
    block_size: Annotated[int, typer.Option(min=1, help="Tokens per KV block.")] = 16,
    gpu_memory_utilization: Annotated[float, typer.Option(min=0.01, max=1.0)] = 0.9,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill")] = True,
    policy: Annotated[str, typer.Option(help="continuous (iteration-level) or static (request-level) batching.")] = "continuous",
    roofline_only: Annotated[bool, typer.Option("--roofline", help="Use roofline-only iteration times.")] = False,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="TTFT SLO for goodput (ms).")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="TPOT SLO for goodput (ms).")] = None,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file with your own GPU specs.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for requests.parquet, summary.json, trace.json and plots.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Simulate a vLLM-like engine serving a workload: TTFT/TPOT/E2E distributions, throughput, goodput."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from predictor import Predictor, get_gpu
    from predictor.atomic import atomic_write
    from scheduler.engine import EngineConfig, Simulator
    from scheduler.workload import build_workload

    if num_requests is None and workload != "trace":
        num_requests = 1000
    wl = build_workload(workload, num_requests, rate=rate, cv=cv, trace=trace, prompt_len=prompt_len,
                        output_len=output_len, output_dist=output_dist, seed=seed)
    config = EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                          block_size=block_size, gpu_memory_utilization=gpu_memory_utilization,
                          chunked_prefill=chunked_prefill, policy=policy)
    predictor = Predictor.roofline_only() if roofline_only else _load_predictor(artifacts)
    sim = Simulator(predictor, model, get_gpu(gpu, gpu_file), tp, dtype, config)
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, disable=as_json) as bar:
        task = bar.add_task("sim", total=len(wl))
        result = sim.run(wl, record_iterations=out is not None or not as_json,
                         progress=lambda done, total: bar.update(task, completed=done))
    summary = result.summary(slo_ttft_ms, slo_tpot_ms)
    if out is not None:
        result.write_requests(out / "requests.parquet")
        result.chrome_trace(out / "trace.json")
        result.plots(out)
        atomic_write(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"{summary['finished']:,} of {summary['requests']:,} requests finished ({summary['rejected']} rejected) "
               f"in {summary['makespan_s']:.1f} s simulated; {summary['output_tokens_per_s']:.0f} output tokens/s, "
               f"{summary['requests_per_s']:.2f} requests/s")
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        v = summary[key]
        typer.echo(f"  {key[:-3].upper():5s} p50 {v['p50']:10.1f} ms   p90 {v['p90']:10.1f} ms   p99 {v['p99']:10.1f} ms")
    if "kv_utilization" in summary:
        typer.echo(f"  KV cache {summary['kv_utilization']['mean']:.0%} mean / {summary['kv_utilization']['max']:.0%} max of "
                   f"{summary['kv_blocks']:,} blocks; batch {summary['batch_size']['mean']:.1f} mean, "
                   f"{summary['batch_size']['max']} max; {summary['preemptions']} preemptions")
    if slo_ttft_ms is not None or slo_tpot_ms is not None:
        typer.echo(f"  SLO attainment {summary['slo']['attainment']:.1%}, goodput "
                   f"{summary['slo']['goodput_requests_per_s']:.2f} requests/s")
    if out is not None:
        typer.echo(f"  wrote {out}/requests.parquet, summary.json, trace.json, latency_cdf.png, batch_kv_over_time.png")


@app.command()
def plan(
    app_file: Annotated[Path, typer.Argument(metavar="APP.yaml", help="Application spec (see examples/).")],
    strategy: Annotated[str | None, typer.Option(help="beam or greedy (default: the spec's).")] = None,
    samples: Annotated[int | None, typer.Option(min=1, max=100, help="Output-length samples K.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Random seed (default: the spec's).")] = None,
    time_budget_s: Annotated[float | None, typer.Option(min=0.1, help="Search time budget, seconds.")] = None,
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
    planner = Planner(application, _load_predictor(artifacts), samples=samples, seed=seed, strategy=strategy,
                      time_budget_s=time_budget_s)
    from rich.console import Console

    with Console(stderr=True).status("planning (sampling then simulation)…", spinner="dots") as _:
        result = planner.run()
    if gantt is not None:
        from scheduler.gantt import gantt_chart

        gantt_chart(result.execution, application.num_gpus, gantt,
                    f"{application.spec.name}: {result.strategy} plan, makespan {result.chosen.mean_s:.0f} s "
                    f"(sample 1)")
    payload = result.to_dict()
    payload["application"] = {"name": application.spec.name, "topology": application.spec.topology,
                              "llms": application.names, "gpus": application.num_gpus, "gpu": application.gpu.name,
                              "samples": planner.samples_k}
    if as_json:
        _print_json(payload)
        return
    c = result.chosen
    typer.echo(f"{application.spec.name}: {len(application.names)} LLMs on {application.num_gpus}× {application.gpu.name}")
    typer.echo(f"chosen ({result.strategy}): makespan {c.mean_s:.1f} s (p10 {c.p10_s:.1f} – p90 {c.p90_s:.1f} s over "
               f"{planner.samples_k} samples); search {result.search_time_s:.1f} s, {result.evaluations} plan evaluations, "
               f"{result.simulations} engine simulations{' (time budget reached)' if result.budget_exhausted else ''}")
    for i, stage in enumerate(c.plan.stages, 1):
        parts = ", ".join(f"{p.llm} {p.config} on GPUs {','.join(map(str, p.gpus))}" for p in stage.placements)
        typer.echo(f"  stage {i}: {parts}")
    for name, est in result.baselines.items():
        typer.echo(f"{name:13s} {est.mean_s:10.1f} s   (chosen plan is {est.mean_s / c.mean_s:.2f}x faster)")
    if gantt is not None:
        typer.echo(f"Gantt chart written to {gantt}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning bad input into one line on stderr and exit code 2."""
    from pydantic import ValidationError
    from typer.exceptions import Abort, Exit, TyperException

    from predictor.errors import InputError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="inference-sim", standalone_mode=False)
    except Exit as exc:
        return exc.exit_code
    except Abort:
        typer.echo("error: interrupted", err=True)
        return 130
    except TyperException as exc:  # usage errors: unknown option, missing or out-of-range value
        if debug:
            raise
        text = _one_line(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        if text:  # empty for "no arguments: show help", which click already printed
            typer.echo(f"error: {text}", err=True)
        return EXIT_BAD_INPUT
    except (InputError, ValidationError) as exc:
        if debug:
            raise
        message = exc if isinstance(exc, InputError) else exc.errors()[0].get("msg", exc)
        typer.echo(f"error: {_one_line(message)}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 — last resort: one line, traceback only with --debug
        if debug:
            raise
        typer.echo(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); rerun with --debug for details",
                   err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
