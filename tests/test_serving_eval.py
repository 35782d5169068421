"""Serving accuracy: reading measured runs (silicon CSV, vllm bench JSON), engine profiles (padding, timing,
fit), and ``inference-sim evaluate --serving``."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest

import inference_sim.cli as cli
from features.silicon import CSV_REQUIRED, read_serving_results
from inference_sim import common
from inference_sim.commands import prediction as cli_prediction
from predictor.errors import InputError
from predictor.overhead import OverheadModel
from predictor.parallel import ParallelConfig
from scheduler.engine import EngineConfig, Simulator
from scheduler.engine_profiles import EngineProfile, fit_profile, get_profile, legacy_profile
from scheduler.serving_eval import predict_serving, score_serving
from scheduler.serving_rows import row_dtype, row_parallel
from scheduler.workload import build_workload

# two Llama-3.1-8B runs on H100 (one vLLM, one TRT-LLM), one of an unknown model, one on an unknown GPU
SILICON = {
    "id": ["a_c4", "b_c8", "c_c2", "d_c2"], "backend": ["vllm", "trtllm", "vllm", "sglang"],
    "backend_version": ["0.19.0", "1.0.0rc3", "0.19.0", "0.5.9"],
    "model_path": ["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "acme/NoSuchModel-9B",
                   "meta-llama/Llama-3.1-8B-Instruct"],
    "system": ["h100_sxm", "h100_sxm", "h100_sxm", "no_such_gpu"], "precision": ["bf16"] * 4, "mode": ["agg"] * 4,
    "isl": [512, 256, 128, 128], "osl": [64, 32, 16, 16], "gemm_quant_mode": ["bf16", "fp8", "bf16", "bf16"],
    "moe_quant_mode": ["bf16"] * 4, "batch_size": [4, 8, 2, 2], "tp_size": [1, 2, 1, 1], "pp_size": [1, 1, 1, 1],
    "attention_dp_size": [0, 1, 1, 1], "moe_tp_size": [0, 0, 1, 1], "moe_ep_size": [0, 0, 1, 1],
    "silicon_ttft_ms": [40.0, 30.0, 10.0, 10.0], "silicon_tpot_ms": [8.0, 6.0, 5.0, 5.0],
}
BENCH = {"date": "20260101-000000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
         "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct", "num_prompts": 40, "max_concurrency": 4,
         "completed": 40, "total_input_tokens": 40 * 512, "total_output_tokens": 40 * 64,
         "random_input_len": 512, "random_output_len": 64, "mean_ttft_ms": 35.0, "median_ttft_ms": 34.0,
         "mean_tpot_ms": 7.5, "median_tpot_ms": 7.4, "system": "h100_sxm"}


@pytest.fixture
def silicon_csv(tmp_path):
    path = tmp_path / "silicon.csv"
    pd.DataFrame(SILICON).to_csv(path, index=False)
    return path


def test_silicon_rows_are_read_with_zero_degrees_as_one(silicon_csv):
    table = read_serving_results(silicon_csv)
    assert list(table["framework"]) == ["vllm", "trtllm", "vllm", "sglang"]
    assert list(table["concurrency"]) == [4, 8, 2, 2]
    assert list(table["dp_attention"]) == [1, 1, 1, 1] and list(table["ep"]) == [1, 1, 1, 1]
    assert list(table["measured_tpot_ms"]) == [8.0, 6.0, 5.0, 5.0]


def test_bench_json_reads_the_documented_keys(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    row = read_serving_results(path).iloc[0]
    assert (row["framework"], row["concurrency"], row["isl"], row["osl"]) == ("vllm", 4, 512, 64)
    assert (row["system"], row["tp"], row["measured_ttft_ms"]) == ("h100_sxm", 1, 35.0)


def test_bench_json_reads_a_data_and_expert_parallel_layout_by_vllm_s_names(tmp_path):
    """``--metadata data_parallel_size=8 enable_expert_parallel=true`` (strings): attention DP 8 with the experts
    split over all 8 GPUs; ``expert_parallel_size`` names EP directly; a degree that is not a positive integer is an
    input error naming its key."""
    path = tmp_path / "bench.json"
    wide = BENCH | {"model_id": "deepseek-ai/DeepSeek-V3", "tensor_parallel_size": "1", "data_parallel_size": "8",
                    "enable_expert_parallel": "true", "max_concurrency": 64}
    path.write_text(json.dumps([wide, wide | {"tensor_parallel_size": "2", "data_parallel_size": "4",
                                              "enable_expert_parallel": None, "expert_parallel_size": "4"}]))
    rows = read_serving_results(path)
    assert rows[["tp", "dp_attention", "ep", "moe_tp", "concurrency"]].values.tolist() == [[1, 8, 8, 1, 64],
                                                                                       [2, 4, 4, 2, 64]]
    assert row_parallel(rows.iloc[0]) == ParallelConfig(tp=1, dp_attention=8, ep=8)
    path.write_text(json.dumps(BENCH | {"data_parallel_size": "eight"}))
    with pytest.raises(InputError, match="data_parallel_size: must be a positive integer, got 'eight'"):
        read_serving_results(path)


def test_sglang_bench_serving_json_lines_are_read_with_the_server_s_arguments(tmp_path):
    """``sglang.bench_serving --output-file`` appends one result per line and records no model id: the model and the
    layout come from ``server_info`` (tp_size counts every GPU; with DP attention, dp_size ranks of tp / dp each)."""
    info = {"model_path": "deepseek-ai/DeepSeek-V3", "tp_size": 8, "dp_size": 8, "enable_dp_attention": True,
            "ep_size": 8, "quantization": "modelopt_fp4", "version": "0.5.9"}
    line = {k: v for k, v in BENCH.items() if k not in ("model_id", "tokenizer_id")}
    line |= {"backend": "sglang-oai", "server_info": info, "max_concurrency": 64}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(line) + "\n" + json.dumps(line | {"max_concurrency": 128}) + "\n")
    rows = read_serving_results(path)
    assert rows[["framework", "model_path", "backend_version", "gemm_quant_mode"]].values.tolist()[0] == [
        "sglang", "deepseek-ai/DeepSeek-V3", "0.5.9", "modelopt_fp4"]
    assert rows[["tp", "dp_attention", "ep", "moe_tp", "concurrency"]].values.tolist() == [[1, 8, 8, 1, 64],
                                                                                       [1, 8, 8, 1, 128]]
    assert row_dtype(rows.iloc[0]) == "nvfp4"
    path.write_text(json.dumps(line) + "\n{not json\n")
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        read_serving_results(path)
    path.write_text(json.dumps({k: v for k, v in line.items() if k != "server_info"}))
    with pytest.raises(InputError, match="lacks key 'model_id'"):
        read_serving_results(path)


@pytest.mark.parametrize(("gemm", "moe", "bits"), [("int8_wo", "int8_wo", (8, 16, "fp16")), ("sq", "sq", (8, 8, "int8")),
                                                   ("fp8_ootb", "fp8_ootb", (8, 8, "fp8")),
                                                   ("bf16", "w4afp8", (4, 8, "fp8")),
                                                   ("bf16", "w4a8_mxfp4_mxfp8", (4.25, 8, "fp8"))])
def test_aiconfigurator_quant_modes_map_to_their_weight_and_activation_bits(gemm, moe, bits):
    from predictor.precision import parse_dtype

    p = parse_dtype(row_dtype({"gemm_quant_mode": gemm, "moe_quant_mode": moe}))
    assert (p.weight_bits, p.act_bits, p.compute) == bits


def test_bench_json_without_lengths_averages_the_token_totals(tmp_path):
    item = {k: v for k, v in BENCH.items() if not k.startswith("random_") and k != "system"}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([item]))
    row = read_serving_results(path, gpu="h100_sxm", tp=2).iloc[0]
    assert (row["isl"], row["osl"], row["tp"]) == (512, 64, 2)


@pytest.mark.parametrize("model_id, quant", [("meta-llama/Llama-3.1-8B-Instruct", "bf16"),
                                             ("deepseek-ai/DeepSeek-V3", "fp8"), ("openai/gpt-oss-120b", "mxfp4"),
                                             ("acme/Unknown-70B-AWQ", "w4a16")])
def test_bench_json_without_quantization_is_the_checkpoint_s_precision(tmp_path, model_id, quant):
    """``vllm bench serve`` does not record the precision; vLLM serves a checkpoint at its own."""
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH | {"model_id": model_id}))
    row = read_serving_results(path).iloc[0]
    assert (row["gemm_quant_mode"], row["moe_quant_mode"]) == (quant, quant)
    path.write_text(json.dumps(BENCH | {"model_id": model_id, "quantization": "fp16"}))
    assert read_serving_results(path).iloc[0]["gemm_quant_mode"] == "fp16"


def test_a_folder_of_results_is_read_as_one_table(tmp_path):
    (tmp_path / "run_c4.json").write_text(json.dumps(BENCH))
    (tmp_path / "run_c8.json").write_text(json.dumps(BENCH | {"max_concurrency": 8, "mean_ttft_ms": 50.0}))
    pd.DataFrame(SILICON).to_csv(tmp_path / "silicon.csv", index=False)
    (tmp_path / "notes.txt").write_text("not a result")
    table = read_serving_results(tmp_path)
    assert list(table["concurrency"]) == [4, 8, 4, 8, 2, 2]  # run_c4.json, run_c8.json, silicon.csv
    assert table["id"].is_unique and list(table["id"][:2]) == ["run_c4#1", "run_c8#1"]


def test_folders_with_clashing_ids_prefix_them_with_the_file(tmp_path):
    for name in ("a.csv", "b.csv"):
        pd.DataFrame(SILICON).to_csv(tmp_path / name, index=False)
    table = read_serving_results(tmp_path)
    assert len(table) == 8 and table["id"].is_unique and table["id"].iloc[0] == "a.csv:a_c4"


def test_repeated_ids_in_one_csv_are_made_unique_and_each_row_predicted_once(tmp_path, hybrid):
    rows = {k: [v[0], v[1]] for k, v in SILICON.items()} | {"id": ["same", "same"]}
    rows["isl"] = [512, 1024]
    pd.DataFrame(rows).to_csv(tmp_path / "dup.csv", index=False)
    table = read_serving_results(tmp_path / "dup.csv")
    assert list(table["id"]) == ["same", "same@row2"]
    out = predict_serving(table, predictor=hybrid, with_roofline=False)
    assert len(out) == 2 and out["pred_ttft_ms"].iloc[1] > out["pred_ttft_ms"].iloc[0]  # joined to its own row


def test_runs_of_one_configuration_under_two_frameworks_are_each_simulated_with_their_own_scheduler(tmp_path, hybrid):
    from scheduler.serving_eval import kernel_basis

    rows = {k: [v[0], v[0]] for k, v in SILICON.items()} | {"id": ["as_sglang", "as_vllm"],
                                                             "backend": ["sglang", "vllm"]}
    pd.DataFrame(rows).to_csv(tmp_path / "two.csv", index=False)
    both = kernel_basis(read_serving_results(tmp_path / "two.csv"), predictor=hybrid).set_index("id")
    alone = {name: kernel_basis(read_serving_results(tmp_path / "two.csv").iloc[[i]], predictor=hybrid).iloc[0]
             for i, name in enumerate(("as_sglang", "as_vllm"))}
    columns = ["kernel_ttft_ms", "kernel_tpot_ms", "kernel_kv_tokens", "roofline_ttft_ms", "roofline_tpot_ms"]
    for name in ("as_sglang", "as_vllm"):  # the same values whichever run is simulated first
        assert both.loc[name, columns].to_numpy(float) == pytest.approx(alone[name][columns].to_numpy(float))
    # SGLang's prefill-first scheduler and static KV-cache rule are not vLLM's: one simulation cannot serve both
    assert both.loc["as_sglang", "kernel_kv_tokens"] != both.loc["as_vllm", "kernel_kv_tokens"]


def test_a_folder_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="^--serving: folder .* holds no .csv, .json or .jsonl file$"):
        read_serving_results(tmp_path)


def _changed_silicon(tmp_path, change: dict):
    """SILICON with a column dropped (``{"drop": name}``) or replaced, written to a CSV."""
    raw = dict(SILICON)
    if "drop" in change:
        raw.pop(change["drop"])
    else:
        raw |= change
    path = tmp_path / "bad.csv"
    pd.DataFrame(raw).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("change, message", [
    ({"drop": "silicon_tpot_ms"}, "silicon_tpot_ms"),
    ({"batch_size": [-4, 8, 2, 2]}, "concurrency"),
    ({"backend": ["vllm", "tgi", "vllm", "sglang"]}, "backend"),
])
def test_bad_silicon_files_are_input_errors(tmp_path, change, message):
    path = _changed_silicon(tmp_path, change)
    with pytest.raises(InputError, match=message):
        read_serving_results(path)


def test_every_required_column_is_named_when_missing(tmp_path):
    for column in CSV_REQUIRED:
        path = tmp_path / "bad.csv"
        pd.DataFrame({k: v for k, v in SILICON.items() if k != column}).to_csv(path, index=False)
        with pytest.raises(InputError, match=repr(column)):
            read_serving_results(path)


def test_cuda_graph_padding_rounds_decode_batches_up_to_a_captured_size():
    p = EngineProfile("vllm", cuda_graph_max_batch=512)
    assert [p.padded_batch(b) for b in (1, 2, 3, 4, 5, 8, 9, 17, 512, 513)] == [1, 2, 4, 4, 8, 8, 16, 24, 512, 513]
    assert EngineProfile("x", cuda_graph_max_batch=0).padded_batch(5) == 5


def test_a_profile_times_steps_as_its_formula(roofline):
    profile = EngineProfile("vllm", kernel_scale=0.5, overhead=OverheadModel(2.0, 0.1, 3.0), cuda_graph_max_batch=512)
    base = roofline.bind("llama-2-7b", "a100-80gb", 2, "fp16")
    timed = profile.apply(base)
    # decode-only: 5 sequences run the graph of 8 (context scaled with them), plus 2 + 0.1 × 5 + 3 (two GPUs)
    expected = 0.5 * base.iteration_ms(0, 0, 0, 0, 8, 800) + 2.0 + 0.5 + 3.0
    assert timed.iteration_ms(0, 0, 0, 0, 5, 500) == pytest.approx(expected, rel=1e-12)
    # a prefill step is not padded
    expected = 0.5 * base.iteration_ms(1, 256, 256, 1, 5, 500) + 2.0 + 0.6 + 3.0
    assert timed.iteration_ms(1, 256, 256, 1, 5, 500) == pytest.approx(expected, rel=1e-12)
    steps = timed.decode_steps_ms(5, 500, 3)
    assert steps[0] == pytest.approx(timed.iteration_ms(0, 0, 0, 0, 5, 500), rel=1e-9)


def test_fit_recovers_known_costs():
    # measured = 0.8 × kernel + 0.2 × roofline + 1.5 + 0.05 × batch (+ 2 on several GPUs); TTFT adds 30 + 0.5 × C
    rng = np.random.default_rng(0)
    n = 40
    rows = pd.DataFrame({"kernel_tpot_ms": rng.uniform(5, 50, n), "roofline_tpot_ms": rng.uniform(2, 30, n),
                         "kernel_ttft_ms": rng.uniform(20, 500, n), "roofline_ttft_ms": rng.uniform(10, 300, n),
                         "concurrency": rng.integers(1, 128, n), "dp_attention": 1, "gpus": rng.choice([1, 4], n)})
    step = 1.5 + 0.05 * rows["concurrency"] + 2.0 * (rows["gpus"] > 1)
    rows["measured_tpot_ms"] = 0.8 * rows["kernel_tpot_ms"] + 0.2 * rows["roofline_tpot_ms"] + step
    rows["measured_ttft_ms"] = (0.8 * rows["kernel_ttft_ms"] + 0.2 * rows["roofline_ttft_ms"] + step
                                + 30 + 0.5 * rows["concurrency"])
    p = fit_profile("vllm", rows)
    assert (p.kernel_scale, p.roofline_scale) == (pytest.approx(0.8, rel=1e-6), pytest.approx(0.2, rel=1e-6))
    assert (p.overhead.base_ms, p.overhead.per_seq_ms, p.overhead.multi_gpu_ms) == (
        pytest.approx(1.5, rel=1e-6), pytest.approx(0.05, rel=1e-6), pytest.approx(2.0, rel=1e-6))
    assert (p.admission_base_ms, p.admission_per_client_ms) == (pytest.approx(30, rel=1e-6), pytest.approx(0.5, rel=1e-6))


def _profile_rows(n: int, seed: int) -> pd.DataFrame:
    """Runs whose measured times follow 0.6 × kernel + 0.4 × roofline + 1 ms per step (+ 40 ms admission)."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"kernel_tpot_ms": rng.uniform(5, 50, n), "roofline_tpot_ms": rng.uniform(2, 4, n),
                         "kernel_ttft_ms": rng.uniform(20, 500, n), "roofline_ttft_ms": rng.uniform(10, 20, n),
                         "concurrency": rng.integers(1, 128, n), "dp_attention": 1, "gpus": 1, "skip": "",
                         "framework": "vllm", "mode": "agg"})
    rows["measured_tpot_ms"] = 0.6 * rows["kernel_tpot_ms"] + 0.4 * rows["roofline_tpot_ms"] + 1.0
    rows["measured_ttft_ms"] = 0.6 * rows["kernel_ttft_ms"] + 0.4 * rows["roofline_ttft_ms"] + 1.0 + 40.0
    return rows


