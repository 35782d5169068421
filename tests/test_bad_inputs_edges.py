"""Bad inputs at the API, CLI and file edges that used to give a silent wrong answer, a hang or a crash.

Each case asserts the exact outcome (see :mod:`predictor.validate` for the limits):

* API: :class:`~predictor.errors.InputError` whose message names the field (column and row, or argument)
  and the limit; never 0.0 ms, NaN or a clipped value;
* CLI: exit code 2 and exactly one ``error:`` line on stderr naming the field and the allowed values or
  limit, nothing on stdout — or, where a result is still meaningful (every request rejected, lengths cut to
  the context, a quantized checkpoint), the documented result plus one ``warning:``/``error:`` line.

llama-2-7b has a 4,096-token context; on an a100-80gb at fp16 its default memory plan
(:func:`predictor.memory.plan_memory`) leaves the KV blocks that the capacity cases use.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from inference_sim import cli, common
from predictor import Predictor
from predictor.errors import InputError
from predictor.memory import plan_memory
from predictor.models import get_model, read_config_file
from predictor.precision import parse_dtype
from predictor.validate import (
    QuantizationWarning,
    check_arrivals,
    check_rate,
    detect_quantization,
    json_safe,
)

LLAMA_CFG = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
             "max_position_embeddings": 4096}
ROW = {"model": "llama-2-7b", "gpu": "a100-80gb", "tp": 1, "dtype": "fp16", "prefill_tokens": 100.0,
       "prefill_attention_pairs": 5000.0, "decode_seqs": 0.0, "decode_context_tokens": 0.0}
SIM = "simulate --model llama-2-7b --gpu a100-80gb --roofline"


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def cli_roofline(monkeypatch, roofline):
    """The CLI with the shared roofline predictor (no artifact loading)."""
    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: roofline)


@pytest.fixture(scope="module")
def edge_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("edges")
    os.mkfifo(d / "fifo.json")
    os.mkfifo(d / "fifo.csv")
    os.mkfifo(d / "fifo.yaml")
    os.mkfifo(d / "fifo.parquet")
    (d / "deep.json").write_text('{"a":' * 200_000 + "1" + "}" * 200_000)
    (d / "awq.json").write_text(json.dumps({**LLAMA_CFG, "quantization_config": {"quant_method": "awq", "bits": 4}}))
    header = "num_prefill_tokens,num_decode_tokens\n"
    (d / "nan_row.csv").write_text(header + "10,10\n,5\n")
    (d / "nan_text.csv").write_text(header + "10,10\n20,10\nnan,5\n")
    (d / "fraction.csv").write_text(header + "10.5,10\n")
    (d / "zero.csv").write_text(header + "10,10\n10,0\n")
    (d / "secret.csv").write_text(header + "hunter2-secret,10\n")
    (d / "passwd.csv").write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1\n")
    (d / "late.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,10\n1e300,10,10\n")
    (d / "one_long.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,10\n0.5,5000,10\n1,20,5\n")
    return d


def run(capsys, command: str, d=None) -> tuple[int, str, list[str]]:
    code = cli.main([part.format(d=d) for part in command.split()])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def frame(**changes) -> pd.DataFrame:
    rows = [dict(ROW), {**ROW, **changes}]
    return pd.DataFrame(rows, index=["first", "second"])


# --- API: Predictor.predict_iterations --------------------------------------------------------------
ITERATION_CASES = [
    ("model-none", dict(model=None), "iterations: column 'model' is missing (None/NaN) at row 'second' (position 1)"),
    ("gpu-nan", dict(gpu=math.nan), "iterations: column 'gpu' is missing (None/NaN) at row 'second'"),
    ("dtype-none", dict(dtype=None), "iterations: column 'dtype' is missing (None/NaN) at row 'second'"),
    ("tp-nan", dict(tp=math.nan), "iterations: column 'tp' is missing (None/NaN) at row 'second'"),
    ("model-empty-string", dict(model=""), "column 'model' is missing"),
    ("all-zero", dict(prefill_tokens=0.0, prefill_attention_pairs=0.0),
     "iterations: row 'second': empty iteration (prefill_tokens = 0 and decode_seqs = 0)"),
    # 100 tokens with a 4,096 context have at most 100 × 4,096 = 409,600 pairs; 1e15 is impossible
    ("pairs-1e15", dict(prefill_attention_pairs=1e15),
     "iterations: row 'second': prefill_attention_pairs exceeds prefill_tokens × max_context = prefill_tokens × 4,096"),
    ("pairs-just-over", dict(prefill_attention_pairs=409_601.0), "prefill_tokens × 4,096"),
    # one chunk of 100 new tokens has at least 100²/2 = 5,000 pairs
    ("pairs-too-few", dict(prefill_attention_pairs=4_999.0),
     "iterations: row 'second': prefill_attention_pairs is below prefill_tokens² / (2 × prefill_seqs)"),
    ("pairs-without-tokens", dict(prefill_tokens=0.0, decode_seqs=1.0, decode_context_tokens=10.0),
     "iterations: row 'second': prefill_attention_pairs > 0 with prefill_tokens = 0"),
    # 2 sequences each below 4,096 tokens hold at most 2 × 4,095 = 8,190 cached tokens
    ("decode-context-over", dict(prefill_tokens=0.0, prefill_attention_pairs=0.0, decode_seqs=2.0,
                                 decode_context_tokens=8_191.0),
     "iterations: row 'second': decode_context_tokens exceeds decode_seqs × (max_context − 1) = decode_seqs × 4,095"),
    ("decode-context-without-seqs", dict(decode_context_tokens=10.0),
     "iterations: row 'second': decode_context_tokens > 0 with decode_seqs = 0"),
    ("decode-seqs-fraction", dict(decode_seqs=1.5, decode_context_tokens=10.0),
     "iterations: row 'second': decode_seqs must be a whole number"),
    ("prefill-seqs-over-tokens", dict(prefill_seqs=101.0), "prefill_seqs exceeds prefill_tokens"),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in ITERATION_CASES], ids=[c[0] for c in ITERATION_CASES])
def test_predict_iterations_rejects_impossible_rows(roofline, changes, message):
    df = frame(**changes)
    if "prefill_seqs" in changes:
        df.loc["first", "prefill_seqs"] = 1.0
    with pytest.raises(InputError) as err:
        roofline.predict_iterations(df)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_predict_iterations_at_the_bounds_equals_predict_iteration(roofline):
    """The bounds are tight: one 100-token chunk after 3,996 cached tokens (the most pairs there can be,
    100 × (3,996 + 50) = 404,600 <= 409,600) and a fresh one (exactly 5,000 pairs) are accepted."""
    df = pd.DataFrame([{**ROW, "prefill_kv_tokens": 100.0},
                       {**ROW, "prefill_attention_pairs": 404_600.0, "prefill_kv_tokens": 4_096.0}])
    got = roofline.predict_iterations(df)["total_ms"].to_numpy()
    fresh = roofline.predict_iteration("llama-2-7b", "a100-80gb", prefill=[(100, 0)]).total_ms
    late = roofline.predict_iteration("llama-2-7b", "a100-80gb", prefill=[(100, 3_996)]).total_ms
    assert got == pytest.approx([fresh, late], rel=1e-9)
    assert late > fresh > 0


# --- API: context length and KV capacity ------------------------------------------------------------
CONTEXT_CASES = [
    ("decode-1e7", dict(decode=[10**7]),
     "decode[0]: context 10,000,000 + 1 new token exceeds llama-2-7b's context length 4,096 (max_position_embeddings)"),
    ("decode-4096", dict(decode=[10, 4_096]), "decode[1]: context 4,096 + 1 new token exceeds"),
    ("prefill-over", dict(prefill=[(100, 3_997)]),
     "prefill[0]: context 3,997 + 100 new tokens exceeds llama-2-7b's context length 4,096"),
    ("prefill-float-over", dict(prefill=[(100.0, 4_000.0)]), "prefill[0]: context 4,000 + 100 new tokens exceeds"),
]


@pytest.mark.parametrize("kwargs, message", [c[1:] for c in CONTEXT_CASES], ids=[c[0] for c in CONTEXT_CASES])
def test_predict_iteration_beyond_the_context_is_an_error(roofline, kwargs, message):
    with pytest.raises(InputError) as err:
        roofline.predict_iteration("llama-2-7b", "a100-80gb", **kwargs)
    assert message in str(err.value)


def test_predict_iteration_at_the_context_limit_is_answered(roofline):
    at_limit = roofline.predict_iteration("llama-2-7b", "a100-80gb", decode=[4_095], prefill=[(96, 4_000)])
    assert at_limit.total_ms > 0


def test_estimate_prompt_beyond_the_context(roofline):
    with pytest.raises(InputError) as err:
        roofline.estimate("llama-2-7b", "a100-80gb", input_len=10**6)
    assert str(err.value) == ("input_len + output_len: 1,000,128 tokens exceed llama-2-7b's context length 4,096 "
                              "(max_position_embeddings)")


def test_estimate_kv_capacity_is_the_memory_plans(roofline):
    """Sequences of 2,000 + 2,000 tokens take 4,000 / 16 = 250 blocks each: the plan's blocks // 250 fit."""
    plan = plan_memory(get_model("llama-2-7b"), roofline.bind("llama-2-7b", "a100-80gb").gpu, 1, parse_dtype("fp16"))
    fit = plan.num_blocks // 250
    assert roofline.estimate("llama-2-7b", "a100-80gb", batch_size=fit, input_len=2_000, output_len=2_000).e2e_ms > 0
    with pytest.raises(InputError) as err:
        roofline.estimate("llama-2-7b", "a100-80gb", batch_size=fit + 1, input_len=2_000, output_len=2_000)
    assert str(err.value) == (f"batch_size: {fit + 1:,} sequences of 4,000 tokens need {(fit + 1) * 4000:,} KV tokens; "
                              f"the KV cache of a100-80gb at tp=1 (fp16) holds {plan.max_tokens:,} tokens, so at most "
                              f"{fit:,} such sequences")


