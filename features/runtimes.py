"""Serving runtimes whose kernels the residual model's kernel families tell apart.

The aiconfigurator kernel tables were measured under three serving runtimes, each dispatching to its own kernels
for the same op (FlashInfer / FlashAttention builds, TRT-LLM's own attention and fused-MoE kernels, DeepGEMM, ...):
the same shape on the same GPU differs between runtimes by a median 15-30% for attention and MoE. A row's
runtime is the first part of its ``framework`` (``sglang-0.5.10`` → ``sglang``); Vidur's, NCCL's and the
synthetic rows belong to none.
"""

from __future__ import annotations

import numpy as np

RUNTIME_CODES = {"vllm": 0, "sglang": 1, "trtllm": 2}
RUNTIME_FEATURE = "runtime_code"
NO_RUNTIME = -1


def runtime_codes(frameworks) -> np.ndarray:
    """Code of each ``framework`` value's runtime (:data:`RUNTIME_CODES`), :data:`NO_RUNTIME` for any other."""
    names = np.asarray(frameworks, dtype=object).astype(str)
    runtime = np.char.partition(names, "-")[:, 0] if len(names) else names
    codes = np.full(len(names), NO_RUNTIME, dtype=np.int64)
    for name, code in RUNTIME_CODES.items():
        codes[runtime == name] = code
    return codes
