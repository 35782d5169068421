"""The Predictor's public API on the shipped artifact: table path vs direct per-op calls, batch and
frame entry points, overheads, static-batch estimates, input errors, and the CLI commands built on it.

Table builds cost ~3 s per (model, GPU, TP, precision) and predictor, so every test reuses the
module-scoped predictors and at most three configurations.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import inference_sim.cli as cli
from inference_sim import common
from predictor import InputError, get_gpu, get_model, parse_dtype
from predictor.batch import BatchShape
from predictor.ops import build_ops
from predictor.overhead import OverheadModel
from predictor.predictor import DEFAULT_OVERHEAD, static_prefill_batch
from predictor.tables import ATTENTION_OPS, DENSE_TOKENS, SAMPLE_OPS

SMALL = ("llama-2-7b", "a100-80gb", 1)
TP4 = ("llama-2-70b", "h100-sxm", 4)
MOE = ("mixtral-8x7b", "h100-sxm", 2)
CONFIGS = [SMALL, TP4, MOE]
REL = 1e-9



def random_iteration(rng: np.random.Generator) -> tuple[list[tuple[int, int]], list[int]]:
    """0–64 decode sequences at contexts 1–4000 and 0–3 prefill chunks of 1–2048 new tokens on 0–2000
    cached ones (never empty)."""
    while True:
        n_dec, n_pre = int(rng.integers(0, 65)), int(rng.integers(0, 4))
        if n_dec + n_pre:
            break
    decode = [int(c) for c in rng.integers(1, 4001, n_dec)]
    prefill = [(int(n), int(c)) for n, c in zip(rng.integers(1, 2049, n_pre), rng.integers(0, 2001, n_pre), strict=True)]
    return prefill, decode


def aggregates(prefill: list[tuple[int, int]], decode: list[int]) -> dict[str, float]:
    """The iteration's aggregate columns, by hand."""
    return {
        "prefill_seqs": float(len(prefill)),
        "prefill_tokens": float(sum(n for n, _ in prefill)),
        "prefill_kv_tokens": float(sum(n + c for n, c in prefill)),
        "prefill_attention_pairs": float(sum(n * (c + n / 2) for n, c in prefill)),
        "decode_seqs": float(len(decode)),
        "decode_context_tokens": float(sum(decode)),
        "sample_tokens": float(len(prefill) + len(decode)),
    }


def expected_overhead(model: OverheadModel, seqs: int, tp: int) -> float:
    return model.base_ms + model.per_seq_ms * seqs + (model.multi_gpu_ms if tp > 1 else 0.0)


# --- table path vs direct per-op model calls -------------------------------------------------------

# Known disagreements of the shipped artifact (trained with the reduced TrainConfig.shared_host), each strict: the
# marker must go once a retrained model agrees again.
KNOWN_HYBRID_GAPS = {
    # its MoE residual is non-monotone in tokens (-15% from 500 to 537 tokens on H100 TP2), so the tables'
    # monotone envelope sits up to ~15% above direct calls
    "mixtral-8x7b": "non-monotone MoE residual of the shipped model",
    # since the retrain on the frameworks' all-reduce the median table/direct gap is 0.53%, against the 0.5% bound
    # (p99 within its bound)
    "llama-2-7b": "median table/direct gap of the shipped model on A100 TP1 just over 0.5%",
}