# --- API: Predictor.load arguments --------------------------------------------------------------------
@pytest.mark.parametrize(("path", "kind"), [(b"artifacts", "bytes"), (42, "int"), (3.5, "float"), (["a"], "list")],
                         ids=["bytes", "int", "float", "list"])
def test_load_rejects_non_path_arguments(path, kind):
    with pytest.raises(InputError) as err:
        Predictor.load(path)
    assert str(err.value) == ("path: expected an artifact folder (str or Path) or an MLflow URI (models:/…, runs:/…), "
                              f"got {kind}")


def test_load_rejects_an_empty_string():
    with pytest.raises(InputError, match="^path: expected an artifact folder or an MLflow URI, got ''$"):
        Predictor.load("")


# --- API: config.json files ------------------------------------------------------------------------
def test_fifo_config_is_an_error_not_a_hang(edge_dir):
    with pytest.raises(InputError, match="not a regular file"):
        read_config_file(edge_dir / "fifo.json")


def test_deeply_nested_config_is_one_line(edge_dir):
    with pytest.raises(InputError) as err:
        read_config_file(edge_dir / "deep.json")
    assert str(err.value) == f"--model: {str(edge_dir / 'deep.json')!r} is nested too deeply to be a config.json"


QUANT_CASES = [
    ("awq", {"quant_method": "awq", "bits": 4, "group_size": 128}, ("awq", 4, "w4a16")),
    ("gptq-8", {"quant_method": "gptq", "bits": 8}, ("gptq", 8, "w8a16")),
    ("gptq-3", {"quant_method": "gptq", "bits": 3}, ("gptq", 3, None)),
    ("fp8", {"quant_method": "fp8", "activation_scheme": "dynamic"}, ("fp8", 8, "fp8")),
    ("bnb-4", {"quant_method": "bitsandbytes", "load_in_4bit": True}, ("bitsandbytes", 4, "w4a16")),
    ("bnb-8", {"quant_method": "bitsandbytes", "load_in_8bit": True}, ("bitsandbytes", 8, "w8a16")),
    ("ct-int8", {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "int"}, "input_activations": {"num_bits": 8, "type": "int"}}}},
     ("compressed-tensors", 8, "int8")),
    ("ct-fp8", {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float"}, "input_activations": {"num_bits": 8, "type": "float"}}}},
     ("compressed-tensors", 8, "fp8")),
    ("ct-w4a16", {"quant_method": "compressed-tensors", "config_groups": {"g": {
        "weights": {"num_bits": 4, "type": "int"}}}}, ("compressed-tensors", 4, "w4a16")),
    ("mxfp4", {"quant_method": "mxfp4"}, ("mxfp4", 4, "mxfp4")),
    ("modelopt-nvfp4", {"quant_method": "modelopt", "quant_algo": "NVFP4"}, ("modelopt nvfp4", 4, "nvfp4")),
    ("modelopt-fp8", {"quant_method": "modelopt", "quant_algo": "FP8"}, ("modelopt fp8", 8, "fp8")),
    ("unknown", {"quant_method": "hqq"}, ("hqq", 0, None)),
]