def test_fit_profile_is_robust_to_runs_whose_kernels_are_far_off():
    from scipy.optimize import lsq_linear

    rows = _profile_rows(60, 1)
    bad = rows.index[:3]  # one run in twenty: the kernel prediction 3× the truth (an unseen kernel family)
    rows.loc[bad, ["kernel_tpot_ms", "kernel_ttft_ms"]] *= 3.0
    p = fit_profile("vllm", rows)
    y, roof = rows["measured_tpot_ms"].to_numpy(), rows["roofline_tpot_ms"].to_numpy()
    design = np.column_stack([rows["kernel_tpot_ms"] - roof, np.ones(len(rows)), rows["concurrency"], np.zeros(len(rows))])
    plain = lsq_linear(design / y[:, None], (y - roof) / y, bounds=([0] * 4, [1, np.inf, np.inf, np.inf])).x[0]
    assert abs(p.kernel_scale - 0.6) < 0.08
    assert abs(p.kernel_scale - 0.6) < abs(plain - 0.6) / 2  # plain least squares: pulled twice as far by the three
    assert p.admission_base_ms == pytest.approx(40.0, rel=0.2)


def test_fit_profiles_uses_aggregated_runs_only():
    from scheduler.engine_profiles import fit_profiles

    agg = _profile_rows(30, 2)
    disagg = _profile_rows(30, 3).assign(mode="disagg")
    disagg["measured_tpot_ms"] *= 0.2  # pools sized unlike the simulation: nothing an aggregated engine shows
    both = fit_profiles(pd.concat([agg, disagg], ignore_index=True))["vllm"]
    alone = fit_profile("vllm", agg)
    assert both.fitted_rows == 30
    assert both.to_dict() == alone.to_dict()
    assert both.kernel_scale == pytest.approx(0.6, rel=1e-4)


