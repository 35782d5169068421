"""`inference-sim simulate`: the serving-engine simulator."""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.commands.prediction import model_and_dtype
from inference_sim.common import app

SIM_OUTPUTS = ("requests.parquet", "summary.json", "trace.json", "latency_cdf.png", "batch_kv_over_time.png")


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool):
    """A transient progress bar on stderr, yielding its ``progress(done, total)`` callback; with ``enabled`` false
    (``--json``) nothing is drawn, rich is not even imported, and the callback is None."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("sim", total=total)
        yield lambda done, _total: bar.update(task, completed=done)


@app.command()
def simulate(
    model: Annotated[str, typer.Option(help="Catalogue model, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=1024, help="Tensor-parallel degree.")] = 1,
    pp: common.PipelineOption = 1,
    ep: common.ExpertOption = 1,
    dp_attention: common.DPAttentionOption = 1,
    moe_tp: common.MoETPOption = 0,
    dtype: common.DTypeOption = None,
    workload: Annotated[str, typer.Option(help="offline, poisson, gamma, trace or concurrency (closed loop).")] = "poisson",
    concurrency: Annotated[int | None, typer.Option(help="Clients of a closed loop (--workload concurrency): each sends "
                                                         "its next request when its last one completes.")] = None,
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
    max_num_seqs: common.MaxNumSeqsOption = None,
    max_num_batched_tokens: common.MaxBatchedTokensOption = None,
    framework: common.FrameworkOption = "vllm",
    framework_version: Annotated[str | None, typer.Option(help="Framework version (recorded; one profile per "
                                                               "framework is fitted over the measured versions).")] = None,
    block_size: Annotated[int, typer.Option(min=1, help="Tokens per KV block.")] = 16,
    gpu_memory_utilization: Annotated[float | None, typer.Option(
        min=0.01, max=1.0, help="The framework's memory fraction: of all GPU memory (vllm, legacy; default 0.9), of "
                                "the memory free after loading (trtllm; default 0.9), or for weights and KV (sglang; "
                                "default its start-up rule).")] = None,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill")] = True,
    policy: Annotated[str | None, typer.Option(
        help="continuous (iteration-level, prefill chunks mixed with decodes), prefill_first (a prefill iteration "
             "pauses the decodes) or static (request-level) batching; default: the framework's (sglang: "
             "prefill_first).")] = None,
    kv_allocation: Annotated[str, typer.Option(help="paged (PagedAttention, default) or a contiguous reservation at "
                                                    "admission: contiguous (max_model_len slots per request), "
                                                    "contiguous_pow2 or contiguous_oracle (prompt + output).")] = "paged",
    kv_budget_tokens: Annotated[int | None, typer.Option(min=1, help="Keep at most this many KV tokens per sequence "
                                                                     "(ALISA/MorphKV-style eviction; memory and time "
                                                                     "only, accuracy out of scope).")] = None,
    roofline_only: Annotated[bool, typer.Option("--roofline", help="Use roofline-only iteration times.")] = False,
    slo_ttft_ms: Annotated[float | None, typer.Option(help="TTFT SLO for goodput (ms).")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(help="TPOT SLO for goodput (ms).")] = None,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file with your own GPU specs.")] = None,
    artifacts: Annotated[str | None, typer.Option(help="Artifact folder or MLflow URI (default: shipped).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for requests.parquet, summary.json, trace.json and plots "
                                                  "(an interrupted run writes to OUT/partial/).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace files in --out that this tool did not write.")] = False,
    iteration_log: Annotated[bool, typer.Option("--iteration-log/--no-iteration-log",
                                                help="Keep per-iteration records for trace.json and the batch/KV plot "
                                                     "(turn off for very long runs).")] = True,
    windowed: Annotated[bool, typer.Option("--windowed", help="Generate the workload in chunks and keep only requests "
                                                              "in flight: memory flat in --num-requests (poisson, "
                                                              "gamma, offline; percentiles within 0.3%; rows go to "
                                                              "--out as requests finish).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Simulate a vLLM-like engine serving a workload: TTFT/TPOT/E2E distributions, throughput, goodput.

    Requests the engine can never serve (prompt + output beyond the model's context, or more KV than the
    GPU holds) are rejected and counted by reason (``rejected_reasons``). When every request is rejected
    the summary is still printed and written, then the command exits with code 2 and an ``error:`` line.
    Metrics that cannot be computed (no finished request, no decode step) are ``null`` in JSON, each
    with its reason under ``null_reasons``.
    """
    from predictor import Predictor, get_gpu
    from predictor.atomic import atomic_write
    from predictor.output_dir import OutputFolder
    from scheduler.engine import Simulator
    from scheduler.workload import build_workload

    from predictor.errors import InputError

    for name, value in (("--slo-ttft-ms", slo_ttft_ms), ("--slo-tpot-ms", slo_tpot_ms)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"{name}: {value} is not allowed; give a finite number of milliseconds > 0")
    from scheduler.engine_profiles import get_profile

    profile = get_profile(framework, framework_version)
    # the framework's scheduler defaults, with what was given on the command line
    given = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
             "gpu_memory_utilization": gpu_memory_utilization, "policy": policy}
    config = profile.engine_config(block_size=block_size, chunked_prefill=chunked_prefill, kv_allocation=kv_allocation,
                                   kv_budget_tokens=kv_budget_tokens, **{k: v for k, v in given.items() if v is not None})
    if num_requests is None and workload != "trace":
        num_requests = 1000
    if windowed:
        from scheduler.workload_stream import stream_workload

        if concurrency is not None:
            raise InputError("--concurrency: only for --workload concurrency, which --windowed cannot stream")
        wl = stream_workload(workload, num_requests, rate=rate, cv=cv, trace=trace, prompt_len=prompt_len,
                             output_len=output_len, output_dist=output_dist, seed=seed)
    else:
        # closed-loop clients start together; a mixing engine's are spread out as in its steady state (a
        # prefill-first engine keeps them in step: scheduler.serving_eval)
        wl = build_workload(workload, num_requests, rate=rate, cv=cv, trace=trace, prompt_len=prompt_len,
                            output_len=output_len, output_dist=output_dist, seed=seed, concurrency=concurrency,
                            stagger=config.policy != "prefill_first")
    # roofline-only keeps its ideal times (no profile); legacy is the predictor's own overhead fit
    timed_by = None if roofline_only or profile.framework == "legacy" else profile
    predictor = Predictor.roofline_only() if roofline_only else common._load_predictor(artifacts)
    spec, dtype = model_and_dtype(model, dtype)
    layout = common.parallel_layout(tp, pp, ep, dp_attention, moe_tp)
    sim = Simulator(predictor, spec, get_gpu(gpu, gpu_file), layout, dtype, config, profile=timed_by)
    folder = OutputFolder(out, SIM_OUTPUTS, force=force) if out is not None else None
    with folder if folder is not None else contextlib.nullcontext() as staging:
        with _progress_bar(len(wl), enabled=not as_json) as progress:
            result = sim.run(wl, record_iterations=out is not None and iteration_log, progress=progress,
                             stream_requests_to=staging / "requests.parquet" if staging is not None else None,
                             slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms)
        summary = explained_summary(result, result.summary(slo_ttft_ms, slo_tpot_ms))
        summary["engine_profile"] = profile.to_dict() if timed_by is not None else {
            "framework": "legacy" if not roofline_only else "roofline"}
        if wl.concurrency is not None:
            from scheduler.serving_eval import closed_loop_summary

            summary["measurement_window"] = closed_loop_summary(result, wl.concurrency)
            if _calibrated_applies(profile, roofline_only, prompt_len, output_len, output_dist, trace):
                from scheduler.serving_eval import calibrated_run

                try:  # simulated at the framework's own defaults, which may not fit where the user's settings do
                    summary["calibrated"] = calibrated_run(predictor, spec, sim.bound.gpu, layout, dtype,
                                                           isl=prompt_len, osl=output_len, concurrency=wl.concurrency,
                                                           framework=profile.framework)
                except InputError as err:
                    summary["calibrated_skipped"] = str(err)
        if staging is not None:
            if iteration_log:
                result.chrome_trace(staging / "trace.json")
            result.plots(staging)
            atomic_write(staging / "summary.json", json.dumps(summary, indent=2, default=float, allow_nan=False) + "\n")
            out = folder.publish(partial=result.partial)
    if result.partial:
        typer.echo(f"interrupted: {summary['finished']:,} of {summary['requests']:,} requests finished; "
                   f"partial results{' written to ' + str(out) if out is not None else ''} (marked partial)", err=True)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=float, allow_nan=False))
        _exit_if_all_rejected(summary)
        return
    if summary["finished"] == 0:
        typer.echo(f"0 of {summary['requests']:,} requests finished ({summary['rejected']:,} rejected)")
        _print_rejections(summary)
        _exit_if_all_rejected(summary)
        if result.partial:
            raise typer.Exit(130)
        return
    typer.echo(f"{summary['finished']:,} of {summary['requests']:,} requests finished ({summary['rejected']} rejected) "
               f"in {summary['makespan_s']:.1f} s simulated; {_fmt(summary['output_tokens_per_s'], '.0f')} output tokens/s, "
               f"{_fmt(summary['requests_per_s'], '.2f')} requests/s")
    _print_rejections(summary)
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        v = summary[key]
        typer.echo(f"  {key[:-3].upper():5s} p50 {_fmt(v['p50'], '10.1f')} ms   p90 {_fmt(v['p90'], '10.1f')} ms   "
                   f"p99 {_fmt(v['p99'], '10.1f')} ms")
    if "kv_utilization" in summary:
        typer.echo(f"  KV cache {summary['kv_utilization']['mean']:.0%} mean / {summary['kv_utilization']['max']:.0%} max of "
                   f"{summary['kv_blocks']:,} blocks; batch {summary['batch_size']['mean']:.1f} mean, "
                   f"{summary['batch_size']['max']} max; {summary['preemptions']} preemptions")
        if kv_allocation != "paged" or kv_budget_tokens is not None:
            typer.echo(f"  KV waste (reserved slots holding no token) {summary['kv_waste']['mean']:.1%} time-weighted, "
                       f"{summary['kv_waste']['at_peak']:.1%} at peak reservation")
    mem = summary.get("meta", {}).get("memory")
    if mem:
        typer.echo(f"  Memory per GPU ({summary['meta']['gpus']} GPUs): weights {common._fmt_bytes(mem['weights_bytes'])}, "
                   f"workspace {common._fmt_bytes(mem['activation_bytes'] + mem['overhead_bytes'])}, KV cache "
                   f"{common._fmt_bytes(mem['kv_cache_bytes'])} ({common._fmt_bytes(mem['kv_bytes_per_token'])}/token); "
                   f"instance capacity {mem['max_tokens']:,} tokens")
        rule = {"total": "of all memory, less weights and workspace", "free": "of the memory free after loading",
                "static": "of all memory for weights and KV"}.get(mem.get("kv_memory", "total"))
        typer.echo(f"  KV cache sized as {framework}'s: {mem['gpu_memory_utilization']:.3g} {rule}")
        if mem.get("per_sequence_bytes"):
            where = ("taken from the KV cache as each sequence is admitted" if mem.get("state_on_demand")
                     else "reserved for every sequence --max-num-seqs admits")
            typer.echo(f"  Per-sequence state (windows, recurrent states): up to "
                       f"{common._fmt_bytes(mem['per_sequence_bytes'])} per sequence per GPU, {where}")
    if "measurement_window" in summary:
        win, delay = summary["measurement_window"], float(result.meta.get("client_delay_ms", 0.0))
        sent = f", {delay:.1f} ms of it before the engine admits the request" if delay > 0 else ""
        typer.echo(f"  As the benchmark client sees it (window of {win['requests']:,} requests, the first and last "
                   f"{win['concurrency']:,} dropped; TTFT from the send{sent}): mean TTFT {_fmt(win['mean_ttft_ms'], '.1f')} "
                   f"ms, mean TPOT {_fmt(win['mean_tpot_ms'], '.2f')} ms (the lines above count from the engine's queue)")
    if "calibrated_skipped" in summary:
        typer.echo(f"  {summary['calibrated_skipped']}")
    if "calibrated" in summary:
        cal = summary["calibrated"]
        typer.echo(f"  Calibrated for {cal['framework']} (learned from {cal['calibration_runs']:,} measured runs; see "
                   f"docs/serving-accuracy.md): mean TTFT {cal['mean_ttft_ms']:.1f} ms, mean TPOT "
                   f"{cal['mean_tpot_ms']:.2f} ms at {cal['concurrency']} clients"
                   + (" (kept no slower than on a measured GPU this one dominates)" if cal.get("bounded") else ""))
    if summary.get("efficiency"):
        typer.echo("  Efficiency per GPU (simulated iterations):")
        for line in common._efficiency_lines(summary["efficiency"], indent="    "):
            typer.echo(line)
    if slo_ttft_ms is not None or slo_tpot_ms is not None:
        typer.echo(f"  SLO attainment {_fmt(summary['slo']['attainment'], '.1%')}, goodput "
                   f"{_fmt(summary['slo']['goodput_requests_per_s'], '.2f')} requests/s")
    if out is not None:
        typer.echo(f"  wrote {out}/requests.parquet, summary.json, latency_cdf.png"
                   f"{', trace.json, batch_kv_over_time.png' if iteration_log else ''}")
    if result.partial:
        raise typer.Exit(130)  # 143 when SIGTERM caused it (see inference_sim.signals)


