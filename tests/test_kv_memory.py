"""How each serving framework sizes its KV cache (predictor.memory ``kv_memory``) and where the engine uses it."""

from __future__ import annotations

import json

import pytest

from inference_sim import cli
from predictor import Predictor
from predictor.errors import InputError
from predictor.gpus import get_gpu
from predictor.memory import GIB, MIB, plan_memory, static_fraction
from predictor.models import get_model
from predictor.parallel import as_parallel
from predictor.precision import parse_dtype
from scheduler.engine import EngineConfig, Simulator
from scheduler.engine_profiles import kernel_only_profile

FP16 = parse_dtype("fp16")


def _plan(kv_memory, utilization=0.9, **kw):
    return plan_memory(get_model("llama-2-13b"), get_gpu("a100-80gb"), 1, FP16, gpu_memory_utilization=utilization,
                       kv_memory=kv_memory, **kw)


def test_free_takes_its_fraction_of_what_the_loaded_model_leaves():
    plan = _plan("free")
    left = 80 * GIB - plan.weights_bytes - plan.activation_bytes - plan.overhead_bytes
    block = plan.kv_bytes_per_token * plan.block_size
    assert plan.num_blocks == int(0.9 * left // block)
    assert plan.usable_bytes == 80 * GIB and plan.kv_memory == "free"
    # a fraction of the free memory always leaves the KV cache at least what the same fraction of all memory does
    assert plan.num_blocks > _plan("total").num_blocks


def test_static_fraction_holds_weights_and_kv_only():
    plan = _plan("static")
    block = plan.kv_bytes_per_token * plan.block_size
    assert plan.num_blocks == int((0.9 * 80 * GIB - plan.weights_bytes) // block)
    # the workspace is outside a static fraction: more sequences change the vLLM-style cache, not this one
    assert _plan("static", max_num_seqs=1024).num_blocks == plan.num_blocks
    assert _plan("total", max_num_seqs=1024).num_blocks < _plan("total").num_blocks


def test_static_default_is_sglangs_start_up_reserve():
    gpu, par = get_gpu("b200"), as_parallel(4)
    reserve = 512 * MIB + 1.5 * MIB * 8192 + 2 * MIB * 512 + GIB * 4 / 8
    assert static_fraction(gpu, par, 8192) == pytest.approx(1 - reserve / gpu.memory_bytes)
    assert static_fraction(gpu, par, 1024) == pytest.approx(static_fraction(gpu, par, 2048))  # 2,048 at least
    plan = plan_memory(get_model("llama-2-70b"), gpu, par, FP16, gpu_memory_utilization=None, kv_memory="static")
    assert plan.gpu_memory_utilization == pytest.approx(static_fraction(gpu, par, 8192))
    # None means 0.9 for the other two rules
    assert _plan("total", None).num_blocks == _plan("total").num_blocks
    assert _plan("free", None).num_blocks == _plan("free").num_blocks


def test_a_model_that_nearly_fills_the_gpus_gets_each_frameworks_cache():
    """DeepSeek-V3 in fp8 on 4 B200s: weights take ~158 GiB of 180 per GPU. vLLM's 0.9 of all memory leaves at
    most three 9k-token sequences; TensorRT-LLM's 0.9 of the free memory and SGLang's static fraction leave many."""
    model, gpu, fp8 = get_model("deepseek-v3"), get_gpu("b200"), parse_dtype("fp8")
    tokens = {kind: plan_memory(model, gpu, 4, fp8, gpu_memory_utilization=None, kv_memory=kind,
                                state_on_demand=True).max_tokens for kind in ("total", "free", "static")}
    sequences = {kind: count // 9216 for kind, count in tokens.items()}  # docs/model.md quotes these
    assert sequences["total"] <= 3 and 12 <= sequences["static"] < sequences["free"]


def test_bad_kv_memory_is_one_line_naming_the_choices():
    with pytest.raises(InputError, match=r"kv_memory: unknown value 'half'; allowed: total, free, static"):
        _plan("half")
    with pytest.raises(InputError, match="kv_memory"):
        EngineConfig(kv_memory="half").validate()
    with pytest.raises(InputError, match="--gpu-memory-utilization"):
        EngineConfig(gpu_memory_utilization=1.5).validate()


def test_framework_profiles_size_the_simulators_cache_by_their_rule():
    predictor = Predictor.roofline_only()
    model, gpu = get_model("llama-2-70b"), get_gpu("h100-sxm")
    blocks = {}
    for framework, rule in (("vllm", "total"), ("trtllm", "free"), ("sglang", "static")):
        profile = kernel_only_profile(framework)
        config = profile.engine_config()
        assert config.kv_memory == rule and config.gpu_memory_utilization is None
        sim = Simulator(predictor, model, gpu, 2, "fp16", config, profile=profile)
        assert sim.memory.kv_memory == rule
        blocks[framework] = sim.num_blocks
    assert blocks["vllm"] < blocks["trtllm"]
    # the legacy engine and a bare config keep vLLM's rule and 0.9
    assert EngineConfig().kv_memory == "total"


def test_simulate_cli_uses_the_frameworks_rule_unless_told(capsys):
    args = ["simulate", "--model", "llama-2-13b", "--gpu", "a100-80gb", "--roofline", "--workload", "offline",
            "--num-requests", "4", "--prompt-len", "64", "--output-len", "4", "--json"]

    def run(*more):
        code = cli.main([*args, *more])
        out = capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)

    vllm, trtllm, legacy = (run("--framework", name) for name in ("vllm", "trtllm", "legacy"))
    assert (vllm["config"]["kv_memory"], trtllm["config"]["kv_memory"], legacy["config"]["kv_memory"]) == (
        "total", "free", "total")
    assert vllm["config"]["gpu_memory_utilization"] is None
    assert trtllm["kv_blocks"] > vllm["kv_blocks"]
    half = run("--framework", "vllm", "--gpu-memory-utilization", "0.5")
    assert half["config"]["gpu_memory_utilization"] == 0.5 and half["kv_blocks"] < vllm["kv_blocks"]


def test_a_refusal_says_the_frameworks_rule():
    from predictor.errors import ModelDoesNotFitError

    model, gpu = get_model("llama-2-70b"), get_gpu("a100-80gb")
    messages = {}
    for rule in ("total", "free", "static"):
        with pytest.raises(ModelDoesNotFitError) as err:
            plan_memory(model, gpu, 1, FP16, gpu_memory_utilization=None, kv_memory=rule)
        messages[rule] = str(err.value)
    assert "gpu_memory_utilization=0.9)" in messages["total"] and "workspace" in messages["total"]
    assert "the KV cache gets 0.9 of what is left" in messages["free"]
    assert "static fraction" in messages["static"] and "workspace" not in messages["static"]