def test_admission_delay_counts_in_ttft_but_not_in_tpot(roofline):
    from scheduler.serving_eval import closed_loop_summary

    wl = build_workload("concurrency", 12, prompt_len=256, output_len=16, concurrency=1)
    plain = EngineProfile("vllm")
    delayed = EngineProfile("vllm", admission_base_ms=50.0)
    a = closed_loop_summary(Simulator(roofline, "llama-2-7b", "a100-80gb", config=EngineConfig(), profile=plain).run(wl), 1)
    b = closed_loop_summary(Simulator(roofline, "llama-2-7b", "a100-80gb", config=EngineConfig(), profile=delayed).run(wl), 1)
    # one client: the engine is idle while the request travels, so the 50 ms add to TTFT and nothing else
    assert b["mean_ttft_ms"] == pytest.approx(a["mean_ttft_ms"] + 50.0, rel=1e-9)
    assert b["mean_tpot_ms"] == pytest.approx(a["mean_tpot_ms"], rel=1e-9)


def test_legacy_profile_is_the_vidur_fit():
    from predictor.predictor import DEFAULT_OVERHEAD

    p = get_profile("legacy")
    assert p == legacy_profile() and p.overhead == DEFAULT_OVERHEAD and p.max_num_batched_tokens == 2048


def test_unknown_framework_is_an_input_error():
    with pytest.raises(InputError, match="--framework"):
        get_profile("tgi")