@pytest.mark.parametrize("which", ["hybrid", "roofline"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-tp{c[2]}")
def test_table_path_agrees_with_direct_per_op_sum(request, which, config):
    """``kernel_ms`` (table lookup) vs Σ count × predicted_ms of the per-op breakdown (direct model calls).

    The tables hold the model's *monotone envelope* (a running maximum along every axis) and are
    interpolated in log space between grid points; prefill attention is tabulated over the mean chunk
    shape. So they are not bit-identical to the direct sum, only close: median ≤ 0.5 %, p99 ≤ 5 %.
    """
    if which == "hybrid" and config[0] in KNOWN_HYBRID_GAPS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_HYBRID_GAPS[config[0]]))
    predictor = request.getfixturevalue(which)
    rng = np.random.default_rng(20240601)
    errors = []
    for _ in range(150):
        prefill, decode = random_iteration(rng)
        pred = predictor.predict_iteration(*config, "fp16", prefill=prefill, decode=decode)
        direct = float(pred.ops["total_ms"].sum())
        assert direct > 0
        errors.append(abs(pred.kernel_ms - direct) / direct)
    errors = np.array(errors)
    assert np.median(errors) <= 0.005, np.median(errors)
    assert np.percentile(errors, 99) <= 0.05, np.percentile(errors, 99)


@pytest.mark.parametrize("config", [SMALL, TP4], ids=["llama-2-7b", "llama-2-70b-tp4"])
def test_token_table_is_running_max_of_direct_token_ops(hybrid, config):
    """At integer token counts the token table is exactly the running maximum of the direct sum of all
    non-attention, non-sampling ops (prefill of T tokens, nothing sampled)."""
    model, gpu, tp = config
    spec, gpu_spec, precision = get_model(model), get_gpu(gpu), parse_dtype("fp16")
    table = hybrid.tables(spec, gpu_spec, tp, precision)

    tokens = np.arange(1, DENSE_TOKENS + 1, dtype=float)
    zeros = np.zeros_like(tokens)
    batch = BatchShape(prefill_seqs=np.ones_like(tokens), prefill_tokens=tokens, prefill_kv_tokens=tokens,
                       prefill_attention_pairs=tokens, prefill_score_elements=tokens, decode_seqs=zeros,
                       decode_context_tokens=zeros, sample_tokens=zeros)
    ops = build_ops(spec, tp, precision, batch)
    assert not ops["op"].isin(SAMPLE_OPS).any()  # nothing sampled
    ops = ops[~ops["op"].isin(ATTENTION_OPS)].reset_index(drop=True)
    pred = hybrid.predict_ops(ops, gpu_spec)["predicted_ms"].to_numpy()
    direct = np.bincount(ops["iteration"].to_numpy(), weights=ops["count"].to_numpy() * pred, minlength=len(tokens))
    envelope = np.maximum.accumulate(direct)

    assert np.all(table.tokens_ms[:DENSE_TOKENS] >= direct * (1 - REL))
    np.testing.assert_allclose(table.tokens_ms[:DENSE_TOKENS], envelope, rtol=REL)
    for t in (1, 17, 512, DENSE_TOKENS):
        assert table.tokens_ms[t - 1] == pytest.approx(envelope[t - 1], rel=REL)
        if direct[t - 1] == envelope[t - 1]:
            assert table.tokens_ms[t - 1] == pytest.approx(direct[t - 1], rel=REL)


# --- predict_iterations / predict_batch ------------------------------------------------------------

def test_predict_iterations_matches_predict_iteration_across_configs(hybrid):
    rng = np.random.default_rng(7)
    rows, expected = [], []
    for i in range(60):
        model, gpu, tp = SMALL if i % 2 else TP4
        prefill, decode = random_iteration(rng)
        if i == 0:
            prefill, decode = [(512, 0)], []
        elif i == 1:
            prefill, decode = [], [1000] * 8
        rows.append({"model": model, "gpu": gpu, "tp": tp, "dtype": "fp16", **aggregates(prefill, decode)})
        expected.append(hybrid.predict_iteration(model, gpu, tp, "fp16", prefill=prefill, decode=decode))
    frame = pd.DataFrame(rows, index=pd.RangeIndex(100, 160))
    out = hybrid.predict_iterations(frame)
    assert list(out.columns) == ["total_ms", "kernel_ms", "overhead_ms"]
    assert out.index.equals(frame.index)
    np.testing.assert_allclose(out["kernel_ms"], [e.kernel_ms for e in expected], rtol=REL)
    np.testing.assert_allclose(out["overhead_ms"], [e.overhead_ms for e in expected], rtol=REL)
    np.testing.assert_allclose(out["total_ms"], [e.total_ms for e in expected], rtol=REL)


