"""`inference-sim roofline`: JSON contract, chart, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from inference_sim.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract(capsys):
    code, out, err = run(capsys, "roofline", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--batch-size", "1",
                         "--input-len", "1024", "--decode-context", "1024", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["prefill"]["total_ms"] == pytest.approx(46.44, abs=0.01)
    assert report["decode"]["total_ms"] == pytest.approx(6.75, abs=0.01)
    assert {"weights_bytes", "kv_bytes_per_token", "max_tokens"} <= set(report["memory"])
    op = report["prefill"]["ops"][0]
    assert {"op", "op_kind", "flops", "bytes", "intensity", "bound", "ideal_ms", "total_ms"} <= set(op)
    assert sum(o["total_ms"] for o in report["decode"]["ops"]) == pytest.approx(report["decode"]["total_ms"])


def test_table_and_plot(capsys, tmp_path):
    png = tmp_path / "roof.png"
    code, out, err = run(capsys, "roofline", "--model", "mixtral-8x7b", "--gpu", "h100-sxm", "--tp", "2",
                         "--batch-size", "4", "--input-len", "256", "--plot", str(png))
    assert code == 0, err
    assert "moe_experts" in out and "mlp_allreduce" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD_INPUTS = [
    (["--model", "llama-2-7", "--gpu", "a100"], "did you mean llama-2-7b"),
    (["--model", "llama-2-7b", "--gpu", "h10"], "did you mean"),
    (["--model", "llama-2-7b", "--gpu", "a100", "--input-len", "0"], "--input-len"),
    (["--model", "llama-2-7b", "--gpu", "a100", "--batch-size", "-3"], "--batch-size"),
    (["--model", "llama-2-7b", "--gpu", "a100", "--tp", "3"], "3 does not divide"),
    (["--model", "llama-2-70b", "--gpu", "a100-80gb"], "does not fit"),
    (["--model", "llama-2-7b", "--gpu", "a100", "--dtype", "fp7"], "--dtype"),
    (["--model", "llama-2-7b", "--gpu", "a100", "--attention", "paged"], "--attention"),
    (["--model", "llama-2-7b", "--gpu", "a100", "--tp", "two"], "--tp"),
    (["--gpu", "a100"], "--model"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_one_line_exit_2(capsys, args, message):
    code, out, err = run(capsys, "roofline", *args)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err


def test_malformed_config_json(capsys, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "hidden_size": 4096,')
    code, _, err = run(capsys, "roofline", "--model", str(cfg), "--gpu", "a100")
    assert code == 2 and "not valid JSON" in err


def test_console_script_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "inference_sim.cli", "roofline", "--model", "nope", "--gpu", "a100"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --model: unknown value 'nope'") and "Traceback" not in proc.stderr


def test_debug_flag_shows_traceback():
    proc = subprocess.run([sys.executable, "-m", "inference_sim.cli", "roofline", "--model", "nope", "--gpu", "a100",
                           "--debug"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("inference-sim ")
