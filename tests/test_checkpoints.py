"""Without ``--dtype``, a catalogue model is costed at the precision of the checkpoint its name denotes
(``predictor/checkpoints.py``): DeepSeek-V3 in fp8 on eight H200s fits, as it is deployed, instead of being
refused as 16-bit weights."""

from __future__ import annotations

import json

import pytest

from inference_sim.cli import main
from predictor.checkpoints import checkpoint_dtype, named_dtype
from predictor.validate import detect_quantization


@pytest.mark.parametrize("name, dtype", [
    ("deepseek-v3", "fp8"), ("deepseek-ai/DeepSeek-R1", "fp8"),       # the release's own quantization_config
    ("nvidia/DeepSeek-R1-NVFP4", "nvfp4"), ("nvidia/Qwen3-32B-FP4", "nvfp4"),  # the name says it
    ("Qwen/Qwen3-32B-FP8", "fp8"), ("zai-org/GLM-5-FP8", "fp8"),
    ("gpt-oss-120b", "mxfp4"), ("minimax-m2.5", "fp8"),
    ("kimi-k2.5", "w4a16"), ("moonshotai/Kimi-K2-Thinking", "w4a16"),  # int4 weights in the wrapper's text_config
    ("moonshotai/Kimi-K2-Instruct", "fp8"),                          # the catalogue's checkpoint_dtypes
    ("Qwen/Qwen3-32B", None), ("glm-5", None), ("llama-2-7b", None),  # 16-bit releases
    ("no-such-model", None),
])
def test_checkpoint_dtype_of_a_name(name, dtype):
    assert checkpoint_dtype(name) == dtype


def test_a_precision_is_read_from_whole_name_parts_only():
    assert named_dtype("org/Model-7B-AWQ") == "w4a16"
    assert named_dtype("org/Model-MXFP4") == "mxfp4"
    assert named_dtype("org/fp8lab-Model-7B") is None  # not a part of its own


def test_a_multimodal_wrapper_declares_its_quantization_in_text_config():
    config = {"model_type": "wrapper", "text_config": {"quantization_config": {"quant_method": "fp8"}}}
    assert detect_quantization(config).dtype == "fp8"


def _roofline(capsys, gpu: str, *extra) -> tuple[str, str]:
    assert main(["roofline", "--gpu", gpu, "--tp", "8", "--ep", "8", "--json", *extra]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out)["dtype"], captured.err


def test_the_cli_defaults_to_the_checkpoint_says_so_and_keeps_a_given_dtype(capsys):
    dtype, err = _roofline(capsys, "h200", "--model", "deepseek-ai/DeepSeek-V3")
    assert dtype == "fp8"
    assert err == ("note: deepseek-ai/DeepSeek-V3 is costed at its checkpoint's precision, --dtype fp8 "
                   "(pass --dtype to choose another)\n")
    assert _roofline(capsys, "b200", "--model", "nvidia/DeepSeek-R1-NVFP4")[0] == "nvfp4"
    assert _roofline(capsys, "h200", "--model", "deepseek-ai/DeepSeek-V3", "--dtype", "w4a16") == ("w4a16", "")
    assert _roofline(capsys, "h200", "--model", "qwen3-235b-a22b") == ("fp16", "")


def test_a_checkpoint_the_gpu_cannot_run_is_one_error_after_the_note(capsys):
    """An NVFP4 checkpoint on a GPU without fp4 tensor cores: the note says where nvfp4 came from, the error
    lists what the GPU runs (nvfp4-a16, the weight-only path, among them)."""
    assert main(["roofline", "--gpu", "h200", "--tp", "8", "--model", "nvidia/DeepSeek-R1-NVFP4"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("note: nvidia/DeepSeek-R1-NVFP4 is costed at its checkpoint's precision, --dtype nvfp4")
    assert lines[1].startswith("error: --dtype: nvfp4 needs fp4 tensor cores, which h200 lacks")
    assert "nvfp4-a16" in lines[1]
    assert len(lines) == 2


def test_deepseek_v3_on_eight_h200s_simulates_at_its_own_precision(capsys):
    code = main(["simulate", "--model", "deepseek-ai/DeepSeek-V3", "--gpu", "h200", "--tp", "8", "--ep", "8",
                 "--workload", "concurrency", "--concurrency", "4", "--num-requests", "12", "--prompt-len", "256",
                 "--output-len", "16", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["finished"] == 12
