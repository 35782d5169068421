"""`inference-sim roofline`: ideal op-by-op time of a prefill iteration and a decode step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inference_sim import common
from inference_sim.common import app


@app.command()
def roofline(
    model: Annotated[str, typer.Option(help="Catalogue model name, HF id, or path to a config.json.")],
    gpu: Annotated[str, typer.Option(help="Catalogue GPU name (e.g. a100-80gb) or a name in --gpu-file.")],
    tp: Annotated[int, typer.Option(min=1, max=1024, help="Tensor-parallel degree.")] = 1,
    pp: common.PipelineOption = 1,
    ep: common.ExpertOption = 1,
    dp_attention: common.DPAttentionOption = 1,
    moe_tp: common.MoETPOption = 0,
    dtype: common.DTypeOption = None,
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

    from inference_sim.commands.prediction import model_and_dtype

    layout = common.parallel_layout(tp, pp, ep, dp_attention, moe_tp)
    _, dtype = model_and_dtype(model, dtype)
    report = roofline_report(
        model, gpu, tp=layout, dtype=dtype, batch_size=batch_size, input_len=input_len, decode_context=decode_context,
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
        common._print_json(report)
        return
    from rich.console import Console

    console = Console(width=max(Console().width, 120))
    spec = report["model_spec"]
    layout_text = " ".join(f"{k}={v}" for k, v in report["parallel"].items() if k == "tp" or v not in (1, 0)
                           and k not in ("moe_tp", "micro_batches"))
    console.print(f"[bold]{report['model']}[/] ({spec['params_total'] / 1e9:.1f}B params, "
                  f"{spec['params_active'] / 1e9:.1f}B active) on [bold]{report['gpus']}× {report['gpu']}[/] · "
                  f"{layout_text} · {report['dtype']} · "
                  f"{report['attention']} attention · peak {report['gpu_spec']['peak_tflops']:.0f} TFLOP/s · "
                  f"{report['gpu_spec']['hbm_bandwidth_gbps']:.0f} GB/s · ridge "
                  f"{report['gpu_spec']['ridge_flops_per_byte']:.0f} FLOP/B")
    console.print(common._ops_table(f"Prefill: {batch_size} × {input_len} tokens", report["prefill"]))
    console.print(common._ops_table(f"Decode step: {batch_size} seqs at context {report['decode_context']}", report["decode"]))
    for phase in ("prefill", "decode"):
        typer.echo(common._efficiency_line(f"At the roofline, {phase}", report[phase]["efficiency"], distance=False))
    mem = report["memory"]
    console.print(
        f"Memory per GPU: weights {common._fmt_bytes(mem['weights_bytes'])}, workspace "
        f"{common._fmt_bytes(mem['activation_bytes'] + mem['overhead_bytes'])}, KV cache {common._fmt_bytes(mem['kv_cache_bytes'])} "
        f"= {mem['max_tokens']:,} tokens ({common._fmt_bytes(mem['kv_bytes_per_token'])}/token); "
        f"{mem['max_sequences_at_context']:,} sequences at this context"
    )
    if plot is not None:
        console.print(f"Roofline chart written to {plot}")
