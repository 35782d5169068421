"""Workloads, the engine simulator and the multi-LLM planner."""
