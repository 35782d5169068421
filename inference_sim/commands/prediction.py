"""`inference-sim estimate | predict | evaluate`: the Predictor from the command line."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.common import app


def model_and_dtype(model: str, dtype: str | None):
    """(model spec, dtype to cost) for a command's ``--model`` and ``--dtype``. Without ``--dtype``: for a
    catalogue name, the precision of the checkpoint it names (:func:`predictor.checkpoints.checkpoint_dtype`:
    DeepSeek-V3 fp8, gpt-oss MXFP4, a ``…-NVFP4`` name nvfp4), else fp16; for a config.json, its
    ``quantization_config``, where a contradiction with ``--dtype`` is one ``warning:`` line on stderr (see
    :func:`predictor.validate.resolve_dtype`)."""
    import warnings

    from predictor.checkpoints import checkpoint_dtype
    from predictor.models import get_model, resolve_model_name
    from predictor.validate import QuantizationWarning, resolve_dtype

    with warnings.catch_warnings():  # the CLI says it in its own words below
        warnings.simplefilter("ignore", QuantizationWarning)
        spec = get_model(model)
    if resolve_model_name(model) is not None:  # one architecture, several checkpoints: a given --dtype is a choice
        own = checkpoint_dtype(model) if dtype is None else None
        if own is not None:
            typer.echo(f"note: {model} is costed at its checkpoint's precision, --dtype {own} (pass --dtype to "
                       "choose another)", err=True)
        return spec, dtype or own or "fp16"
    dtype, note = resolve_dtype(spec, dtype)
    if note:
        typer.echo(f"warning: {note}", err=True)
    return spec, dtype


@app.command()
def estimate(
    model: Annotated[str, typer.Option(help="Catalogue model, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=1024, help="Tensor-parallel degree.")] = 1,
    pp: common.PipelineOption = 1,
    ep: common.ExpertOption = 1,
    dp_attention: common.DPAttentionOption = 1,
    moe_tp: common.MoETPOption = 0,
    dtype: common.DTypeOption = None,
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

    tp = common.parallel_layout(tp, pp, ep, dp_attention, moe_tp)
    spec, dtype = model_and_dtype(model, dtype)
    spec, gpu_spec = common._fitting_config(spec, gpu, gpu_file, tp, dtype, batch_size, input_len + output_len,
                                            "--batch-size")
    args = dict(tp=tp, dtype=dtype, batch_size=batch_size, input_len=input_len, output_len=output_len,
                max_num_batched_tokens=max_num_batched_tokens)
    hybrid = common._load_predictor(artifacts).estimate(spec, gpu_spec, **args)
    roofline = Predictor.roofline_only().estimate(spec, gpu_spec, **args)
    from dataclasses import asdict

    inputs = {"model": spec.name, "gpu": gpu_spec.name, **args, "artifacts": artifacts,
              "tp": tp if isinstance(tp, int) else asdict(tp)}
    payload = {"inputs": inputs, **hybrid.to_dict(), "roofline": roofline.to_dict()}
    if as_json:
        common._print_json(payload)
        return
    typer.echo(f"{spec.name} on {gpu_spec.name} ({common.layout_text(tp)}, {dtype}), batch {batch_size} × {input_len} in / {output_len} out")
    for label, e in (("hybrid", hybrid), ("roofline", roofline)):
        typer.echo(f"  {label:9s} TTFT {e.ttft_ms:10.2f} ms   TPOT {e.tpot_ms:8.3f} ms   E2E {e.e2e_ms:11.2f} ms   "
                   f"{e.output_tokens_per_s:10.1f} output tokens/s")


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="Catalogue model, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=1024, help="Tensor-parallel degree.")] = 1,
    pp: common.PipelineOption = 1,
    ep: common.ExpertOption = 1,
    dp_attention: common.DPAttentionOption = 1,
    moe_tp: common.MoETPOption = 0,
    dtype: common.DTypeOption = None,
    prefill: Annotated[str, typer.Option(help="Prefill chunks NEW[:CONTEXT], comma-separated (e.g. 512:0,128:1024).")] = "",
    decode: Annotated[str, typer.Option(help="Cached context of each decoding sequence, comma-separated.")] = "",
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file with your own GPU specs.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    kernels: Annotated[str | None, typer.Option(
        "--kernels", help="Kernel family: vllm, sglang or trtllm, that framework's own kernels where the model applies "
        "its family (docs/model.md, 'Kernel families'). Default: the pooled model, which serving simulations use.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Predicted time of one iteration, with the per-op breakdown (roofline vs predicted)."""
    from predictor.batch import from_lists
    from predictor.errors import InputError
    from scheduler.engine_profiles import framework_name

    family = framework_name(kernels, "--kernels") if kernels is not None else None

    tp = common.parallel_layout(tp, pp, ep, dp_attention, moe_tp)
    chunks, contexts = common._parse_prefill(prefill), common._parse_decode(decode)
    if from_lists(chunks, contexts).tokens[0] == 0:  # checks every chunk and context before any work
        raise InputError("batch: empty iteration; give at least one --prefill chunk or --decode sequence")
    spec, dtype = model_and_dtype(model, dtype)
    longest = max([new + ctx for new, ctx in chunks] + [ctx + 1 for ctx in contexts])
    spec, gpu_spec = common._fitting_config(spec, gpu, gpu_file, tp, dtype, len(chunks) + len(contexts), longest,
                                            "--prefill/--decode sequences")
    predictor = common._load_predictor(artifacts).for_framework(family)
    result = predictor.predict_iteration(spec, gpu_spec, tp, dtype, chunks, contexts)
    ops = result.ops
    efficiency = predictor.bind(spec, gpu_spec, tp, dtype).efficiency(
        len(chunks), sum(c[0] for c in chunks), sum(c[0] + c[1] for c in chunks), len(chunks), len(contexts),
        sum(contexts))
    payload = {"total_ms": result.total_ms, "kernel_ms": result.kernel_ms, "overhead_ms": result.overhead_ms,
               "roofline_ms": result.roofline_ms, "kernels": predictor.framework or "pooled", "efficiency": efficiency,
               "ops": [{"op": r.op, "op_kind": r.op_kind, "count": int(r.count) if r.count == int(r.count) else float(r.count), "bound": r.bound,
                        "roofline_ms": float(r.roofline_ms), "predicted_ms": float(r.predicted_ms),
                        "total_ms": float(r.total_ms)} for r in ops.itertuples()]}
    if as_json:
        common._print_json(payload)
        return
    from rich.console import Console
    from rich.table import Table

    whose = f" ({predictor.framework}'s)" if predictor.framework else ""
    table = Table(title=f"kernels{whose} {result.kernel_ms:.3f} ms + overhead {result.overhead_ms:.3f} ms = "
                        f"{result.total_ms:.3f} ms (roofline {result.roofline_ms:.3f} ms)", title_justify="left")
    for col in ("op", "×", "bound", "roofline µs", "predicted µs", "ratio", "total ms"):
        table.add_column(col, justify="left" if col in ("op", "bound") else "right")
    for r in ops.itertuples():
        table.add_row(r.op, str(int(r.count)), r.bound, f"{r.roofline_ms * 1e3:.3g}", f"{r.predicted_ms * 1e3:.3g}",
                      f"{r.predicted_ms / r.roofline_ms:.2f}" if r.roofline_ms > 0 else "–", f"{r.total_ms:.4g}")
    Console(width=max(Console().width, 100)).print(table)
    typer.echo("Efficiency per GPU:")
    for line in common._efficiency_lines(efficiency):
        typer.echo(line)