def _calibrated_applies(profile, roofline_only: bool, prompt_len, output_len, output_dist, trace) -> bool:
    """A closed loop of fixed-length requests on a fitted framework: what the serving calibration learned."""
    from scheduler.serving_model import CALIBRATION_PATH

    return (not roofline_only and profile.framework in ("vllm", "sglang", "trtllm") and prompt_len is not None
            and output_len is not None and output_dist is None and trace is None and CALIBRATION_PATH.exists())


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def explained_summary(result, summary: dict) -> dict:
    """``summary`` made JSON-safe: ``rejected_reasons`` (reason → requests), NaN/inf → null, and
    ``null_reasons`` (dotted key → why it has no value)."""
    if result.totals is not None:  # a windowed run: its rows are gone, its totals counted them
        counts = result.totals.reject_reasons
    else:
        status = result.columns["status_code"]
        counts = Counter(str(r) for r in result.columns["reject_reason"][status == 3])
    summary = {**summary, "rejected_reasons": {r: counts[r] for r in sorted(counts)}}
    from predictor.validate import json_safe

    nulls: list[str] = []
    clean = json_safe(summary, nulls=nulls)
    why = ("no request finished" if summary["finished"] == 0 else
           "no finished request has a value here (e.g. TPOT of one-token outputs, rates over a zero makespan)")
    clean["null_reasons"] = {path: why for path in nulls}
    return clean


def _print_rejections(summary: dict) -> None:
    if summary["rejected_reasons"]:
        typer.echo("  rejected: " + "; ".join(f"{n:,} {r}" for r, n in summary["rejected_reasons"].items()))


def _exit_if_all_rejected(summary: dict) -> None:
    """Exit 2 with an ``error:`` line when requests were given and every one was rejected."""
    if summary["requests"] and summary["rejected"] == summary["requests"]:
        reasons = "; ".join(f"{n:,} {r}" for r, n in summary["rejected_reasons"].items())
        typer.echo(f"error: workload: all {summary['requests']:,} requests were rejected ({reasons}); shorten the "
                   f"prompts/outputs or give the model more GPUs", err=True)
        raise typer.Exit(2)
