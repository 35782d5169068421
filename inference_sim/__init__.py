"""inference-sim: LLM inference latency prediction (roofline + learned residual) and workload planning."""

__version__ = "0.1.0"
