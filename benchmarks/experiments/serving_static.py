"""The published static-batch runs (Splitwise: ``docs/validation.md``) re-scored with each framework's engine
profile — a section of ``docs/serving-accuracy.md`` (written by ``serving_accuracy.py``).

A static batch is ``batch`` prompts of ``prompt`` tokens prefilled together (in chunks of the framework's token
budget, as its scheduler would), then ``output − 1`` decode steps of the whole batch. Each framework's step time
is its fitted profile's (:class:`scheduler.engine_profiles.EngineProfile`: scaled kernels and roofline, per-step
overhead, CUDA-graph padding of decode batches). The profiles are fitted on the silicon serving runs only, never
on Splitwise, so every row here is held out. Splitwise's own serving stack is none of the three frameworks:
this shows what each of today's stacks' fitted step costs would predict for its measurements, beside the hybrid
predictor with the Vidur-era overhead (``hybrid``) and the roofline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from predictor.predictor import static_prefill_batch
from training.metrics import error_stats
from training.validation import predict_splitwise, splitwise_spec


def profile_estimate(bound, profile, batch: int, prompt: int, output: int) -> tuple[float, float]:
    """(TTFT ms, TPOT ms) of a static batch with ``bound = profile.apply(predictor.bind(...))``."""
    prefill = static_prefill_batch(batch, prompt, profile.max_num_batched_tokens)
    ttft = sum(bound.iteration_ms(int(chunks), int(new), int(kv), int(samples), 0, 0) for chunks, new, kv, samples in
               zip(prefill.prefill_seqs, prefill.prefill_tokens, prefill.prefill_kv_tokens, prefill.sample_tokens,
                   strict=True))
    steps = output - 1
    tpot = float(bound.decode_steps_ms(batch, batch * prompt, steps).mean()) if steps > 0 else float("nan")
    return float(ttft), tpot


def rescore(predictor, profiles: dict) -> pd.DataFrame:
    """Every Splitwise row with its measured times, ``hybrid_*``, ``roofline_*`` and ``{framework}_*`` (ms)."""
    from features.reference_data import read_splitwise
    from predictor import Predictor

    table = read_splitwise()
    pred = predict_splitwise(predictor, Predictor.roofline_only(), table)
    spec = splitwise_spec(table)
    for name, profile in sorted(profiles.items()):
        bounds: dict = {}
        values = []
        for r in pred.itertuples():
            key = (r.gpu, r.tp)
            if key not in bounds:
                bounds[key] = profile.apply(predictor.bind(spec, r.gpu, r.tp, "fp16"))
            values.append(profile_estimate(bounds[key], profile, r.batch, r.prompt, r.output))
        pred[f"{name}_ttft_ms"], pred[f"{name}_tpot_ms"] = np.array(values).T
    return pred


def static_batch_lines(predictor, profiles: dict) -> list[str]:
    """The section: MdAPE / p90 APE per method, overall and by GPU."""
    pred = rescore(predictor, profiles)
    methods = [("hybrid", "hybrid (Vidur-era overhead)"), ("roofline", "roofline only"),
               *((name, f"{name} profile") for name in sorted(profiles))]

    def cell(frame, method, metric):
        s = error_stats(frame[f"{method}_{metric}_ms"], frame[f"{metric}_ms"])
        return f"{s['mdape']:.1%} / {s['p90_ape']:.0%}"

    prose = __doc__.split("\n\n", 1)[1].strip().replace("``", "`").replace(":class:", "")
    lines = ["## Static-batch runs (Splitwise), re-scored per framework", "", prose, "",
             f"{len(pred)} runs (Llama-2-70B fp16, TP 2/4/8 on A100-80GB and H100). MdAPE / p90 APE:", "",
             "| method | TTFT all | TPOT all | " + " | ".join(f"TPOT {g}" for g in sorted(pred["gpu"].unique()))
             + " | median predicted / measured TPOT |",
             "|---|---|---|" + "---|" * pred["gpu"].nunique() + "---|"]
    for method, title in methods:
        by_gpu = [cell(g, method, "tpot") for _, g in pred.groupby("gpu", sort=True)]
        ratio = float(np.median(pred[f"{method}_tpot_ms"] / pred["tpot_ms"]))
        lines.append(f"| {title} | {cell(pred, method, 'ttft')} | {cell(pred, method, 'tpot')} | "
                     + " | ".join(by_gpu) + f" | {ratio:.2f} |")
    return lines + [""]
