"""Shared fixtures: simple GPUs with round numbers so hand-derived times are easy to check."""

from __future__ import annotations

import pytest

from predictor import Predictor
from predictor.gpus import GPUSpec, PeakTflops


@pytest.fixture(scope="session")
def hybrid() -> Predictor:
    """The shipped hybrid predictor, shared by every test module (its lookup tables are built once)."""
    return Predictor.load()


@pytest.fixture(scope="session")
def roofline() -> Predictor:
    """The roofline-only predictor, shared likewise."""
    return Predictor.roofline_only()


@pytest.fixture
def round_gpu() -> GPUSpec:
    """100 TFLOP/s fp16, 200 fp8, 1000 GB/s HBM, 100 GB/s link with 10 us latency."""
    return GPUSpec(name="round", peak_tflops=PeakTflops(fp16=100, bf16=100, fp8=200, int8=200),
                   hbm_bandwidth_gbps=1000, memory_gib=80, sm_count=100, l2_mb=50,
                   link_bandwidth_gbps=100, link_latency_us=10)


@pytest.fixture
def reference_gpu() -> GPUSpec:
    """The issue's reference machine: 312 TFLOP/s fp16, 2039 GB/s (an A100-80GB at efficiency 1)."""
    return GPUSpec(name="reference", peak_tflops=PeakTflops(fp16=312), hbm_bandwidth_gbps=2039,
                   memory_gib=80, sm_count=108, l2_mb=40, link_bandwidth_gbps=300)
