"""Shared helpers of the planner tests (:mod:`tests.test_planner`, :mod:`tests.test_planner_specs`)."""

from __future__ import annotations

from pathlib import Path

# Planner application specs among the shipped examples (examples/ also holds other kinds, e.g. sweep specs).
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")
                  if "\ntopology:" in p.read_text())


def ensemble_spec(count: int = 40, out_a: int = 100, out_b: int = 150, gpus: int = 2, **extra) -> dict:
    """Two 7B LLMs (llama-2-7b, mistral-7b), every prompt to both, fixed lengths (deterministic)."""
    spec = {"name": "tiny-ensemble", "topology": "ensemble", "node": {"gpu": "a100-80gb", "count": gpus},
            "prompts": {"fixed": 200, "count": count},
            "models": [{"name": "a", "model": "llama-2-7b", "output_lengths": {"fixed": out_a}},
                       {"name": "b", "model": "mistral-7b", "output_lengths": {"fixed": out_b}}],
            "samples": 2, "seed": 0}
    spec.update(extra)
    return spec



def assert_one_line_input_error(excinfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message