@pytest.mark.parametrize(("qcfg", "expected"), [c[1:] for c in QUANT_CASES], ids=[c[0] for c in QUANT_CASES])
def test_detect_quantization(qcfg, expected):
    found = detect_quantization({**LLAMA_CFG, "quantization_config": qcfg})
    assert (found.method, found.weight_bits, found.dtype) == expected


def test_no_quantization_config_is_none():
    assert detect_quantization(LLAMA_CFG) is None


def test_quantized_config_warns_once_through_the_api(tmp_path):
    path = tmp_path / "gptq.json"
    path.write_text(json.dumps({**LLAMA_CFG, "quantization_config": {"quant_method": "gptq", "bits": 4}}))
    with pytest.warns(QuantizationWarning, match=r"declares gptq 4-bit weights.*pass --dtype w4a16"):
        read_config_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationWarning)
        read_config_file(path)  # once per file


# --- API: arrivals and JSON ---------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [1e-300, 0.0, -1.0, math.inf, math.nan, 1e10], ids=["tiny", "zero", "neg", "inf", "nan",
                                                                                    "huge"])
def test_rate_outside_the_plausible_range(rate):
    with pytest.raises(InputError) as err:
        check_rate(rate)
    assert str(err.value) == f"--rate: {rate!r} requests/s is outside the plausible range 1e-06 to 1e+09 requests/s"