def test_predict_and_score_count_skips_by_reason(silicon_csv, hybrid):
    table = read_serving_results(silicon_csv)
    predictions = predict_serving(table, predictor=hybrid)
    report = score_serving(predictions)
    assert report["rows"] == 4 and report["predicted"] == 2
    assert report["skipped"] == {"unknown_model": 1, "unknown_gpu": 1}
    assert set(report["by_backend"]) == {"vllm", "trtllm"}
    done = predictions[predictions["skip"] == ""]
    ape = np.abs(done["pred_tpot_ms"] / done["measured_tpot_ms"] - 1)
    assert report["tpot"]["mdape"] == pytest.approx(float(np.median(ape)))
    assert (done["roofline_tpot_ms"] < done["pred_tpot_ms"]).all()  # ideal kernels, no overhead


def test_a_non_positive_measurement_is_skipped_and_underscored_backend_names_are_read(tmp_path, hybrid):
    path = _changed_silicon(tmp_path, {"backend": ["vllm", "tensorrt_llm", "vllm", "sglang"],
                                       "silicon_tpot_ms": [-8.0, 6.0, 5.0, 5.0]})
    table = read_serving_results(path)
    assert table["framework"].tolist() == ["vllm", "trtllm", "vllm", "sglang"]
    report = score_serving(predict_serving(table.iloc[:2], predictor=hybrid, with_roofline=False))
    assert report["predicted"] == 1 and report["skipped"] == {"no_measurement": 1}


