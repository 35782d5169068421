"""The planner's candidate layouts: EP for MoE models, PP where TP's all-reduces are costly, and GPU blocks."""

from __future__ import annotations

from predictor.gpus import get_gpu
from predictor.models import get_model
from predictor.parallel import ParallelConfig
from predictor.precision import parse_dtype
from scheduler.engine import EngineConfig
from scheduler.placement import Config, allocate, legal_configs, load_time_s

ENGINE = EngineConfig(max_num_seqs=64, max_num_batched_tokens=2048)


def test_moe_models_get_expert_parallel_layouts():
    configs = legal_configs(get_model("qwen3-30b-a3b"), get_gpu("h100-sxm"), parse_dtype("fp16"), 4096, ENGINE, 8, [8])
    assert Config(4, 1, ep=4) in configs and Config(4, 2, ep=4) in configs
    assert Config(4, 1, ep=4).layout == ParallelConfig(tp=4, ep=4)
    assert not any(c.pp > 1 for c in configs)  # NVLink: no pipeline stages offered


def test_pcie_gpus_get_pipeline_layouts_and_dense_models_no_ep():
    configs = legal_configs(get_model("llama-3.1-70b"), get_gpu("l40s"), parse_dtype("fp8"), 4096, ENGINE, 8, [8])
    assert Config(1, 1, pp=2) in configs and Config(2, 2, pp=2) in configs
    assert Config(1, 1) not in configs            # 70B in fp8 does not fit one 48 GB GPU
    assert not any(c.ep > 1 for c in configs)


def test_replica_blocks_hold_tp_times_pp_gpus():
    config = Config(2, 2, pp=2)
    assert config.gpus == 8 and config.replica == Config(2, 1, pp=2)
    assert allocate(config, set(range(8)), [list(range(8))]) == tuple(range(8))
    assert allocate(config, set(range(7)), [list(range(8))]) is None
    assert str(config) == "TP2·PP2×DP2"


def test_load_time_of_a_layout_counts_its_sharded_weights():
    spec = get_model("qwen3-30b-a3b")
    fp16 = parse_dtype("fp16")
    assert load_time_s("not-measured", spec, ParallelConfig(tp=4, ep=4), fp16) < load_time_s("not-measured", spec, 1,
                                                                                              fp16)
