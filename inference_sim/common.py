"""Shared pieces of the ``inference-sim`` command line: the Typer app, output helpers, argument parsing.

Every command prints data as a rich table, or as JSON with ``--json``. Bad input exits with code 2
and a one-line ``error: …`` message on stderr; ``--debug`` (anywhere on the line) shows the full
traceback instead.
"""

from __future__ import annotations

import json
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


def _efficiency_line(label: str, m: dict, distance: bool = True) -> str:
    """One line of efficiency metrics (see :mod:`predictor.efficiency`)."""
    text = (f"{label}: MFU {m['mfu']:.1%}, MBU {m['mbu']:.1%} ({m['attained_tflops']:.1f} TFLOP/s, "
            f"{m['attained_gbps']:.0f} GB/s)")
    if distance:
        text += f", {m['roofline_distance']:.2f}× roofline time"
    shares = ", ".join(f"{k} {m[f'{k}_share']:.0%}" for k in ("compute", "memory", "network", "overhead")
                       if m.get(f"{k}_share", 0.0) >= 0.005)
    text += f"; bound by {m['bottleneck']} (time at peak: {shares})"
    by_group = sorted(m.get("time_by_group", {}).items(), key=lambda kv: -kv[1])[:3]
    if by_group:
        text += "; time spent in " + ", ".join(f"{g} {v:.0%}" for g, v in by_group)
    return text


def _efficiency_lines(eff: dict, indent: str = "  ") -> list[str]:
    """Per phase (and overall when both ran) lines for a run's or an iteration's efficiency report."""
    phases = [p for p in ("prefill", "decode") if p in eff]
    lines = [indent + _efficiency_line(f"{p} ({eff[p]['time_ms'] / max(eff['overall']['time_ms'], 1e-12):.0%} of "
                                       f"busy time)" if len(phases) > 1 else p, eff[p]) for p in phases]
    if len(phases) > 1:
        lines.insert(0, indent + _efficiency_line("overall", eff["overall"]))
    return lines


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



def _load_predictor(artifacts: str | None):
    from predictor import Predictor

    return Predictor.load(artifacts)


def _fitting_config(model: str, gpu: str, gpu_file: Path | None, tp: int, dtype: str, sequences: int,
                    sequence_tokens: int, sequences_flag: str):
    """(model spec, GPU spec) after checking the model fits at this TP and precision with the per-sequence state
    (windows, recurrent states) of the batch's own ``sequences`` of up to ``sequence_tokens`` tokens (else an
    input error naming ``sequences_flag``)."""
    from predictor import get_gpu
    from predictor.memory import plan_memory
    from predictor.models import get_model
    from predictor.precision import parse_dtype

    spec, gpu_spec = get_model(model), get_gpu(gpu, gpu_file)
    plan_memory(spec, gpu_spec, tp, parse_dtype(dtype), max_num_seqs=max(sequences, 1),
                sequence_tokens=max(sequence_tokens, 1), sequences_flag=sequences_flag)
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


def _default_tracking_uri() -> str:
    from training.tracking import default_tracking_uri

    return default_tracking_uri()


# --- precision (shared by every command that takes --model) ----------------------------------------
DTypeOption = Annotated[str | None, typer.Option(
    "--dtype", help="fp16, bf16, fp8, fp8_block, int8, w8a16, w4a16, nvfp4, nvfp4-a16, mxfp4, mxfp4-a8 (any with "
    "-kv8) or w<bits>a<bits>[kv<bits>] (default: the checkpoint's own precision: a catalogue name's checkpoint, e.g. "
    "fp8 for DeepSeek-V3 and a -NVFP4 name's nvfp4, or a config.json's quantization_config; else fp16).")]


# --- the serving framework's engine profile (simulate, advise) ----------------------------------------------
FrameworkOption = Annotated[str, typer.Option(
    "--framework", help="Engine profile: vllm, sglang, trtllm (per-step costs learned from measured serving runs, with "
    "the kernels they were fitted on: the pooled model's) or legacy (the Vidur-era overhead fit, pooled kernels).")]
MaxNumSeqsOption = Annotated[int | None, typer.Option(
    "--max-num-seqs", min=1, help="Most running requests (default: the framework's; legacy 256).")]
MaxBatchedTokensOption = Annotated[int | None, typer.Option(
    "--max-num-batched-tokens", min=1, help="Token budget per iteration (default: the framework's; legacy 2048).")]


# --- parallel layout options (shared by every command that takes --tp) ------------------------------
PipelineOption = Annotated[int, typer.Option("--pp", min=1, max=1024, help="Pipeline-parallel stages.")]
ExpertOption = Annotated[int, typer.Option("--ep", min=1, max=1024, help="Expert-parallel degree (MoE models).")]
DPAttentionOption = Annotated[int, typer.Option(
    "--dp-attention", min=1, max=1024, help="Attention data-parallel replicas (SGLang/TRT-LLM style; GPUs per "
                                            "stage = tp × dp-attention).")]
MoETPOption = Annotated[int, typer.Option(
    "--moe-tp", min=0, max=1024, help="Tensor-parallel split of each expert (0: tp × dp-attention / ep).")]


def parallel_layout(tp: int, pp: int = 1, ep: int = 1, dp_attention: int = 1, moe_tp: int = 0):
    """``tp`` itself for plain tensor parallelism, else a :class:`~predictor.parallel.ParallelConfig`."""
    if pp == 1 and ep == 1 and dp_attention == 1 and moe_tp in (0, tp):
        return tp
    from predictor.parallel import ParallelConfig

    return ParallelConfig(tp=tp, pp=pp, ep=ep, dp_attention=dp_attention, moe_tp=moe_tp)


def layout_text(layout) -> str:
    """``tp=8`` for an int, else the parallel config's label."""
    return f"tp={layout}" if isinstance(layout, int) else layout.label