def test_runs_over_the_client_limit_are_skipped_under_their_reason(silicon_csv, hybrid):
    from scheduler import serving_eval

    table = read_serving_results(silicon_csv).iloc[:2]  # 4 and 8 clients
    report = score_serving(predict_serving(table, predictor=hybrid, with_roofline=False, max_concurrency=4))
    assert report["predicted"] == 1 and report["skipped"] == {"concurrency_over_limit": 1}
    # the CLI's default is the library's
    default = inspect.signature(cli_prediction.evaluate).parameters["max_concurrency"].default
    assert default == serving_eval.MAX_CONCURRENCY


def test_cli_evaluate_serving_json_and_predictions_file(silicon_csv, tmp_path, capsys, monkeypatch, hybrid):
    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: hybrid)
    out_csv = tmp_path / "pred.csv"
    code = cli.main(["evaluate", "--serving", str(silicon_csv), "--json", "--out", str(out_csv), "--n-jobs", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    for key in ("rows", "predicted", "skipped", "ttft", "tpot", "roofline", "by_system", "by_backend", "by_model"):
        assert key in payload, key
    assert set(payload["ttft"]) == {"mdape", "p90_ape"} and set(payload["roofline"]) == {"ttft", "tpot"}
    assert len(pd.read_csv(out_csv)) == 4


def test_an_instances_clients_are_its_batch_per_attention_dp_rank_times_the_ranks(tmp_path):
    """aiconfigurator's ``batch_size`` is per attention-DP rank: an aggregated run with DP 4 and batch 2 has 8 clients,
    whatever the harness recorded for all its replicas (``silicon_concurrency``); a run without a batch size takes the
    recorded concurrency, else the id's ``_c<N>_``, and a disaggregated run without either has decode batch × workers
    × DP clients."""
    rows = {k: v[:4] for k, v in SILICON.items()}
    rows |= {"id": ["dp4", "replicas_c416", "named_c64_tp8", "recorded"], "batch_size": [2, 13, None, None],
             "attention_dp_size": [4, 1, 8, 1],
             "silicon_data_source": ["", "x; silicon_concurrency=416; y", "", "x; silicon_concurrency=24; y"]}
    pd.DataFrame(rows).to_csv(tmp_path / "dp.csv", index=False)
    assert read_serving_results(tmp_path / "dp.csv")["concurrency"].tolist() == [8, 13, 64, 24]
    disagg = {k: v[:1] for k, v in SILICON.items()} | {"id": ["pools"], "mode": ["disagg"], "batch_size": [None]}
    disagg |= {f"{pool}_{name}": [1] for pool in ("prefill", "decode") for name in ("tp_size", "num_workers")}
    disagg |= {"decode_batch_size": [16], "decode_num_workers": [2], "decode_attention_dp_size": [4]}
    pd.DataFrame(disagg).to_csv(tmp_path / "disagg.csv", index=False)
    assert read_serving_results(tmp_path / "disagg.csv")["concurrency"].tolist() == [128]


def test_disagg_rows_without_worker_counts_are_flagged_and_warned_about(tmp_path, capsys, monkeypatch, hybrid):
    rows = {k: v[:2] for k, v in SILICON.items()} | {"mode": ["disagg", "disagg"], "batch_size": [None, None],
                                                     "id": ["x_c4_", "y_c4_"]}
    rows |= {f"{pool}_{name}": [1, 1] for pool in ("prefill", "decode") for name in ("tp_size", "batch_size")}
    rows |= {"prefill_num_workers": [2, None], "decode_num_workers": [1, 1]}
    pd.DataFrame(rows).to_csv(tmp_path / "disagg.csv", index=False)
    table = read_serving_results(tmp_path / "disagg.csv")
    assert list(table["pool_workers_given"]) == [True, False] and list(table["prefill_num_workers"]) == [2, 1]
    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: hybrid)
    code = cli.main(["evaluate", "--serving", str(tmp_path / "disagg.csv"), "--json", "--n-jobs", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and lines[0] == ("warning: 1 disaggregated runs give no prefill_num_workers or "
                                      "decode_num_workers: each of their pools is simulated as one worker "
                                      "(docs/serving-accuracy.md scores these runs apart)")
    # then only progress (stderr is not a terminal here: plain lines, not a bar)
    assert lines[1:] and all(line.startswith("evaluate --serving: ") for line in lines[1:])


def test_worker_processes_predict_what_one_process_does(silicon_csv, hybrid):
    table = read_serving_results(silicon_csv)
    serial = predict_serving(table, predictor=hybrid, with_roofline=False)
    pooled = predict_serving(table, n_jobs=2, with_roofline=False)  # blocks of (model, GPU) groups in 2 processes
    pd.testing.assert_frame_equal(pooled, serial)


def test_progress_reports_each_simulation_pass_up_to_its_total(silicon_csv, hybrid):
    from scheduler.serving_model import ServingCalibration

    table = read_serving_results(silicon_csv)
    calls: list = []
    calibration = ServingCalibration.load()
    out = predict_serving(table, predictor=hybrid, calibration=calibration,
                          progress=lambda step, done, total: calls.append((step, done, total)))
    steps = list(dict.fromkeys(step for step, _, _ in calls))
    assert steps[0] == "kernel-only simulations and roofline"
    for step in steps:
        done = [d for s, d, _ in calls if s == step]
        totals = {t for s, _, t in calls if s == step}
        assert done[0] == 0 and done == sorted(done) and len(totals) == 1 and done[-1] == totals.pop()
    assert calls[0][2] == len(table)
    silent = predict_serving(table, predictor=hybrid, calibration=calibration)
    pd.testing.assert_frame_equal(out, silent)  # reporting changes nothing


@pytest.mark.parametrize("change, message", [
    ({"drop": "batch_size"}, "batch_size"),
    ({"batch_size": [-1, 8, 2, 2]}, "concurrency"),
    ({"backend": ["vllm", "lmdeploy", "vllm", "sglang"]}, "backend"),
    ({"mode": ["agg", "hybrid", "agg", "agg"]}, "mode: unknown value 'hybrid'; allowed: agg, disagg (row 2)"),
    ({"isl": [512, 0, 128, 128]}, "isl: must be a positive integer, got 0 (row 2)"),
])
def test_cli_evaluate_serving_bad_input_exits_2(tmp_path, capsys, change, message):
    path = _changed_silicon(tmp_path, change)
    code = cli.main(["evaluate", "--serving", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_static_batch_under_a_plain_profile_is_the_predictors_static_estimate(roofline):
    """A profile of kernels only (scale 1, no overhead, no CUDA-graph padding) re-scores a static batch exactly as
    ``Predictor.estimate`` times it with the same prefill token budget."""
    from benchmarks.experiments.serving_static import profile_estimate
    from scheduler.engine_profiles import EngineProfile

    profile = EngineProfile("plain", cuda_graph_max_batch=0, max_num_batched_tokens=2048)
    bound = profile.apply(roofline.bind("llama-2-7b", "a100-80gb", 1, "fp16"))
    ttft, tpot = profile_estimate(bound, profile, batch=4, prompt=1000, output=64)
    expected = roofline.estimate("llama-2-7b", "a100-80gb", 1, "fp16", batch_size=4, input_len=1000, output_len=64,
                                 max_num_batched_tokens=2048)
    assert ttft == pytest.approx(expected.ttft_ms, rel=1e-9) and tpot == pytest.approx(expected.tpot_ms, rel=1e-9)


def test_held_out_profiles_are_fitted_without_the_held_out_group():
    from benchmarks.experiments.serving_profiles import fold_profiles
    from scheduler.engine_profiles import fit_profiles

    a, b = _profile_rows(30, 4).assign(system="gpu_a"), _profile_rows(30, 5).assign(system="gpu_b")
    b["measured_tpot_ms"] *= 3.0  # a GPU unlike the other: were it in its own fold's fit, the fit would move
    basis = pd.concat([a, b], ignore_index=True).assign(id=lambda f: [f"r{i}" for i in range(len(f))])
    folds = fold_profiles(basis, "system")
    assert sorted(folds) == ["gpu_a", "gpu_b"]
    assert folds["gpu_b"]["vllm"].to_dict() == fit_profiles(a)["vllm"].to_dict()
    assert folds["gpu_a"]["vllm"].to_dict() == fit_profiles(b)["vllm"].to_dict()
    assert folds["gpu_b"]["vllm"].kernel_scale == pytest.approx(0.6, rel=1e-4)


def test_the_kernel_families_table_scores_both_bases_held_out_by_gpu_and_by_model():
    from benchmarks.experiments.serving_accuracy import family_lines

    def runs(pred_ttft, pred_tpot):
        frame = pd.DataFrame({"measured_ttft_ms": [100.0, 200.0], "measured_tpot_ms": [10.0, 20.0],
                              "pred_ttft_ms": pred_ttft, "pred_tpot_ms": pred_tpot,
                              "kernel_ttft_ms": [50.0, 100.0], "kernel_tpot_ms": [5.0, 10.0]})
        return {"logo": frame, "lomo": frame.iloc[:1]}

    lines = family_lines(runs([110.0, 220.0], [10.0, 20.0]), runs([150.0, 300.0], [12.0, 24.0]))
    rows = [line for line in lines if line.startswith(("| GPU", "| model"))]
    assert [r.split(" | ")[:3] for r in rows] == [["| GPU", "pooled (shipped)", "2"], ["| GPU", "families", "2"],
                                                  ["| model", "pooled (shipped)", "1"], ["| model", "families", "1"]]
    # MdAPE / p90 of TTFT, TPOT, then the kernel-only pair (50% under the measurements in both bases)
    assert rows[0].split(" | ")[3:] == ["10.0% / 10%", "0.0% / 0%", "50.0% / 50%", "50.0% / 50% |"]
    assert rows[1].split(" | ")[3:5] == ["50.0% / 50%", "20.0% / 20%"]


def test_cli_evaluate_serving_bounds_a_run_on_a_gpu_outside_the_calibration(tmp_path, capsys, monkeypatch, hybrid):
    """The shipped calibration never saw an H200: a run there is kept no slower than its prediction on the H100
    (which the H200 dominates); the same run on the H100 is the calibration's own (scheduler/serving_bounds.py)."""
    rows = {k: v[:1] * 2 for k, v in SILICON.items()} | {"id": ["on_h200", "on_h100"], "system": ["h200_sxm", "h100_sxm"]}
    pd.DataFrame(rows).to_csv(tmp_path / "h200.csv", index=False)
    monkeypatch.setattr(common, "_load_predictor", lambda artifacts: hybrid)
    out_csv = tmp_path / "pred.csv"
    code = cli.main(["evaluate", "--serving", str(tmp_path / "h200.csv"), "--json", "--out", str(out_csv),
                     "--n-jobs", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    predicted = pd.read_csv(out_csv).set_index("id")
    assert predicted.loc["on_h200", "bound_gpus"] == 1 and predicted.loc["on_h100", "bound_gpus"] == 0
    assert predicted["anchor_runs"].eq(0).all()
    assert predicted.loc["on_h200", "pred_tpot_ms"] <= predicted.loc["on_h100", "pred_tpot_ms"] * (1 + 1e-9)
    assert json.loads(out)["bounded"] == int(predicted["bounded"].sum())