def test_predict_iterations_missing_key_column(hybrid):
    frame = pd.DataFrame([{"model": "llama-2-7b", "gpu": "a100-80gb", "dtype": "fp16",
                           **aggregates([], [10])}])
    with pytest.raises(InputError, match="tp"):
        hybrid.predict_iterations(frame)


# --- overheads -------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [SMALL, TP4], ids=["tp1", "tp4"])
def test_total_is_kernel_plus_overhead(hybrid, config):
    fitted = hybrid.artifact.metadata.get("overhead")
    model = OverheadModel(**fitted) if fitted else DEFAULT_OVERHEAD
    assert hybrid.overhead == model
    prefill, decode = [(300, 0), (64, 2000)], [100, 200, 300]
    pred = hybrid.predict_iteration(*config, "fp16", prefill=prefill, decode=decode)
    assert pred.total_ms == pytest.approx(pred.kernel_ms + pred.overhead_ms, rel=REL)
    assert pred.overhead_ms == pytest.approx(expected_overhead(model, 5, config[2]), rel=REL)
    if config[2] > 1:
        assert pred.overhead_ms > model.base_ms + model.multi_gpu_ms


def test_roofline_only_kernel_is_roofline_sum_and_no_overhead(roofline):
    rng = np.random.default_rng(3)
    errors = []
    for _ in range(40):
        prefill, decode = random_iteration(rng)
        pred = roofline.predict_iteration(*SMALL, "fp16", prefill=prefill, decode=decode)
        assert pred.overhead_ms == 0.0
        assert pred.total_ms == pred.kernel_ms
        ops = pred.ops
        np.testing.assert_array_equal(ops["predicted_ms"], ops["roofline_ms"])
        ideal = float((ops["roofline_ms"] * ops["count"]).sum())
        assert pred.roofline_ms == pytest.approx(ideal, rel=REL)
        errors.append(abs(pred.kernel_ms - ideal) / ideal)
    assert np.median(errors) <= 0.005
    assert max(errors) <= 0.05


# --- static batch estimate -------------------------------------------------------------------------

@pytest.mark.parametrize("config", [SMALL, TP4], ids=["tp1", "tp4"])
def test_estimate_matches_iterations(hybrid, config):
    batch, input_len, output_len = 4, 300, 5
    est = hybrid.estimate(*config, "fp16", batch_size=batch, input_len=input_len, output_len=output_len)
    prefill = hybrid.predict_iteration(*config, "fp16", prefill=[(input_len, 0)] * batch)
    assert est.ttft_ms == pytest.approx(prefill.total_ms, rel=REL)
    steps = [hybrid.predict_iteration(*config, "fp16", decode=[input_len + j] * batch).total_ms
             for j in range(output_len - 1)]
    assert est.tpot_ms == pytest.approx(float(np.mean(steps)), rel=REL)
    assert est.e2e_ms == pytest.approx(est.ttft_ms + (output_len - 1) * est.tpot_ms, rel=REL)
    assert est.output_tokens_per_s == pytest.approx(batch * output_len / (est.e2e_ms / 1000), rel=REL)
    assert est.to_dict() == {"ttft_ms": est.ttft_ms, "tpot_ms": est.tpot_ms, "e2e_ms": est.e2e_ms,
                             "output_tokens_per_s": est.output_tokens_per_s}


def test_estimate_single_output_token_has_no_decode(hybrid):
    est = hybrid.estimate(*SMALL, "fp16", batch_size=2, input_len=64, output_len=1)
    assert est.tpot_ms == 0.0
    assert est.e2e_ms == pytest.approx(est.ttft_ms, rel=REL)