def test_arrival_beyond_1e9_s():
    with pytest.raises(InputError) as err:
        check_arrivals(np.array([0.0, 1e300]), "--trace")
    assert str(err.value) == "--trace: arrival time 1e+300 s (request 1) is outside the plausible range 0 to 1e+09 s"


def test_json_safe_turns_nan_into_null_and_names_it():
    nulls: list[str] = []
    clean = json_safe({"a": {"p50": math.nan, "n": 3}, "b": [1.0, math.inf], "c": np.float64("nan")}, nulls=nulls)
    assert clean == {"a": {"p50": None, "n": 3}, "b": [1.0, None], "c": None}
    assert nulls == ["a.p50", "b[1]", "c"]


# --- plan: lengths cut to the context are counted --------------------------------------------------
def test_plan_counts_prompts_and_outputs_cut_to_the_context():
    from scheduler.app import Application

    app = Application.from_dict({"topology": "ensemble", "node": {"gpu": "a100-80gb", "count": 1},
                                 "prompts": {"fixed": 5_000, "count": 30},
                                 "models": [{"name": "a", "model": "llama-2-7b", "output_lengths": {"fixed": 100}}]})
    sample = app.sample(0)
    assert sample.prompts["a"].tolist() == [4_095] * 30 and sample.outputs["a"].tolist() == [1] * 30
    assert sample.cut == {"a": {"prompts_cut": 30, "outputs_capped": 30, "requests": 30}}
    assert app.length_warning([sample, app.sample(1)]) == (
        "lengths cut to fit the context over 2 samples: a (context 4,096): 60 of 60 prompts cut to 4,095 tokens, "
        "60 outputs capped")


def test_a_trace_gives_prompt_lengths_to_prompts_and_output_lengths_to_outputs():
    from scheduler.app import Application
    from scheduler.workload import trace_columns

    trace = trace_columns("splitwise_conv")
    app = Application.from_dict({"topology": "ensemble", "prompts": {"trace": "splitwise_conv", "count": 400},
                                 "models": [{"name": "a", "model": "llama-3.1-8b",
                                             "output_lengths": {"trace": "splitwise_conv"}}]})
    sample = app.sample(3)
    assert np.isin(sample.prompts["a"], trace.prompt_tokens).all()
    assert np.isin(sample.outputs["a"], trace.output_tokens).all()
    # the two columns differ: outputs drawn from the prompt column would not sit in the output column
    assert not np.isin(sample.prompts["a"], trace.output_tokens).all()


def test_plan_without_cuts_has_no_warning():
    from scheduler.app import Application

    app = Application.from_dict({"topology": "ensemble", "prompts": {"fixed": 100, "count": 5},
                                 "models": [{"name": "a", "model": "llama-2-7b", "output_lengths": {"fixed": 100}}]})
    assert app.length_warning([app.sample(0)]) is None


