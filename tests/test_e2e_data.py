"""Loaders for end-to-end measurements, CPU overheads, traces and SamuLLM data (features.e2e),
and the reference Parquet files shipped in data/ (features.reference_data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import e2e, reference_data
from predictor.errors import InputError

SPLITWISE_HEADER = (
    "model,hardware,prompt_size,batch_size,token_size,peak_power,average_power,"
    "prompt_time,token_time,e2e_time,tensor_parallel"
)


def _write(path, header: str, rows: list[str]):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _sw(model="llama2-70b", hw="a100-80gb", prompt=512, batch=1, tokens=128,
        pt=100.0, tt=50.0, e2e=6500.0, tp=4) -> str:
    return f"{model},{hw},{prompt},{batch},{tokens},0,0,{pt},{tt},{e2e},{tp}"


@pytest.fixture
def splitwise_csv(tmp_path):
    rows = [
        # three repeats of one point: medians 100 / 50 / 6500
        _sw(pt=90.0, tt=49.0, e2e=6400.0), _sw(pt=100.0, tt=50.0, e2e=6500.0), _sw(pt=300.0, tt=70.0, e2e=9000.0),
        # the same point on H100, and its derived power-capped copy (dropped)
        _sw(hw="h100-80gb", pt=60.0, tt=30.0, e2e=4000.0),
        _sw(hw="h100-80gb-pcap", pt=78.0, tt=30.0, e2e=4000.0),
        # a long output: e2e unreliable
        _sw(tokens=1024, pt=100.0, tt=50.0, e2e=9000.0),
        # unsupported model (dropped)
        _sw(model="bloom-176b", tp=8), _sw(model="bloom-176b", hw="h100-80gb", tp=8),
        # TP2 batch 64 anomaly (dropped, on both GPUs); TP2 batch 32 kept
        _sw(batch=64, tp=2), _sw(batch=64, tp=2, hw="h100-80gb"), _sw(batch=32, tp=2),
    ]
    return _write(tmp_path / "perf_model.csv", SPLITWISE_HEADER, rows)


# --- Splitwise --------------------------------------------------------------------------------
def test_splitwise_median_of_repeats(splitwise_csv):
    df, info = e2e.load_splitwise(splitwise_csv)
    assert list(df.columns) == list(e2e.SPLITWISE_COLUMNS)
    row = df[(df.gpu == "a100-80gb") & (df.tp == 4) & (df.batch_size == 1) & (df.token_size == 128)]
    assert len(row) == 1
    r = row.iloc[0]
    assert r.model == "llama-2-70b"
    assert (r.prompt_time_ms, r.token_time_ms, r.e2e_time_ms, r.repeats) == (100.0, 50.0, 6500.0, 3)
    assert set(df.gpu) == {"a100-80gb", "h100-sxm"}
    assert df[["tp", "prompt_size", "batch_size", "token_size", "repeats"]].dtypes.eq("int64").all()
    assert info["output_rows"] == len(df) == 4
    assert info["kept_rows"] == 6


def test_splitwise_drops_are_counted(splitwise_csv):
    df, info = e2e.load_splitwise(splitwise_csv)
    assert info["input_rows"] == 11
    assert info["dropped"]["derived_not_measured"] == 1
    assert info["dropped"]["unsupported_model"] == 2
    assert info["dropped"]["kv_overflow_anomaly"] == 2
    assert info["dropped"]["invalid_value"] == 0
    assert info["kept_rows"] + sum(info["dropped"].values()) == info["input_rows"]
    assert not df.model.str.contains("bloom").any()
    assert not ((df.tp == 2) & (df.batch_size == 64)).any()
    assert ((df.tp == 2) & (df.batch_size == 32)).sum() == 1


def test_splitwise_e2e_nan_above_128_tokens(splitwise_csv):
    df, info = e2e.load_splitwise(splitwise_csv)
    long = df[df.token_size > 128]
    assert len(long) == 1 and long.e2e_time_ms.isna().all()
    assert long.prompt_time_ms.notna().all() and long.token_time_ms.notna().all()
    assert df[df.token_size <= 128].e2e_time_ms.notna().all()
    assert info["e2e_masked_rows"] == 1


def test_splitwise_missing_column_names_file_and_column(tmp_path):
    path = _write(tmp_path / "perf.csv", SPLITWISE_HEADER.replace(",token_time", ""),
                  ["llama2-70b,a100-80gb,512,1,128,0,0,100,6500,4"])
    with pytest.raises(InputError) as err:
        e2e.load_splitwise(path)
    msg = str(err.value)
    assert "perf.csv" in msg and "'token_time'" in msg and "\n" not in msg


def test_splitwise_non_numeric_names_file_and_column(tmp_path):
    path = _write(tmp_path / "perf.csv", SPLITWISE_HEADER, [_sw(), _sw(pt="fast")])
    with pytest.raises(InputError, match=r"perf\.csv.*'prompt_time'.*'fast'.*line 3"):
        e2e.load_splitwise(path)


@pytest.mark.parametrize("content", ["", SPLITWISE_HEADER + "\n"], ids=["zero-bytes", "header-only"])
def test_empty_file_raises(tmp_path, content):
    path = tmp_path / "perf.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=r"perf\.csv"):
        e2e.load_splitwise(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        e2e.load_trace(tmp_path / "nope.csv")


# --- Vidur CPU overheads ----------------------------------------------------------------------
CPU_HEADER = (
    ",schedule_mean,schedule_median,sampler_e2e_median,prepare_inputs_e2e_median,"
    "process_model_outputs_median,model_execution_e2e_median,model_name,batch_size,"
    "tensor_parallel_degree,ray_comm_time_mean"
)


def test_cpu_overheads_gpu_from_folder_and_tidy_columns(tmp_path):
    a100 = tmp_path / "a100"
    a40 = tmp_path / "a40"
    a100.mkdir()
    a40.mkdir()
    _write(a100 / "cpu_overheads.csv", CPU_HEADER, [
        "0,0.2,0.21,0.6,0.8,0.3,1.4,meta-llama/Llama-2-7b-hf,8,1,0.1",
        "1,0.3,0.31,0.7,0.9,0.4,1.5,some-org/unknown-model,16,2,0.2",
    ])
    _write(a40 / "cpu_overheads.csv", CPU_HEADER, ["0,1,1.1,5,2,3,2,microsoft/phi-2,8,1,0.3"])
    df = e2e.load_cpu_overheads([a100 / "cpu_overheads.csv", a40 / "cpu_overheads.csv"])
    assert list(df.columns) == list(e2e.CPU_OVERHEAD_COLUMNS)
    assert sorted(df.gpu.unique()) == ["a100-80gb", "a40"]
    assert set(df.model) == {"llama-2-7b", "some-org/unknown-model", "phi-2"}
    row = df[df.model == "llama-2-7b"].iloc[0]
    assert (row.schedule_ms, row.sampler_ms, row.prepare_inputs_ms, row.process_outputs_ms, row.ray_comm_ms) == (
        0.21, 0.6, 0.8, 0.3, 0.1)
    assert (row.batch_size, row.tp) == (8, 1)
    # passing the GPU explicitly overrides the folder
    only = e2e.load_cpu_overheads(a40 / "cpu_overheads.csv", gpus="h100")
    assert list(only.gpu) == ["h100-sxm"]


def test_cpu_overheads_unknown_folder_and_missing_column(tmp_path):
    odd = tmp_path / "mystery"
    odd.mkdir()
    path = _write(odd / "cpu_overheads.csv", CPU_HEADER, ["0,1,1.1,5,2,3,2,microsoft/phi-2,8,1,0.3"])
    with pytest.raises(InputError, match="cannot infer the GPU"):
        e2e.load_cpu_overheads(path)
    bad = _write(odd / "bad.csv", CPU_HEADER.replace(",ray_comm_time_mean", ""), ["0,1,1.1,5,2,3,2,m,8,1"])
    with pytest.raises(InputError, match=r"bad\.csv.*'ray_comm_time_mean'"):
        e2e.load_cpu_overheads(bad, gpus="a40")


# --- traces -----------------------------------------------------------------------------------
def test_trace_with_arrivals_drops_bad_tokens(tmp_path):
    path = _write(tmp_path / "conv.csv", "arrived_at,num_prefill_tokens,num_decode_tokens", [
        "0.0,374,44", "4.5,396,109", "5.0,0,10", "6.0,12,", "7.0,-3,5", "8.0,100,1",
    ])
    df = e2e.load_trace(path)
    assert list(df.columns) == list(e2e.TRACE_COLUMNS)
    assert df.arrival_s.tolist() == [0.0, 4.5, 8.0]
    assert df.prompt_tokens.tolist() == [374, 396, 100]
    assert df.output_tokens.tolist() == [44, 109, 1]
    assert df.prompt_tokens.dtype == "int64" and df.output_tokens.dtype == "int64"
    assert df.attrs["dropped"] == {"invalid_tokens": 3}


def test_trace_without_arrivals(tmp_path):
    path = _write(tmp_path / "arxiv.csv", "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio",
                  ["3772,54,3826,69.8", "2015,156,2171,12.9"])
    df = e2e.load_trace(path)
    assert df.arrival_s.isna().all()
    assert df.prompt_tokens.tolist() == [3772, 2015] and df.output_tokens.tolist() == [54, 156]


def test_trace_non_numeric_raises(tmp_path):
    path = _write(tmp_path / "t.csv", "num_prefill_tokens,num_decode_tokens", ["10,abc"])
    with pytest.raises(InputError, match=r"t\.csv.*'num_decode_tokens'"):
        e2e.load_trace(path)


# --- SamuLLM ----------------------------------------------------------------------------------
OUT_HEADER = "model,output_len,prob,max_model_len,block,source_line,effective"


def test_output_lengths_effective_and_renormalised(tmp_path):
    eps = 4e-7  # within the 1e-6 tolerance
    path = _write(tmp_path / "output_lengths.csv", OUT_HEADER, [
        f"m-a,1,{0.25 + eps},8,b1,1,1", "m-a,3,0.5,8,b1,1,1", "m-a,8,0.25,8,b1,1,1",
        "m-b,2,0.6,4,b2,5,1", "m-b,4,0.4,4,b2,5,1",
        "m-b,1,1.0,4,old,2,0",  # superseded definition: ignored
    ])
    df = e2e.load_output_lengths(path)
    assert list(df.columns) == list(e2e.OUTPUT_LENGTH_COLUMNS)
    sums = df.groupby("model").prob.sum()
    assert np.allclose(sums.to_numpy(), 1.0, atol=1e-12)
    assert df[df.model == "m-b"].output_len.tolist() == [2, 4]
    a = df[df.model == "m-a"].set_index("output_len").prob
    assert a[3] == pytest.approx(0.5 / (1 + eps), rel=1e-12)


def test_output_lengths_bad_sum_raises(tmp_path):
    path = _write(tmp_path / "output_lengths.csv", OUT_HEADER, ["m-a,1,0.5,8,b,1,1", "m-a,8,0.49,8,b,1,1"])
    with pytest.raises(InputError, match=r"output_lengths\.csv.*'m-a'.*sum"):
        e2e.load_output_lengths(path)


def test_model_init_costs(tmp_path):
    path = _write(tmp_path / "model_init_costs.csv",
                  "model_path,tp_size,init_cost_s,source_line,upstream_comment,machine,effective", [
                      "NousResearch/Llama-2-7b-hf,1,3.0,2,,unspecified,0",
                      "NousResearch/Llama-2-7b-hf,1,8.0,4,,unspecified,1",
                      "chavinlo/alpaca-13b,2,70.5,12,,zxcpu5,1",
                      "acme/unknown-13b,1,9.0,13,,zxcpu5,1",
                  ])
    df = e2e.load_model_init_costs(path)
    assert list(df.columns) == list(e2e.INIT_COST_COLUMNS)
    assert df.to_dict("records") == [
        {"model_path": "NousResearch/Llama-2-7b-hf", "model": "llama-2-7b", "tp": 1, "init_cost_s": 8.0},
        {"model_path": "acme/unknown-13b", "model": "", "tp": 1, "init_cost_s": 9.0},  # not in the catalogue
        {"model_path": "chavinlo/alpaca-13b", "model": "llama-13b", "tp": 2, "init_cost_s": 70.5},
    ]


# --- shipped reference data -------------------------------------------------------------------
def test_shipped_reference_data_loads():
    tables = {
        "splitwise": (reference_data.read_splitwise(), e2e.SPLITWISE_COLUMNS),
        "cpu": (reference_data.read_cpu_overheads(), e2e.CPU_OVERHEAD_COLUMNS),
        "lengths": (reference_data.read_output_lengths(), e2e.OUTPUT_LENGTH_COLUMNS),
        "init": (reference_data.read_model_init_costs(), e2e.INIT_COST_COLUMNS),
        **{name: (reference_data.read_trace(name), e2e.TRACE_COLUMNS) for name in reference_data.TRACE_SOURCES},
    }
    for name, (df, columns) in tables.items():
        assert isinstance(df, pd.DataFrame), name
        assert list(df.columns) == list(columns), name
        assert len(df) > 0, name
    split = tables["splitwise"][0]
    assert set(split.gpu) == {"a100-80gb", "h100-sxm"} and set(split.model) == {"llama-2-70b"}
    assert split.loc[split.token_size > 128, "e2e_time_ms"].isna().all()
    assert tables["splitwise_conv"][0].arrival_s.notna().all()
    assert tables["arxiv_summarization"][0].arrival_s.isna().all()
    with pytest.raises(InputError, match="trace"):
        reference_data.read_trace("sharegpt")