def test_static_prefill_batch_chunks_by_hand():
    # 3 prompts of 100 tokens, 128 tokens per iteration:
    #   it0: (100, 0) [done], (28, 0)        → 2 chunks, 128 tokens, 1 sample
    #   it1: (72, 28) [done], (56, 0)        → 2 chunks, 128 tokens, 1 sample
    #   it2: (44, 56) [done]                 → 1 chunk,   44 tokens, 1 sample
    chunks = [[(100, 0), (28, 0)], [(72, 28), (56, 0)], [(44, 56)]]
    batch = static_prefill_batch(3, 100, 128)
    assert len(batch) == 3
    np.testing.assert_array_equal(batch.prefill_seqs, [2, 2, 1])
    np.testing.assert_array_equal(batch.prefill_tokens, [128, 128, 44])
    np.testing.assert_array_equal(batch.sample_tokens, [1, 1, 1])
    np.testing.assert_array_equal(batch.decode_seqs, [0, 0, 0])
    np.testing.assert_allclose(batch.prefill_kv_tokens, [sum(n + c for n, c in it) for it in chunks])
    np.testing.assert_allclose(batch.prefill_attention_pairs, [sum(n * (c + n / 2) for n, c in it) for it in chunks])
    np.testing.assert_allclose(batch.prefill_score_elements, [sum(n * (c + n) for n, c in it) for it in chunks])
    assert batch.prefill_tokens.sum() == 300

    # a budget that fits everything is one iteration, every prompt sampling
    whole = static_prefill_batch(3, 100, 300)
    assert len(whole) == 1 and whole.sample_tokens[0] == 3 and whole.prefill_seqs[0] == 3
    # long prompts split across many iterations: only the completing chunk samples
    long = static_prefill_batch(2, 1000, 256)
    assert len(long) == 8  # ceil(2000 / 256)
    assert long.prefill_tokens.sum() == 2000 and long.sample_tokens.sum() == 2
    assert np.all(long.prefill_tokens[:-1] == 256)


def test_chunked_prefill_estimate(hybrid):
    batch, input_len, budget = 3, 100, 128
    plain = hybrid.estimate(*SMALL, "fp16", batch_size=batch, input_len=input_len, output_len=3)
    chunked = hybrid.estimate(*SMALL, "fp16", batch_size=batch, input_len=input_len, output_len=3,
                              max_num_batched_tokens=budget)
    kernel, overhead = hybrid.predict_batch(*SMALL, "fp16", static_prefill_batch(batch, input_len, budget))
    assert chunked.ttft_ms == pytest.approx(float((kernel + overhead).sum()), rel=REL)
    np.testing.assert_allclose(overhead, [expected_overhead(hybrid.overhead, s, 1) for s in (2, 2, 1)], rtol=REL)
    assert chunked.ttft_ms >= plain.ttft_ms * 0.99
    assert chunked.tpot_ms == pytest.approx(plain.tpot_ms, rel=REL)  # decode is unaffected
    # a budget at least the whole prefill changes nothing
    roomy = hybrid.estimate(*SMALL, "fp16", batch_size=batch, input_len=input_len, output_len=3,
                            max_num_batched_tokens=batch * input_len)
    assert roomy == plain


def test_tensor_parallel_iteration_has_allreduces(hybrid):
    pred = hybrid.predict_iteration(*TP4, "fp16", prefill=[(256, 0)], decode=[512] * 4)
    ops = pred.ops.set_index("op")
    for op in ("attn_allreduce", "mlp_allreduce"):
        assert op in ops.index
        assert ops.loc[op, "predicted_ms"] > 0
        assert ops.loc[op, "count"] == get_model("llama-2-70b").num_layers
        assert ops.loc[op, "op_kind"] == "allreduce"
    single = hybrid.predict_iteration(*SMALL, "fp16", prefill=[(256, 0)], decode=[512] * 4)
    assert not single.ops["op_kind"].isin(["allreduce", "allgather"]).any()


# --- bad input -------------------------------------------------------------------------------------