# --- CLI: one error line, exit 2 ---------------------------------------------------------------------
CLI_CASES = [
    ("estimate-prompt-beyond-context", "estimate --model llama-2-7b --gpu a100-80gb --input-len 1000000",
     "input_len + output_len: 1,000,128 tokens exceed llama-2-7b's context length 4,096"),
    ("estimate-kv-beyond-memory", "estimate --model llama-2-7b --gpu a100-80gb --batch-size 3000 --input-len 2000 "
                                  "--output-len 2000", "batch_size: 3,000 sequences of 4,000 tokens need 12,000,000 KV"),
    ("predict-decode-1e7", "predict --model llama-2-7b --gpu a100-80gb --decode 10000000",
     "decode[0]: context 10,000,000 + 1 new token exceeds llama-2-7b's context length 4,096"),
    ("predict-prefill-beyond-context", "predict --model llama-2-7b --gpu a100-80gb --prefill 100:4000",
     "prefill[0]: context 4,000 + 100 new tokens exceeds"),
    ("model-fifo", "estimate --model {d}/fifo.json --gpu a100-80gb", "--model: '{d}/fifo.json' is not a regular file"),
    ("model-deep-json", "estimate --model {d}/deep.json --gpu a100-80gb", "--model: '{d}/deep.json' is nested too deeply"),
    ("gpu-file-fifo", "roofline --model llama-2-7b --gpu g --gpu-file {d}/fifo.yaml",
     "--gpu-file: '{d}/fifo.yaml' is not a regular file"),
    ("app-fifo", "plan {d}/fifo.yaml", "app: '{d}/fifo.yaml' is not a regular file"),
    ("profiles-fifo", "evaluate --profiles {d}/fifo.parquet", "--profiles: '{d}/fifo.parquet' is not a regular file"),
    ("trace-fifo", SIM + " --workload trace --trace {d}/fifo.csv", "--trace: '{d}/fifo.csv' is not a regular file"),
    ("trace-empty-tokens", SIM + " --workload offline --trace {d}/nan_row.csv",
     "--trace: '{d}/nan_row.csv' line 3: column 'num_prefill_tokens' is empty, NaN or not a number"),
    ("trace-nan-tokens", SIM + " --workload offline --trace {d}/nan_text.csv",
     "--trace: '{d}/nan_text.csv' line 4: column 'num_prefill_tokens' is empty, NaN or not a number"),
    ("trace-fraction", SIM + " --workload offline --trace {d}/fraction.csv",
     "line 2: column 'num_prefill_tokens' must be a whole number of tokens from 1 to 10,000,000"),
    ("trace-zero-output", SIM + " --workload offline --trace {d}/zero.csv",
     "line 3: column 'num_decode_tokens' must be a whole number of tokens from 1 to 10,000,000"),
    ("trace-arrival-1e300", SIM + " --workload trace --trace {d}/late.csv",
     "line 3: column 'arrived_at' must be a time in seconds within the plausible range 0 to 1e+09 s"),
    ("rate-1e-300", SIM + " --rate 1e-300 --prompt-len 10 --output-len 10",
     "--rate: 1e-300 requests/s is outside the plausible range 1e-06 to 1e+09 requests/s"),
    ("rate-1e12", SIM + " --workload gamma --rate 1e12 --prompt-len 10 --output-len 10",
     "--rate: 1000000000000.0 requests/s is outside the plausible range"),
]