@app.command()
def evaluate(
    profiles: Annotated[Path | None, typer.Option(help="Canonical profile table (.parquet or .csv), e.g. from "
                                                       "`data ingest`.")] = None,
    serving: Annotated[Path | None, typer.Option(help="Measured serving runs: a silicon CSV (aiconfigurator schema, "
                                                      "agg and disagg rows), a `vllm bench serve --save-result` "
                                                      "JSON, `sglang.bench_serving` JSON Lines (.jsonl), or a "
                                                      "folder of such files.")] = None,
    framework: Annotated[str | None, typer.Option(help="--serving: predict every run as this framework (vllm, "
                                                       "sglang, trtllm) instead of its own, or with the Vidur-era "
                                                       "engine (legacy).")] = None,
    gpu: Annotated[str | None, typer.Option(help="--serving JSON: the GPU (system) when the file does not say.")] = None,
    tp: Annotated[int | None, typer.Option(min=1, max=1024, help="--serving JSON: tensor-parallel degree when the "
                                                                 "file does not say.")] = None,
    out: Annotated[Path | None, typer.Option(help="--serving: write per-run predictions (CSV) here.")] = None,
    n_jobs: Annotated[int | None, typer.Option(min=1, max=64, help="--serving: worker processes (default: the "
                                                                    "CPUs this process may use).")] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, max=65_536, help="--serving: runs with more clients are "
                                                 "skipped (a run simulates about twice its clients in requests, so "
                                                 "its time grows with them).")] = 4096,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score the predictor (and the roofline baseline) on your own kernel measurements (--profiles) or on
    measured serving runs, simulated closed-loop (--serving)."""
    from predictor.errors import InputError

    if (profiles is None) == (serving is None):
        raise InputError("--profiles / --serving: give exactly one of them")
    if serving is not None:
        _evaluate_serving(serving, framework, gpu, tp, out, n_jobs, artifacts, as_json, max_concurrency)
        return
    from features.canonical import read_table
    from features.schema import validate
    from training.scoring import score_profiles

    table, report = validate(read_table(profiles), source=str(profiles))
    if table.empty:
        rejected = ", ".join(f"{k} {v:,}" for k, v in report.to_dict()["rejected"].items()) or "the file has no rows"
        raise InputError(f"--profiles: {str(profiles)!r} has no valid rows (rejected: {rejected})")
    payload = score_profiles(table, common._load_predictor(artifacts))
    if as_json:
        common._print_json(payload)
        return
    typer.echo(f"{payload['rows']:,} rows: hybrid MdAPE {payload['hybrid']['mdape']:.1%} (p90 {payload['hybrid']['p90_ape']:.0%}), "
               f"roofline MdAPE {payload['roofline']['mdape']:.1%} (p90 {payload['roofline']['p90_ape']:.0%})")
    for group in ("by_op_kind", "by_gpu"):
        for key, v in payload[group].items():
            typer.echo(f"  {group[3:]} {key}: {v['rows']:,} rows, hybrid {v['hybrid']['mdape']:.1%}, "
                       f"roofline {v['roofline']['mdape']:.1%}")


def _pct(value) -> str:
    return "—" if value is None else f"{value:.1%}"


@contextlib.contextmanager
def _serving_progress():
    """``progress(step, done, total)`` for :func:`scheduler.serving_eval.predict_serving`: a transient bar per step
    on a terminal's stderr, else plain ``evaluate --serving: <step>: done/total`` lines (a log, CI, a pipe)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from inference_sim.progress import ProgressLines

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        steps: dict = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in steps:
                steps[step] = (bar.add_task(step, total=total),
                               ProgressLines(f"evaluate --serving: {step}", enabled=not console.is_terminal))
            task, lines = steps[step]
            bar.update(task, completed=done, total=total)
            lines.update(done, total)

        yield progress