BAD_CHUNKS = [
    ((0, 0), "new_tokens"),
    ((-5, 0), "new_tokens"),
    ((5, -1), "context_len"),
    ((2.5, 0), "whole number"),
    (("a", 0), "integer"),
    ((True, 0), "integer"),
]


@pytest.mark.parametrize(("chunk", "message"), BAD_CHUNKS, ids=[repr(c) for c, _ in BAD_CHUNKS])
def test_bad_prefill_chunk_first(roofline, chunk, message):
    with pytest.raises(InputError, match=r"prefill\[0\]") as err:
        roofline.predict_iteration(*SMALL, prefill=[chunk])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_prefill_chunk_names_its_index(roofline):
    with pytest.raises(InputError, match=r"prefill\[1\]: expected \(new_tokens, context_len\)"):
        roofline.predict_iteration(*SMALL, prefill=[(10, 0), (5,)])


@pytest.mark.parametrize(("chunk", "message"), BAD_CHUNKS[:4], ids=[repr(c) for c, _ in BAD_CHUNKS[:4]])
def test_bad_prefill_chunk_names_its_index(roofline, chunk, message):
    with pytest.raises(InputError, match=r"prefill\[2\]"):
        roofline.predict_iteration(*SMALL, prefill=[(10, 0), (20, 5), chunk])


def test_bad_decode_context_names_its_index(roofline):
    with pytest.raises(InputError, match=r"decode\[2\]"):
        roofline.predict_iteration(*SMALL, decode=[5, 6, -1])


@pytest.mark.parametrize("decode", [[-1], [1.5], ["x"]])
def test_bad_decode_context(roofline, decode):
    with pytest.raises(InputError, match=r"decode\[0\]"):
        roofline.predict_iteration(*SMALL, decode=decode)


def test_empty_iteration(roofline):
    with pytest.raises(InputError, match="empty iteration"):
        roofline.predict_iteration(*SMALL)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": "llama-9"}, "--model"),
    ({"gpu": "h10"}, "--gpu"),
    ({"tp": 0}, "tp"),
    ({"tp": -2}, "tp"),
    ({"tp": 3}, "3 does not divide"),
    ({"dtype": "fp7"}, "--dtype"),
])
def test_bad_configuration(roofline, kwargs, message):
    args = {"model": "llama-2-7b", "gpu": "a100-80gb", "tp": 1, "dtype": "fp16", **kwargs}
    with pytest.raises(InputError, match=message):
        roofline.predict_iteration(**args, decode=[10])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"output_len": 0}, "output_len"),
    ({"batch_size": 0}, "batch_size"),
    ({"input_len": 1.5}, "input_len"),
    ({"max_num_batched_tokens": 0}, "max_num_batched_tokens"),
    ({"tp": 0}, "tp"),
])
def test_bad_estimate(roofline, kwargs, message):
    args = {"batch_size": 1, "input_len": 16, "output_len": 4, **kwargs}
    tp = args.pop("tp", 1)
    with pytest.raises(InputError, match=message):
        roofline.estimate("llama-2-7b", "a100-80gb", tp, "fp16", **args)


# --- CLI ---------------------------------------------------------------------------------------------

@pytest.fixture
def shared_cli(monkeypatch, hybrid):
    """The CLI with the module's hybrid predictor (its tables already built)."""
    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: hybrid)


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


ESTIMATE_KEYS = {"ttft_ms", "tpot_ms", "e2e_ms", "output_tokens_per_s"}


