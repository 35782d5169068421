"""Vidur ingestion: shapes derived from model dimensions (checked by hand), malformed files, and
the roofline of every canonical row equal to the roofline of the same op built for an iteration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.ingest_vidur import load_vidur
from predictor.analysis import batch_roofline
from predictor.batch import from_lists
from predictor.errors import InputError
from predictor.roofline import roofline

MLP_OPS = ["emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
           "mlp_up_proj", "mlp_act", "mlp_down_proj", "add"]


def mlp_csv(path, dims, tokens_and_tp, time_ms=0.5):
    """A Vidur mlp.csv with the given (n_head, n_kv_head, n_embd, n_expanded_embd) for each (tokens, tp)."""
    heads, kv, hidden, inter = dims
    rows = []
    for tokens, tp in tokens_and_tp:
        row = {f"time_stats.{op}.median": time_ms * (1 + tokens / 256) for op in MLP_OPS}
        row.update(n_head=heads, n_kv_head=kv, n_embd=hidden, n_expanded_embd=inter, vocab_size=32768,
                   use_gated_mlp=True, num_tokens=tokens, num_tensor_parallel_workers=tp)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture
def vidur_root(tmp_path):
    root = tmp_path / "profiling"
    mlp_csv(root / "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv", (32, 32, 4096, 11008), [(512, 1), (64, 1)])
    mlp_csv(root / "compute/h100/meta-llama/Llama-2-70b-hf/mlp.csv", (64, 8, 8192, 28672), [(1024, 4)], 2.0)
    attn = pd.DataFrame({
        "time_stats.attn_input_reshape.median": [0.002, 0.003],
        "time_stats.attn_decode.median": [0.05, np.nan],
        "time_stats.attn_prefill.median": [np.nan, 0.40],
        "n_embd": 8192, "n_q_head": 64, "n_kv_head": 8, "num_tensor_parallel_workers": 2,
        "batch_size": [16, 1], "prefill_chunk_size": [0, 512], "kv_cache_size": [1000, 256],
        "is_prefill": [False, True],
    })
    (root / "a100").mkdir(parents=True)
    attn.to_csv(root / "a100/attention.csv", index=False)
    net = pd.DataFrame({"time_stats.all_reduce.median": [0.03, 0.05, 0.9], "num_workers": [2, 4, 4],
                        "devices_per_node": [2, 4, 2], "size": [1 << 20, 1 << 20, 1 << 20], "rank": 0})
    (root / "network/a100_dgx").mkdir(parents=True)
    net.to_csv(root / "network/a100_dgx/all_reduce.csv", index=False)
    return root


def test_llama_2_7b_tp1_shapes_by_hand(vidur_root):
    df, _ = load_vidur(vidur_root)
    rows = df[(df["model"] == "llama-2-7b") & (df["m"] == 512)].set_index("op")
    # attn_pre_proj: m = tokens, k = hidden, n = (heads + 2·kv_heads)·head_dim / tp = (32 + 64)·128 = 12288
    assert tuple(rows.loc["qkv_proj", ["m", "n", "k"]]) == (512, 12288, 4096)
    assert tuple(rows.loc["o_proj", ["m", "n", "k"]]) == (512, 4096, 4096)
    assert tuple(rows.loc["gate_up_proj", ["m", "n", "k"]]) == (512, 2 * 11008, 4096)
    assert tuple(rows.loc["down_proj", ["m", "n", "k"]]) == (512, 4096, 11008)
    assert tuple(rows.loc["act", ["m", "n"]]) == (512, 11008)
    assert tuple(rows.loc["rope", ["m", "n"]]) == (512, (32 + 32) * 128)
    assert rows.loc["qkv_proj", "gpu"] == "a100-80gb" and rows.loc["qkv_proj", "tp"] == 1


def test_llama_2_70b_tp4_shapes_by_hand(vidur_root):
    df, _ = load_vidur(vidur_root)
    rows = df[df["model"] == "llama-2-70b"].set_index("op")
    # per GPU at TP 4: 64/4 = 16 query heads, 8/4 = 2 KV heads, head_dim 128
    assert tuple(rows.loc["qkv_proj", ["m", "n", "k"]]) == (1024, (16 + 2 * 2) * 128, 8192)  # 2560
    assert tuple(rows.loc["o_proj", ["n", "k"]]) == (8192, 16 * 128)
    assert tuple(rows.loc["gate_up_proj", ["n", "k"]]) == (2 * 28672 / 4, 8192)
    assert tuple(rows.loc["down_proj", ["n", "k"]]) == (8192, 28672 / 4)
    assert rows.loc["qkv_proj", "gpu"] == "h100-sxm" and rows.loc["qkv_proj", "tp"] == 4


def test_attention_and_allreduce_rows(vidur_root):
    df, report = load_vidur(vidur_root)
    dec = df[df["op"] == "attn_decode"].iloc[0]
    assert (dec["batch"], dec["kv_len"], dec["heads"], dec["kv_heads"], dec["head_dim"]) == (16, 1001, 32, 4, 128)
    assert dec["measured_ms"] == pytest.approx(0.05 + 0.002)  # kernel + KV-cache write
    pre = df[df["op"] == "attn_prefill"].iloc[0]
    assert (pre["q_tokens"], pre["kv_len"]) == (512, 768)
    ar = df[df["op_kind"] == "allreduce"]
    assert list(ar["world_size"]) == [2, 4]  # the 4-worker, 2-per-node row is multi-node: dropped
    assert report.rejected["multi_node"] == 1


def test_every_canonical_row_matches_the_op_path(vidur_root):
    """Roofline of each ingested row == roofline of the same op in an iteration built by build_ops."""
    df, _ = load_vidur(vidur_root)
    mine = roofline(df)
    for _, row in mine.iterrows():
        if row["op_kind"] == "allreduce":
            continue  # collectives have no model iteration here; their cost formula is tested directly
        if row["op_kind"] == "attn_decode":
            batch = from_lists(decode=[int(row["kv_len"]) - 1] * int(row["batch"]))
        elif row["op_kind"] == "attn_prefill":
            q = int(row["q_tokens"])
            batch = from_lists(prefill=[(q, int(row["kv_len"]) - q)] * int(row["batch"]))
        else:
            batch = from_lists(prefill=[(int(row["m"]), 0)], prefill_samples=False)
        model = "llama-2-70b" if row["model"] in ("", "llama-2-70b") else row["model"]
        ops = batch_roofline(model, row["gpu"], batch, tp=int(row["tp"]))
        name = {"residual_add": "mlp_residual_add"}.get(row["op"], row["op"])
        path_row = ops[ops["op"] == name].iloc[0]
        assert path_row["ideal_ms"] == pytest.approx(row["ideal_ms"], rel=1e-12), row["op"]
        assert path_row["flops"] == pytest.approx(row["flops"], rel=1e-12)


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"
    mlp_csv(path, (32, 32, 4096, 11008), [(16, 1)])
    pd.read_csv(path).drop(columns=["n_kv_head"]).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"mlp\.csv: missing column 'n_kv_head'"):
        load_vidur(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"
    path.parent.mkdir(parents=True)
    path.write_text("")
    with pytest.raises(InputError, match="mlp.csv: file is empty"):
        load_vidur(tmp_path)


def test_times_in_seconds_are_caught_as_wrong_units(tmp_path):
    path = tmp_path / "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"
    mlp_csv(path, (32, 32, 4096, 11008), [(t, 1) for t in (256, 512, 1024, 2048)], time_ms=1e-4)
    with pytest.raises(InputError, match="measured_ms.*seconds or microseconds"):
        load_vidur(tmp_path)


def test_non_numeric_column(tmp_path):
    path = tmp_path / "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"
    mlp_csv(path, (32, 32, 4096, 11008), [(16, 1)])
    pd.read_csv(path).assign(num_tokens="many").to_csv(path, index=False)
    with pytest.raises(InputError, match="'num_tokens' must be numeric"):
        load_vidur(tmp_path)


def test_dimensions_must_match_the_catalogue(tmp_path):
    path = tmp_path / "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"
    mlp_csv(path, (32, 8, 4096, 11008), [(16, 1)])  # wrong KV heads for Llama-2-7B
    with pytest.raises(InputError, match="disagree with catalogue model llama-2-7b"):
        load_vidur(tmp_path)


def test_unknown_gpu_folder(tmp_path):
    mlp_csv(tmp_path / "compute/tpu/meta-llama/Llama-2-7b-hf/mlp.csv", (32, 32, 4096, 11008), [(16, 1)])
    with pytest.raises(InputError, match="unknown GPU folder 'tpu'"):
        load_vidur(tmp_path)


def test_unknown_model_uses_file_dimensions(tmp_path):
    mlp_csv(tmp_path / "compute/a40/acme/tiny-1b/mlp.csv", (16, 4, 2048, 5632), [(128, 1)])
    df, _ = load_vidur(tmp_path)
    qkv = df[df["op"] == "qkv_proj"].iloc[0]
    assert qkv["model"] == "acme/tiny-1b" and qkv["n"] == (16 + 2 * 4) * 128


def test_missing_root():
    with pytest.raises(InputError, match="does not exist"):
        load_vidur("/nonexistent/vidur")