def _evaluate_serving(path: Path, framework, gpu, tp, out, n_jobs, artifacts, as_json, max_concurrency) -> None:
    """``evaluate --serving``: simulate each measured run closed-loop and score TTFT / TPOT."""
    from features.silicon import read_serving_results
    from predictor.atomic import atomic_write
    from scheduler.engine_profiles import get_profile, load_profiles
    from scheduler.serving_eval import predict_serving, score_serving

    table = read_serving_results(path, gpu=gpu, tp=tp)
    guessed = int((~table["pool_workers_given"].astype(bool)).sum())
    if guessed:
        warnings.warn(f"{guessed:,} disaggregated runs give no prefill_num_workers or decode_num_workers: each of "
                      "their pools is simulated as one worker (docs/serving-accuracy.md scores these runs apart)",
                      stacklevel=1)
    profiles = load_profiles()
    calibration = None
    if framework is not None:
        profile = get_profile(framework, profiles=profiles)
        profiles = {name: profile for name in ("vllm", "sglang", "trtllm")}
    if framework is None or profile.framework != "legacy":
        from scheduler.serving_model import CALIBRATION_PATH, ServingCalibration

        calibration = ServingCalibration.load() if CALIBRATION_PATH.exists() else None
    from predictor.cpus import available_cpus

    n_jobs = n_jobs or min(available_cpus(), max(1, len(table)))
    predictor = common._load_predictor(artifacts) if n_jobs == 1 else None
    with _serving_progress() as progress:
        predictions = predict_serving(table, artifacts=artifacts, predictor=predictor, profiles=profiles,
                                      n_jobs=n_jobs, calibration=calibration,
                                      framework=None if calibration is None else framework,
                                      max_concurrency=max_concurrency, progress=progress)
    payload = score_serving(predictions)
    if out is not None:
        atomic_write(out, predictions.to_csv(index=False))
    if as_json:
        common._print_json(payload)
        return
    skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(payload["skipped"].items())) or "none"
    typer.echo(f"{payload['predicted']:,} of {payload['rows']:,} runs predicted (skipped: {skipped})")
    roof = payload["roofline"]
    for metric in ("ttft", "tpot"):
        typer.echo(f"  {metric.upper()} MdAPE {_pct(payload[metric]['mdape'])} (p90 {_pct(payload[metric]['p90_ape'])}); "
                   f"roofline {_pct(roof.get(metric, {}).get('mdape'))} (p90 {_pct(roof.get(metric, {}).get('p90_ape'))})")
    for group in ("by_system", "by_backend", "by_model"):
        for key, v in payload[group].items():
            typer.echo(f"  {group[3:]} {key}: {v['rows']:,} runs, TTFT {_pct(v['ttft']['mdape'])}, "
                       f"TPOT {_pct(v['tpot']['mdape'])}")
    if payload.get("in_calibration"):
        rest = payload["not_in_calibration"]
        others = (f"; the other {rest['rows']:,} score TTFT {_pct(rest['ttft']['mdape'])}, TPOT "
                  f"{_pct(rest['tpot']['mdape'])}" if rest["rows"] else "")
        typer.echo(f"  note: {payload['in_calibration']:,} of these runs were in the serving calibration's fit, so "
                   f"their scores are in-sample{others} (held-out accuracy: docs/serving-accuracy.md)")
    if payload.get("anchored"):
        typer.echo(f"  {payload['anchored']:,} runs were anchored to the calibration's measurements of the same "
                   "configuration on a sibling GPU (scheduler/serving_anchors.py)")
    if payload.get("bounded"):
        typer.echo(f"  {payload['bounded']:,} runs on a GPU outside the calibration's fit were kept no slower than "
                   "its prediction on a fitted GPU theirs dominates (scheduler/serving_bounds.py)")
    if out is not None:
        typer.echo(f"  wrote {out}")