def test_cli_estimate_json(capsys, shared_cli, hybrid):
    code, out, err = run(capsys, "estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--batch-size", "2",
                         "--input-len", "128", "--output-len", "4", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert set(payload) == ESTIMATE_KEYS | {"roofline", "inputs"}
    assert payload["inputs"] == {"model": "llama-2-7b", "gpu": "a100-80gb", "tp": 1, "dtype": "fp16", "batch_size": 2,
                                 "input_len": 128, "output_len": 4, "max_num_batched_tokens": None, "artifacts": None}
    assert set(payload["roofline"]) == ESTIMATE_KEYS
    expected = hybrid.estimate(*SMALL, "fp16", batch_size=2, input_len=128, output_len=4)
    for key in ESTIMATE_KEYS:
        assert payload[key] == pytest.approx(getattr(expected, key), rel=REL)
    assert payload["roofline"]["ttft_ms"] < payload["ttft_ms"]


def test_cli_predict_json(capsys, shared_cli, hybrid):
    code, out, err = run(capsys, "predict", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--prefill", "512:0,128:1024",
                         "--decode", "100,200", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert {"total_ms", "kernel_ms", "overhead_ms", "roofline_ms", "ops"} <= set(payload)
    expected = hybrid.predict_iteration(*SMALL, "fp16", prefill=[(512, 0), (128, 1024)], decode=[100, 200])
    assert payload["total_ms"] == pytest.approx(expected.total_ms, rel=REL)
    assert payload["ops"]
    for op in payload["ops"]:
        assert set(op) == {"op", "op_kind", "count", "bound", "roofline_ms", "predicted_ms", "total_ms"}
        assert op["total_ms"] == pytest.approx(op["count"] * op["predicted_ms"], rel=REL)
    assert sum(o["total_ms"] for o in payload["ops"]) == pytest.approx(expected.ops["total_ms"].sum(), rel=REL)


@pytest.fixture(scope="module")
def small_profiles(tmp_path_factory):
    from features.canonical import DATA_DIR

    table = pd.read_parquet(DATA_DIR / "vidur" / "kernels.parquet").sample(500, random_state=0)
    path = tmp_path_factory.mktemp("profiles") / "small.parquet"
    table.to_parquet(path, index=False)
    return path


def test_cli_evaluate_json(capsys, shared_cli, small_profiles):
    code, out, err = run(capsys, "evaluate", "--profiles", str(small_profiles), "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert {"rows", "hybrid", "roofline", "by_op_kind", "by_gpu"} <= set(payload)
    assert payload["rows"] == 500
    for method in ("hybrid", "roofline"):
        assert {"mdape", "p90_ape"} <= set(payload[method])
        assert 0 <= payload[method]["mdape"] <= payload[method]["p90_ape"]
    assert payload["hybrid"]["mdape"] < payload["roofline"]["mdape"]
    assert payload["by_op_kind"] and payload["by_gpu"]
    assert sum(v["rows"] for v in payload["by_gpu"].values()) == 500
    assert sum(v["rows"] for v in payload["by_op_kind"].values()) == 500


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--prefill", "a:b"], "--prefill"),
    (["predict", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--prefill", "1:2:3"], "--prefill"),
    (["predict", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--decode", "x"], "--decode"),
    (["predict", "--model", "llama-2-7b", "--gpu", "a100-80gb"], "empty iteration"),
    (["predict", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--prefill", "0:5"], "prefill[0]"),
    (["predict", "--model", "llama-2-7", "--gpu", "a100-80gb", "--decode", "5"], "did you mean llama-2-7b"),
    (["evaluate", "--profiles", "/nonexistent/profiles.parquet"], "does not exist"),
    (["estimate", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--tp", "1"], "does not fit"),
    (["estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--output-len", "0"], "--output-len"),
    (["estimate", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--tp", "3"], "3 does not divide"),
])
def test_cli_bad_input_one_line_exit_2(capsys, shared_cli, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]


def test_fast_path_enforces_the_token_limit(roofline):
    with pytest.raises(InputError, match="beyond any supported context"):
        roofline.predict_iteration(*SMALL, prefill=[(20_000_000, 0)])
    with pytest.raises(InputError, match=r"decode\[0\]: 20000000 tokens"):
        roofline.predict_iteration(*SMALL, decode=[20_000_000])


def test_boolean_token_budget_is_rejected(roofline):
    with pytest.raises(InputError, match="max_num_batched_tokens"):
        roofline.estimate(*SMALL[:2], batch_size=2, input_len=8, output_len=2, max_num_batched_tokens=True)