@pytest.mark.parametrize(("command", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_edge_is_one_error_line_exit_2(edge_dir, capsys, cli_roofline, command, message):
    code, out, lines = run(capsys, command, edge_dir)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message.format(d=edge_dir) in lines[0]
    assert out.strip() == ""


@pytest.mark.parametrize(("name", "secret"), [("secret.csv", "hunter2-secret"), ("passwd.csv", "root:x:0:0")],
                         ids=["cell", "header"])
def test_trace_errors_name_the_file_but_not_its_contents(edge_dir, capsys, name, secret):
    code, _, lines = run(capsys, SIM + " --workload offline --trace {d}/" + name, edge_dir)
    assert code == 2 and len(lines) == 1
    assert f"'{edge_dir / name}'" in lines[0]
    assert secret not in lines[0]


# --- CLI: documented results -------------------------------------------------------------------------
def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]  # (a progress bar may leave a blank line)


def _strict_json(text: str) -> dict:
    def no_constants(name):
        raise AssertionError(f"bare {name} in JSON output")

    return json.loads(text, parse_constant=no_constants)


def test_simulate_every_request_rejected_json_is_valid_and_exits_2(capsys):
    code, out, lines = run(capsys, SIM + " --workload offline --num-requests 5 --prompt-len 5000 --output-len 10 --json")
    assert code == 2
    summary = _strict_json(out)
    assert (summary["finished"], summary["rejected"]) == (0, 5)
    assert summary["ttft_ms"]["p50"] is None and summary["requests_per_s"] is None
    assert summary["null_reasons"]["ttft_ms.p50"] == "no request finished"
    assert summary["rejected_reasons"] == {"prompt + output exceeds max_model_len 4096": 5}
    assert lines == ["error: workload: all 5 requests were rejected (5 prompt + output exceeds max_model_len 4096); "
                     "shorten the prompts/outputs or give the model more GPUs"]


def test_simulate_every_request_rejected_text_exits_2(capsys, tmp_path):
    code, out, lines = run(capsys, SIM + f" --workload offline --num-requests 3 --prompt-len 5000 --output-len 10 "
                                         f"--out {tmp_path / 'sim'} --no-iteration-log")
    assert code == 2
    assert _lines(out)[:2] == ["0 of 3 requests finished (3 rejected)",
                                    "  rejected: 3 prompt + output exceeds max_model_len 4096"]
    assert len(lines) == 1 and lines[0].startswith("error: workload: all 3 requests were rejected")
    written = _strict_json((tmp_path / "sim" / "summary.json").read_text())
    assert written["rejected_reasons"] == {"prompt + output exceeds max_model_len 4096": 3}


def test_simulate_counts_context_rejections_in_the_printed_summary(edge_dir, capsys):
    code, out, lines = run(capsys, SIM + " --workload trace --trace {d}/one_long.csv", edge_dir)
    assert code == 0, lines
    assert _lines(out)[0].startswith("2 of 3 requests finished (1 rejected)")
    assert _lines(out)[1] == "  rejected: 1 prompt + output exceeds max_model_len 4096"


def test_estimate_json_echoes_inputs_and_uses_the_checkpoints_bits(edge_dir, capsys, cli_roofline):
    code, out, lines = run(capsys, "estimate --model {d}/awq.json --gpu a100-80gb --batch-size 2 --json", edge_dir)
    assert code == 0 and lines == []
    payload = _strict_json(out)
    assert payload["inputs"] == {"model": str(edge_dir / "awq.json"), "gpu": "a100-80gb", "tp": 1, "dtype": "w4a16",
                                 "batch_size": 2, "input_len": 128, "output_len": 128, "max_num_batched_tokens": None,
                                 "artifacts": None}


def test_estimate_with_a_contradicting_dtype_warns_once(edge_dir, capsys, cli_roofline):
    code, out, lines = run(capsys, "estimate --model {d}/awq.json --gpu a100-80gb --dtype fp16", edge_dir)
    assert code == 0
    assert lines == [f"warning: {edge_dir / 'awq.json'}: quantization_config declares awq 4-bit weights but --dtype "
                     f"fp16 is costed; pass --dtype w4a16 to match it"]
    assert "(tp=1, fp16)" in out


def test_artifact_metadata_nested_too_deep_is_one_line(tmp_path):
    from predictor.artifact import CHECKSUM_FILE, METADATA_FILE, MODEL_FILE, SHIPPED_DIR, sha256_file

    folder = tmp_path / "deep-artifact"
    folder.mkdir()
    (folder / MODEL_FILE).write_text((SHIPPED_DIR / MODEL_FILE).read_text())
    (folder / METADATA_FILE).write_text("[" * 200_000 + "]" * 200_000)
    (folder / CHECKSUM_FILE).write_text("".join(f"{sha256_file(folder / n)}  {n}\n" for n in (MODEL_FILE, METADATA_FILE)))
    with pytest.raises(InputError) as err:
        Predictor.load(folder)
    assert str(err.value) == f"artifact: {METADATA_FILE} in {str(folder)!r} is not valid JSON"


def test_plan_prints_one_warning_line_counting_cut_lengths(tmp_path, capsys, cli_roofline):
    spec = tmp_path / "cut.yaml"
    spec.write_text(json.dumps({"name": "cut", "topology": "ensemble", "node": {"gpu": "a100-80gb", "count": 1},
                                "prompts": {"fixed": 5000, "count": 20}, "samples": 1,
                                "search": {"strategy": "greedy", "time_budget_s": 5},
                                "models": [{"name": "a", "model": "llama-2-7b", "output_lengths": {"fixed": 50}}]}))
    code, out, lines = run(capsys, f"plan {spec} --json")
    assert code == 0
    expected = ("lengths cut to fit the context over 1 samples: a (context 4,096): 20 of 20 prompts cut to 4,095 "
                "tokens, 20 outputs capped")
    assert [line for line in lines if line.strip()] == [f"warning: {expected}"]
    assert _strict_json(out)["application"]["length_warning"] == expected
