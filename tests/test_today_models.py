"""Today's model families: parameter counts against published totals, hand-derived op costs for MLA,
MoE, sliding-window and linear-attention layers, and the parallel layouts (EP, attention DP, PP)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from predictor import Predictor
from predictor.batch import from_lists
from predictor.errors import InputError
from predictor.memory import plan_memory
from predictor.models import get_model
from predictor.opcost import op_costs
from predictor.ops import build_ops
from predictor.parallel import ParallelConfig
from predictor.precision import parse_dtype

FP16, FP8 = parse_dtype("fp16"), parse_dtype("fp8")

# Published totals (the publishers' model cards / announcements), in billions. Vision towers and
# multi-token-prediction layers are not part of the language model counted here.
PUBLISHED_TOTAL_B = {
    "deepseek-v3": 671,          # DeepSeek-V3 technical report: 671B total (MTP module excluded)
    "qwen3-235b-a22b": 235,      # Qwen3 model card: 235B total, 22B activated
    "qwen3-32b": 32.8,           # Qwen3-32B model card: 32.8B
    "qwen3-30b-a3b": 30.5,       # Qwen3-30B-A3B model card: 30.5B total, 3.3B activated
    "qwen3.5-397b-a17b": 397,    # Qwen3.5 announcement: 397B total, 17B activated
    "gpt-oss-120b": 116.83,      # gpt-oss model card: 116.83B total
    "gpt-oss-20b": 20.91,        # gpt-oss model card: 20.91B total
    "glm-5": 744,                # GLM-5 announcement: 744B total
    "minimax-m2.5": 229,         # MiniMax-M2.5 model card: 229B
    "llama-4-maverick": 400,     # Llama 4 announcement: 400B total, 17B active
}
# Published active parameters per token (billions); gpt-oss's card counts them without the embedding.
PUBLISHED_ACTIVE_B = {"deepseek-v3": 37, "qwen3-235b-a22b": 22, "qwen3-30b-a3b": 3.3, "llama-4-maverick": 17}


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTAL_B))
def test_total_parameters_within_one_percent_of_published(name):
    total = get_model(name).param_count() / 1e9
    assert total == pytest.approx(PUBLISHED_TOTAL_B[name], rel=0.01)


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE_B))
def test_active_parameters_close_to_published(name):
    # published active counts are rounded to the billion (DeepSeek's 37B is 37.5B by its own config)
    assert get_model(name).active_param_count() / 1e9 == pytest.approx(PUBLISHED_ACTIVE_B[name], rel=0.03)


def test_gpt_oss_active_matches_model_card_without_the_embedding():
    m = get_model("gpt-oss-120b")
    assert (m.active_param_count() - m.embedding_params()) / 1e9 == pytest.approx(5.13, rel=0.01)


@pytest.mark.parametrize("hf_id,name", [
    ("deepseek-ai/DeepSeek-R1", "deepseek-v3"), ("nvidia/DeepSeek-R1-NVFP4", "deepseek-v3"),
    ("moonshotai/Kimi-K2.5", "kimi-k2.5"), ("zhipuai/GLM-5", "glm-5"), ("meta-llama/Llama-3.1-70B", "llama-3.1-70b"),
    ("Qwen/Qwen3-235B-A22B-FP8", "qwen3-235b-a22b"), ("nvidia/Qwen3-32B-NVFP4", "qwen3-32b"),
    ("openai/gpt-oss-120b", "gpt-oss-120b"), ("MiniMaxAI/MiniMax-M2.5", "minimax-m2.5"),
    ("Qwen/Qwen3.5-397B-A17B", "qwen3.5-397b-a17b"),
])
def test_silicon_csv_hf_ids_resolve(hf_id, name):
    assert get_model(hf_id).name == name


def test_layer_kinds_of_the_hybrid_families():
    assert get_model("gpt-oss-120b").attention_layer_counts() == {"sliding": 18, "full": 18}
    assert get_model("qwen3.5-397b-a17b").attention_layer_counts() == {"linear": 45, "full": 15}
    ds = get_model("deepseek-v3")
    assert ds.attention_layer_counts() == {"mla": 61} and ds.moe_layer_count == 58 and ds.dense_layer_count == 3


def test_mla_kv_cache_is_the_latent_not_split_by_tp():
    ds = get_model("deepseek-v3")
    # 61 layers × (kv_lora_rank 512 + rope 64) × 2 bytes, the same on every TP rank
    assert ds.kv_cache_bytes_per_token(16, 1) == ds.kv_cache_bytes_per_token(16, 8) == 61 * 576 * 2


def test_mla_absorbed_decode_bytes_and_flops_by_hand():
    ops = build_ops(get_model("deepseek-v3"), 8, FP16, from_lists(decode=[1023]))
    row = ops[ops["op"] == "mla_attn_decode"]
    cost = op_costs(row)
    heads = 128 // 8
    q_o = heads * (576 + 512) * 2            # query in latent space (576) and latent output (512), 16-bit
    kv_read = 1024 * 576 * 2                 # one latent per cached token (no separate V)
    kv_write = 576 * 2
    assert cost["bytes"][0] == q_o + kv_read + kv_write
    assert cost["flops"][0] == 2 * heads * 1024 * (576 + 512)


def test_one_moe_layer_by_hand():
    ops = build_ops(get_model("qwen3-30b-a3b"), 1, FP16, from_lists(decode=[100]))
    cost = op_costs(ops[ops["op"] == "moe_experts"])
    h, f, k = 2048, 768, 8
    assert cost["flops"][0] == 2 * k * 3 * h * f               # one token through 8 gated experts
    weights = k * 3 * h * f * 2                                # 8 distinct experts touched by one token
    acts = 2 * (3 * k * h + 2 * k * f * 3 + h)
    assert cost["bytes"][0] == weights + acts


def test_sliding_window_bounds_the_attended_context():
    ops = build_ops(get_model("gpt-oss-120b"), 1, FP16, from_lists(decode=[4095]))
    cost = op_costs(ops[ops["op"] == "sliding_attn_decode"])
    heads, kv, d, window = 64, 8, 64, 128
    assert cost["flops"][0] == 4 * heads * d * window
    assert cost["bytes"][0] == heads * 2 * d * 2 + window * kv * 2 * d * 2 + kv * 2 * d * 2
    full = op_costs(ops[ops["op"] == "attn_decode"])
    assert full["flops"][0] == 4 * heads * d * 4096


def test_linear_attention_cost_does_not_grow_with_context():
    m = get_model("qwen3.5-397b-a17b")
    short, long = (op_costs(build_ops(m, 8, FP16, from_lists(decode=[c]))) for c in (100, 100_000))
    short_ops = build_ops(m, 8, FP16, from_lists(decode=[100]))
    sel = (short_ops["op"] == "linear_attn_decode").to_numpy()
    assert short["bytes"][sel][0] == long["bytes"][sel][0]
    state = 64 // 8 * 128 * 128 * 4 * 2                         # fp32 state read and written
    assert short["bytes"][sel][0] > state


def test_sparse_attention_keeps_topk_keys():
    ops = build_ops(get_model("glm-5"), 8, FP16, from_lists(decode=[100_000]))
    row = ops[ops["op"] == "mla_attn_decode"].iloc[0]
    assert row["window"] == 2048 and row["attn_pairs"] == 2048
    assert ops[ops["op"] == "dsa_index_decode"].iloc[0]["attn_pairs"] == 100_001


def test_attention_dp_splits_attention_but_not_experts():
    ds = get_model("deepseek-v3")
    par = ParallelConfig(tp=1, dp_attention=8, ep=8)
    ops = build_ops(ds, par, FP8, from_lists(decode=[100] * 64)).set_index("op")
    assert ops.loc["mla_attn_decode", "batch"] == 8            # 64 sequences over 8 replicas
    assert ops.loc["moe_experts", "m"] == 64                   # every token reaches the experts
    assert ops.loc["moe_experts", "experts_local"] == 256 / 8
    assert ops.loc["moe_dispatch", "msg_bytes"] == 8 * 8 * 7168 * 2   # 8 local tokens × top-8 × hidden × 2 B
    assert ops.loc["moe_dispatch", "op_kind"] == "alltoall"


def test_expert_parallel_without_dp_combines_with_an_allreduce():
    ops = build_ops(get_model("deepseek-v3"), ParallelConfig(tp=8, ep=8), FP8, from_lists(decode=[100] * 8))
    assert "moe_dispatch" not in set(ops["op"])
    mlp_ar = ops[ops["op"] == "mlp_allreduce"].iloc[0]  # every rank holds every token: one all-reduce a layer
    assert mlp_ar["world_size"] == 8 and mlp_ar["count"] == 61
    experts = ops[ops["op"] == "moe_experts"].iloc[0]
    assert experts["n"] == 2048 and experts["experts_local"] == 32 and experts["m"] == 8


def test_memory_shards_experts_over_ep_and_layers_over_pp():
    ds, h200 = get_model("deepseek-v3"), "h200"
    from predictor.gpus import get_gpu

    gpu = get_gpu(h200)
    tp8 = plan_memory(ds, gpu, ParallelConfig(tp=8, ep=8), FP8)
    assert tp8.weights_bytes / 2**30 == pytest.approx(671e9 / 8 / 2**30, rel=0.06)  # fp8: ~1 byte a parameter
    dp = plan_memory(ds, gpu, ParallelConfig(tp=1, dp_attention=8, ep=8), FP8)
    assert dp.replicas == 8 and dp.weights_bytes > tp8.weights_bytes  # attention weights replicated
    llama = get_model("llama-3.1-70b")
    pp = plan_memory(llama, gpu, ParallelConfig(tp=2, pp=2), FP16)
    tp2 = plan_memory(llama, gpu, 2, FP16)
    table = llama.vocab_size / 2 * llama.hidden_size * 2  # one TP shard of the embedding (and of lm_head)
    # half the layers; the stage bound keeps both the embedding and lm_head (an upper bound per stage)
    assert pp.weights_bytes == pytest.approx((tp2.weights_bytes - 2 * table) / 2 + 2 * table, rel=1e-3)


def test_pipeline_iteration_is_the_micro_batch_formula():
    p = Predictor.roofline_only()
    model, gpu = "llama-3.1-8b", "h100-sxm"
    stage = ParallelConfig(tp=1, pp=2, micro_batches=1)
    two = ParallelConfig(tp=1, pp=2, micro_batches=2)
    t1 = p.predict_iteration(model, gpu, stage, "fp16", decode=[1000] * 64).kernel_ms
    t2 = p.predict_iteration(model, gpu, two, "fp16", decode=[1000] * 64).kernel_ms
    half = p.predict_iteration(model, gpu, stage, "fp16", decode=[1000] * 32).kernel_ms
    assert t1 > 0 and t2 == pytest.approx(3 * half / 2, rel=1e-6)  # (2 + 2 − 1) stage times of 32 sequences


@pytest.mark.parametrize("kwargs,field", [
    (dict(tp=8, ep=3), "--ep"), (dict(tp=1, pp=0), "--pp"), (dict(tp=8, ep=2, moe_tp=3), "--moe-tp"),
])
def test_bad_parallel_layouts_name_the_field(kwargs, field):
    with pytest.raises(InputError, match=field):
        ParallelConfig(**kwargs)


def test_ep_must_divide_the_experts_and_pp_the_layers():
    with pytest.raises(InputError, match=r"--ep: 3 does not divide qwen3-30b-a3b's 128 experts"):
        get_model("qwen3-30b-a3b").check_parallel(ParallelConfig(tp=2, dp_attention=3, ep=3))
    with pytest.raises(InputError, match=r"--pp: 100 exceeds llama-3.1-8b's 32 layers; allowed: 1\.\.32"):
        get_model("llama-3.1-8b").check_parallel(ParallelConfig(pp=100))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "inference_sim.cli", *args], capture_output=True, text=True)


def test_roofline_json_of_deepseek_carries_the_model_spec():
    run = _cli("roofline", "--model", "deepseek-ai/DeepSeek-R1", "--gpu", "h200", "--tp", "8", "--dtype", "fp8",
               "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["model_spec"]["params_total"] == get_model("deepseek-v3").param_count()
    assert report["model_spec"]["params_active"] < report["model_spec"]["params_total"] / 10
    assert {r["op"] for r in report["decode"]["ops"]} >= {"mla_attn_decode", "moe_experts", "mla_absorb_q_decode"}


@pytest.mark.parametrize("args,field", [
    (["--model", "qwen3-30b-a3b", "--gpu", "h100-sxm", "--tp", "2", "--dp-attention", "3", "--ep", "3"], "--ep"),
    (["--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--pp", "64"], "--pp"),
])
def test_cli_bad_layouts_are_one_line_exit_2(args, field):
    run = _cli("roofline", *args)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0] and "allowed" in lines[0]


def test_predictor_tables_serve_today_models():
    p = Predictor.roofline_only()
    for name in ("gpt-oss-120b", "qwen3.5-397b-a17b"):
        fast = p.predict_iteration(name, "h100-sxm", 8, "fp16", prefill=[(512, 0)], decode=[2000] * 8)
        slow = fast.ops["total_ms"].sum()
        assert fast.kernel_ms == pytest.approx(slow, rel=0.03)
        assert np.isfinite(fast.total_ms) and isinstance(fast.ops, pd.DataFrame)
