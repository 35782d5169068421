"""A corpus of bad inputs at every boundary, each run through ``inference_sim.cli.main``.

Every case must end with exit code 2, exactly one stderr line starting with ``error: `` that names the
field (the option, the config key, the spec field or the file's column), nothing on stdout and no
traceback. Boundaries: CLI arguments, HF ``config.json`` files, GPU files, request traces, profile tables,
model artifacts (folders and MLflow URIs), MLflow tracking URIs, output paths and planner application
YAML. Bad files are built once in a temporary folder: wrong types, missing keys, negative, huge and NaN
numbers, empty and binary files, UTF-16 and Latin-1 text, duplicate keys, YAML tags, unknown names,
paths that do not exist or are folders (or files where a folder is expected).

The number of cases is :data:`NUM_CASES` (reported in docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from inference_sim.cli import main
from predictor.artifact import (
    CHECKSUM_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SHIPPED_DIR,
    save_artifact,
)

LLAMA = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
         "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
GPU = {"peak_tflops": {"fp16": 100}, "hbm_bandwidth_gbps": 2000, "memory_gib": 80, "sm_count": 100, "l2_mb": 40,
       "link_bandwidth_gbps": 300}
APP = {"name": "tiny", "topology": "ensemble", "node": {"gpu": "a100-80gb", "count": 2},
       "prompts": {"fixed": 200, "count": 30},
       "models": [{"name": "a", "model": "llama-2-7b", "output_lengths": {"fixed": 100}},
                  {"name": "b", "model": "phi-2", "output_lengths": {"fixed": 80}}],
       "samples": 2}
UTF16 = "utf-16"  # a BOM and two bytes per character: not UTF-8


def _json(path: Path, obj, **kw) -> None:
    path.write_text(json.dumps(obj, **kw))


def _cfg(d: Path, name: str, **changes) -> None:
    cfg = {**LLAMA, **changes}
    _json(d / f"cfg_{name}.json", {k: v for k, v in cfg.items() if v is not ...})


def _gpu(d: Path, name: str, **changes) -> None:
    spec = {**GPU, **changes}
    (d / f"gpu_{name}.yaml").write_text(yaml.safe_dump({"g": {k: v for k, v in spec.items() if v is not ...}}))


def _app(d: Path, name: str, mutate) -> None:
    raw = json.loads(json.dumps(APP))
    mutate(raw)
    (d / f"app_{name}.yaml").write_text(yaml.safe_dump(raw))


def _rechecksum(folder: Path) -> None:
    """Rewrite the checksum file so the (tampered) files pass the checksum and reach the later checks."""
    lines = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}" for n in (MODEL_FILE, METADATA_FILE)]
    (folder / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")


def _artifact_copy(d: Path, name: str) -> Path:
    folder = d / f"art_{name}"
    folder.mkdir()
    for n in (MODEL_FILE, METADATA_FILE, CHECKSUM_FILE):
        shutil.copy(SHIPPED_DIR / n, folder / n)
    return folder


def build_bad_files(d: Path) -> None:
    # generic files
    (d / "empty.json").write_text("")
    (d / "empty.yaml").write_text("")
    (d / "empty.csv").write_text("")
    (d / "empty.parquet").write_bytes(b"")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 16)
    (d / "a_folder").mkdir()
    (d / "a_file").write_text("not a folder\n")
    (d / "not_empty").mkdir()
    (d / "not_empty" / "notes.txt").write_text("my notes\n")

    # HF config.json files
    (d / "cfg_utf16.json").write_text(json.dumps(LLAMA), encoding=UTF16)
    (d / "cfg_truncated.json").write_text(json.dumps(LLAMA)[:-20])
    _json(d / "cfg_list.json", [LLAMA])
    _cfg(d, "unknown_type", model_type="gpt2")
    _cfg(d, "no_type", model_type=...)
    _cfg(d, "no_heads", num_attention_heads=...)
    _cfg(d, "str_hidden", hidden_size="4096")
    _cfg(d, "neg_hidden", hidden_size=-4096)
    _cfg(d, "huge_layers", num_hidden_layers=10**12)
    _cfg(d, "zero_heads", num_attention_heads=0)
    _cfg(d, "kv_not_divisor", num_key_value_heads=5)
    _cfg(d, "float_vocab", vocab_size=1.5)
    _cfg(d, "str_tie", tie_word_embeddings="yes")
    _cfg(d, "null_mlp", intermediate_size=None)
    _cfg(d, "bool_layers", num_hidden_layers=True)
    _json(d / "cfg_nan_context.json", {**LLAMA, "max_position_embeddings": float("nan")})  # JSON's NaN token
    _cfg(d, "moe_topk", model_type="mixtral", num_local_experts=8, num_experts_per_tok=9)
    _cfg(d, "phi_rotary", model_type="phi", partial_rotary_factor=2)
    _cfg(d, "hidden_not_divisible", hidden_size=4100)
    (d / "cfg_huge.json").write_text(json.dumps(LLAMA) + " " * (10_000_001))
    (d / "cfg_dir").mkdir()

    # GPU files
    _gpu(d, "negative", hbm_bandwidth_gbps=-5)
    _gpu(d, "nan", hbm_bandwidth_gbps=float("nan"))
    _gpu(d, "text", hbm_bandwidth_gbps="fast")
    _gpu(d, "huge", hbm_bandwidth_gbps=1e300)
    _gpu(d, "peak_nan", peak_tflops={"fp16": float("nan")})
    _gpu(d, "peak_list", peak_tflops=[1, 2])
    _gpu(d, "no_memory", memory_gib=...)
    _gpu(d, "extra", colour="red")
    _gpu(d, "zero_sms", sm_count=0)
    (d / "gpu_scalar.yaml").write_text("g: 5\n")
    (d / "gpu_list.yaml").write_text("- a\n- b\n")
    (d / "gpu_invalid.yaml").write_text("g: [\n")
    (d / "gpu_python_tag.yaml").write_text('!!python/object/apply:os.system ["echo pwned"]\n')
    (d / "gpu_utf16.yaml").write_text(yaml.safe_dump({"g": GPU}), encoding=UTF16)
    (d / "gpu_duplicate.yaml").write_text(yaml.safe_dump({"g": GPU}) + yaml.safe_dump({"g": GPU}))
    (d / "gpu_ok.yaml").write_text(yaml.safe_dump({"g": GPU}))

    # request traces (Vidur CSV)
    (d / "trace_header.csv").write_text("num_prefill_tokens,num_decode_tokens\n")
    (d / "trace_columns.csv").write_text("a,b\n1,2\n")
    (d / "trace_text.csv").write_text("num_prefill_tokens,num_decode_tokens\nx,y\n")
    (d / "trace_negative.csv").write_text("num_prefill_tokens,num_decode_tokens\n-1,-2\n0,0\n")
    (d / "trace_huge.csv").write_text("num_prefill_tokens,num_decode_tokens\n1e30,10\n")
    (d / "trace_bad_arrival.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,10\n-5,10,10\n")
    (d / "trace_inf_arrival.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\ninf,10,10\n")
    (d / "trace_no_arrivals.csv").write_text("num_prefill_tokens,num_decode_tokens\n10,10\n")
    (d / "trace_utf16.csv").write_text("num_prefill_tokens,num_decode_tokens\n10,10\n", encoding=UTF16)

    # profile tables (canonical)
    from features.synthetic import generate

    rows = generate(40, seed=0)
    rows.to_csv(d / "prof_ok.csv", index=False)
    rows.assign(measured_ms="fast").to_csv(d / "prof_text.csv", index=False)
    rows.drop(columns=["op_kind"]).to_csv(d / "prof_missing.csv", index=False)
    rows.assign(measured_ms=rows["measured_ms"] / 1e4).to_csv(d / "prof_units.csv", index=False)
    rows.assign(measured_ms=float("nan")).to_csv(d / "prof_nan.csv", index=False)
    rows.assign(gpu="tpu-v9").to_csv(d / "prof_gpu.csv", index=False)
    rows.assign(m=-1.0).to_csv(d / "prof_negative.csv", index=False)
    (d / "prof_utf16.csv").write_text(rows.to_csv(index=False), encoding=UTF16)
    (d / "prof_header.csv").write_text(",".join(rows.columns) + "\n")

    # artifacts
    (d / "art_empty").mkdir()
    folder = _artifact_copy(d, "no_checksum")
    (folder / CHECKSUM_FILE).unlink()
    folder = _artifact_copy(d, "tampered")
    with open(folder / MODEL_FILE, "a") as fh:
        fh.write("\n# tampered\n")
    folder = _artifact_copy(d, "latin1_metadata")
    (folder / METADATA_FILE).write_bytes(b'{"feature_names": ["caf\xe9"]}')
    _rechecksum(folder)
    folder = _artifact_copy(d, "metadata_list")
    (folder / METADATA_FILE).write_text("[1, 2, 3]")
    _rechecksum(folder)
    folder = _artifact_copy(d, "utf16_checksum")
    (folder / CHECKSUM_FILE).write_text((folder / CHECKSUM_FILE).read_text(), encoding=UTF16)
    folder = _artifact_copy(d, "huge_model")
    with open(folder / MODEL_FILE, "r+b") as fh:
        fh.truncate(201 * 2**20)  # sparse: no disk used
    metadata = json.loads((SHIPPED_DIR / METADATA_FILE).read_text())
    model_text = (SHIPPED_DIR / MODEL_FILE).read_text()
    save_artifact(d / "art_features", model_text, {**metadata, "feature_names": metadata["feature_names"][:-1] + ["x"]})
    save_artifact(d / "art_garbage_model", "this is not a LightGBM model\n", metadata)
    save_artifact(d / "art_bad_overhead", model_text, {**metadata, "overhead": {"base_ms": "slow"}})

    for name in ("eval_bad_json", "eval_no_splits", "eval_bad_sample", "eval_tampered"):
        shutil.copytree(SHIPPED_DIR, d / f"art_{name}")
    (d / "art_eval_bad_json" / "evaluation.json").write_text('{"splits": ')
    (d / "art_eval_no_splits" / "evaluation.json").write_text('{"search": []}')
    (d / "art_eval_bad_sample" / "evaluation_sample.parquet").write_bytes(b"PAR1 not really")
    (d / "art_eval_tampered" / METADATA_FILE).write_text('{"feature_names": []}')

    # application specs
    _app(d, "count_text", lambda r: r["node"].update(count="eight"))
    _app(d, "count_negative", lambda r: r["node"].update(count=-1))
    _app(d, "count_huge", lambda r: r["node"].update(count=10**9))
    _app(d, "budget_nan", lambda r: r.update(search={"time_budget_s": float("nan")}))
    _app(d, "mean_nan", lambda r: r["models"][0].update(output_lengths={"lognormal": True, "mean": float("nan")}))
    _app(d, "gpu_unknown", lambda r: r["node"].update(gpu="tpu-v9"))
    _app(d, "dtype_unknown", lambda r: r["node"].update(dtype="fp3"))
    _app(d, "model_unknown", lambda r: r["models"][0].update(model="not-a-model"))
    _app(d, "measured_unknown", lambda r: r["models"][0].update(output_lengths={"measured": "no-such-model"}))
    _app(d, "trace_missing", lambda r: r.update(prompts={"trace": str(d / "nope.csv"), "count": 5}))
    _app(d, "trace_folder", lambda r: r.update(prompts={"trace": str(d / "a_folder"), "count": 5}))
    _app(d, "trace_bad", lambda r: r.update(prompts={"trace": str(d / "trace_columns.csv"), "count": 5}))
    _app(d, "models_missing", lambda r: r.pop("models"))
    _app(d, "models_empty", lambda r: r.update(models=[]))
    _app(d, "models_text", lambda r: r.update(models="llama"))
    _app(d, "share_negative", lambda r: (r.update(topology="routing"), r["models"][0].update(share=-0.5),
                                         r["models"][1].update(share=1.5)))
    _app(d, "max_below_min", lambda r: r["models"][0].update(
        output_lengths={"lognormal": True, "mean": 100, "min": 50, "max": 10}))
    _app(d, "strategy", lambda r: r.update(search={"strategy": "random"}))
    _app(d, "unknown_key", lambda r: r.update(colour="blue"))
    _app(d, "fixed_float", lambda r: r["models"][0].update(output_lengths={"fixed": 1.5}))
    _app(d, "topology", lambda r: r.update(topology="star"))
    _app(d, "name_bool", lambda r: r["models"][0].update(name=True))
    _app(d, "seed_negative", lambda r: r.update(seed=-3))
    _app(d, "too_big", lambda r: (r["models"][0].update(model="llama-2-70b"), r["node"].update(count=1)))
    (d / "app_scalar.yaml").write_text("42\n")
    (d / "app_invalid.yaml").write_text("topology: [ensemble\n")
    (d / "app_tab.yaml").write_text("name: a\n\ttopology: ensemble\n")
    (d / "app_python_tag.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    (d / "app_duplicate.yaml").write_text("name: a\nname: b\n" + yaml.safe_dump({k: v for k, v in APP.items()
                                                                                 if k != "name"}))
    (d / "app_utf16.yaml").write_text(yaml.safe_dump(APP), encoding=UTF16)
    (d / "app_latin1.yaml").write_bytes(yaml.safe_dump(APP).replace("tiny", "t\xe9ny").encode("latin-1"))
    (d / "app_nul.yaml").write_text(yaml.safe_dump(APP) + "\x00")
    with open(d / "app_huge.yaml", "wb") as fh:
        fh.truncate(11 * 2**20)


ROOF = "roofline --model llama-2-7b --gpu a100-80gb"
SIM = "simulate --model llama-2-7b --gpu a100-80gb --roofline --num-requests 5"
SIM_FIXED = SIM + " --workload offline --prompt-len 8 --output-len 8"
EST = "estimate --model llama-2-7b --gpu a100-80gb"
GPUF = "roofline --model llama-2-7b --gpu g --gpu-file {d}/"
TRACE = "simulate --model llama-2-7b --gpu a100-80gb --roofline --workload trace --trace {d}/"

# (id, command line with {d} = the bad-files folder, text the error line must contain)
CASES: list[tuple[str, str, str]] = [
    # --- CLI arguments --------------------------------------------------------------------------------
    ("batch-size-zero", f"{ROOF} --batch-size 0", "--batch-size"),
    ("batch-size-huge", f"{ROOF} --batch-size 99999999999999999999", "--batch-size"),
    ("batch-size-text", f"{ROOF} --batch-size many", "--batch-size"),
    ("input-len-nan", f"{ROOF} --input-len nan", "--input-len"),
    ("input-len-negative", f"{ROOF} --input-len -5", "--input-len"),
    ("utilization-nan", f"{ROOF} --gpu-memory-utilization nan", "--gpu-memory-utilization"),
    ("utilization-inf", f"{ROOF} --gpu-memory-utilization inf", "--gpu-memory-utilization"),
    ("utilization-negative", f"{ROOF} --gpu-memory-utilization -1", "--gpu-memory-utilization"),
    ("kv-bits", f"{ROOF} --kv-bits 3", "--kv-bits"),
    ("tp-zero", f"{ROOF} --tp 0", "--tp"),
    ("tp-not-divisor", f"{ROOF} --tp 3", "--tp"),
    ("tp-text", f"{ROOF} --tp two", "--tp"),
    ("dtype-unknown", f"{ROOF} --dtype fp7", "--dtype"),
    ("dtype-bits", f"{ROOF} --dtype w3a16", "--dtype"),
    ("attention-unknown", f"{ROOF} --attention paged", "--attention"),
    ("model-unknown", "roofline --model llama-2-7 --gpu a100", "--model"),
    ("gpu-unknown", "roofline --model llama-2-7b --gpu h10", "--gpu"),
    ("model-missing", "roofline --gpu a100", "--model"),
    ("model-does-not-fit", "roofline --model llama-2-70b --gpu a100-80gb", "--model"),
    ("unknown-option", f"{ROOF} --frobnicate 3", "--frobnicate"),
    ("unknown-command", "frobnicate --now", "frobnicate"),
    ("prefill-text", "predict --model llama-2-7b --gpu a100 --prefill abc", "--prefill"),
    ("prefill-three-parts", "predict --model llama-2-7b --gpu a100 --prefill 1:2:3", "--prefill"),
    ("prefill-zero", "predict --model llama-2-7b --gpu a100 --prefill 0:0", "prefill[0].new_tokens"),
    ("prefill-huge", "predict --model llama-2-7b --gpu a100 --prefill 99999999999999999999999:0",
     "prefill[0].new_tokens"),
    ("decode-negative", "predict --model llama-2-7b --gpu a100 --decode=-1", "decode[0]"),
    ("decode-text", "predict --model llama-2-7b --gpu a100 --decode x", "--decode"),
    ("decode-huge", "predict --model llama-2-7b --gpu a100 --decode 99999999999", "decode[0]"),
    ("empty-iteration", "predict --model llama-2-7b --gpu a100", "batch"),
    ("estimate-budget-zero", f"{EST} --max-num-batched-tokens 0", "--max-num-batched-tokens"),
    ("estimate-output-negative", f"{EST} --output-len -1", "--output-len"),
    ("rate-nan", f"{SIM} --workload poisson --rate nan --prompt-len 8 --output-len 8", "--rate"),
    ("rate-negative", f"{SIM} --workload poisson --rate -1 --prompt-len 8 --output-len 8", "--rate"),
    ("rate-inf", f"{SIM} --workload poisson --rate inf --prompt-len 8 --output-len 8", "--rate"),
    ("rate-missing", f"{SIM} --workload poisson --prompt-len 8 --output-len 8", "--rate"),
    ("cv-negative", f"{SIM} --workload gamma --rate 1 --cv -1 --prompt-len 8 --output-len 8", "--cv"),
    ("cv-nan", f"{SIM} --workload gamma --rate 1 --cv nan --prompt-len 8 --output-len 8", "--cv"),
    ("num-requests-huge", f"{SIM_FIXED} --num-requests 999999999999", "--num-requests"),
    ("num-requests-zero", f"{SIM_FIXED} --num-requests 0", "--num-requests"),
    ("prompt-len-huge", f"{SIM} --workload offline --prompt-len 99999999999 --output-len 8", "--prompt-len"),
    ("workload-unknown", f"{SIM} --workload bursty --prompt-len 8 --output-len 8", "--workload"),
    ("policy-unknown", f"{SIM_FIXED} --policy fifo", "--policy"),
    ("output-dist-unknown", f"{SIM} --workload offline --prompt-len 8 --output-dist nope", "--output-dist"),
    ("max-num-seqs-zero", f"{SIM_FIXED} --max-num-seqs 0", "--max-num-seqs"),
    ("block-size-zero", f"{SIM_FIXED} --block-size 0", "--block-size"),
    ("budget-huge-does-not-fit", f"{SIM_FIXED} --max-num-batched-tokens 99999999999", "--model"),
    ("sim-out-is-a-file", f"{SIM_FIXED} --out {{d}}/a_file", "a_file"),
    ("plan-strategy", "plan {d}/app_ok.yaml --strategy weird", "--strategy"),
    ("plan-samples-zero", "plan {d}/app_ok.yaml --samples 0", "--samples"),
    ("plan-budget-nan", "plan {d}/app_ok.yaml --time-budget-s nan", "--time-budget-s"),
    ("ingest-source", "data ingest {d}/prof_ok.csv --source csv --out {d}/x.parquet", "--source"),
    ("ingest-out-suffix", "data ingest {d}/prof_ok.csv --source canonical --out {d}/x.csv", "--out"),
    ("ingest-out-under-a-file", "data ingest {d}/prof_ok.csv --source canonical --out {d}/a_file/x.parquet",
     "a_file"),
    ("ingest-vidur-file", "data ingest {d}/binary.bin --source vidur --out {d}/x.parquet", "--source vidur"),
    ("ingest-vidur-empty-folder", "data ingest {d}/a_folder --source vidur --out {d}/x.parquet", "--source vidur"),
    ("summary-markdown-folder", "data summary --markdown {d}/a_folder", "a_folder"),
    ("summary-data-dir-missing", "data summary --data-dir {d}/nope", "kernels.parquet"),
    ("train-seed-negative", "train --quick --seed -1", "--seed"),
    ("train-out-is-a-file", "train --quick --no-tracking --out {d}/a_file", "--out"),
    ("train-out-under-a-file", "train --quick --no-tracking --out {d}/a_file/art", "--out"),
    ("train-out-not-an-artifact", "train --quick --no-tracking --out {d}/not_empty", "--out"),
    ("train-data-dir-missing", "train --quick --no-tracking --out {d}/new_art --data-dir {d}/nope",
     "kernels.parquet"),
    ("report-out-dir-is-a-file", "report --out-dir {d}/a_file --json", "a_file"),
    # --- MLflow URIs --------------------------------------------------------------------------------
    ("tracking-uri-scheme", "train --quick --tracking-uri bogus://x --out {d}/new_art", "--tracking-uri"),
    ("tracking-uri-sqlite-form", "train --quick --tracking-uri sqlite:/x.db --out {d}/new_art", "--tracking-uri"),
    ("tracking-uri-http-form", "train --quick --tracking-uri http:host --out {d}/new_art", "--tracking-uri"),
    ("model-uri-form", f"{EST} --artifacts models:/only-a-name", "model URI"),
    ("model-uri-unknown", f"{EST} --artifacts models:/nope@champion", "model URI"),
    ("model-uri-alias", f"{EST} --artifacts models:/a@b@c", "model URI"),
    ("run-uri-unknown", f"{EST} --artifacts runs:/0123456789abcdef", "model URI"),
    # --- HF config.json -----------------------------------------------------------------------------
    ("config-empty", "roofline --model {d}/empty.json --gpu a100", "--model"),
    ("config-utf16", "roofline --model {d}/cfg_utf16.json --gpu a100", "UTF-8"),
    ("config-binary", "roofline --model {d}/binary.bin --gpu a100", "--model"),
    ("config-truncated", "roofline --model {d}/cfg_truncated.json --gpu a100", "--model"),
    ("config-folder-without-config", "roofline --model {d}/cfg_dir --gpu a100", "--model"),
    ("config-missing", "roofline --model {d}/nope.json --gpu a100", "--model"),
    ("config-huge", "roofline --model {d}/cfg_huge.json --gpu a100", "--model"),
    ("config-list", "roofline --model {d}/cfg_list.json --gpu a100", "JSON object"),
    ("config-unknown-type", "roofline --model {d}/cfg_unknown_type.json --gpu a100", "model_type"),
    ("config-no-type", "roofline --model {d}/cfg_no_type.json --gpu a100", "model_type"),
    ("config-no-heads", "roofline --model {d}/cfg_no_heads.json --gpu a100", "num_attention_heads"),
    ("config-hidden-text", "roofline --model {d}/cfg_str_hidden.json --gpu a100", "hidden_size"),
    ("config-hidden-negative", "roofline --model {d}/cfg_neg_hidden.json --gpu a100", "hidden_size"),
    ("config-layers-huge", "roofline --model {d}/cfg_huge_layers.json --gpu a100", "num_hidden_layers"),
    ("config-layers-bool", "roofline --model {d}/cfg_bool_layers.json --gpu a100", "num_hidden_layers"),
    ("config-heads-zero", "roofline --model {d}/cfg_zero_heads.json --gpu a100", "num_attention_heads"),
    ("config-kv-not-divisor", "roofline --model {d}/cfg_kv_not_divisor.json --gpu a100", "num_key_value_heads"),
    ("config-vocab-float", "roofline --model {d}/cfg_float_vocab.json --gpu a100", "vocab_size"),
    ("config-tie-text", "roofline --model {d}/cfg_str_tie.json --gpu a100", "tie_word_embeddings"),
    ("config-mlp-null", "roofline --model {d}/cfg_null_mlp.json --gpu a100", "intermediate_size"),
    ("config-context-nan", "roofline --model {d}/cfg_nan_context.json --gpu a100", "max_position_embeddings"),
    ("config-moe-topk", "roofline --model {d}/cfg_moe_topk.json --gpu a100", "num_experts_per_tok"),
    ("config-phi-rotary", "roofline --model {d}/cfg_phi_rotary.json --gpu a100", "partial_rotary_factor"),
    ("config-hidden-not-divisible", "roofline --model {d}/cfg_hidden_not_divisible.json --gpu a100", "hidden_size"),
    # --- GPU files ----------------------------------------------------------------------------------
    ("gpu-negative", GPUF + "gpu_negative.yaml", "hbm_bandwidth_gbps"),
    ("gpu-nan", GPUF + "gpu_nan.yaml", "hbm_bandwidth_gbps"),
    ("gpu-text", GPUF + "gpu_text.yaml", "hbm_bandwidth_gbps"),
    ("gpu-huge", GPUF + "gpu_huge.yaml", "hbm_bandwidth_gbps"),
    ("gpu-peak-nan", GPUF + "gpu_peak_nan.yaml", "peak_tflops.fp16"),
    ("gpu-peak-list", GPUF + "gpu_peak_list.yaml", "peak_tflops"),
    ("gpu-no-memory", GPUF + "gpu_no_memory.yaml", "memory_gib"),
    ("gpu-extra-key", GPUF + "gpu_extra.yaml", "colour"),
    ("gpu-zero-sms", GPUF + "gpu_zero_sms.yaml", "sm_count"),
    ("gpu-scalar", GPUF + "gpu_scalar.yaml", "GPU 'g'"),
    ("gpu-list", GPUF + "gpu_list.yaml", "--gpu-file"),
    ("gpu-invalid-yaml", GPUF + "gpu_invalid.yaml", "--gpu-file"),
    ("gpu-python-tag", GPUF + "gpu_python_tag.yaml", "--gpu-file"),
    ("gpu-utf16", GPUF + "gpu_utf16.yaml", "--gpu-file"),
    ("gpu-duplicate-key", GPUF + "gpu_duplicate.yaml", "duplicate key 'g'"),
    ("gpu-empty", GPUF + "empty.yaml", "--gpu-file"),
    ("gpu-binary", GPUF + "binary.bin", "--gpu-file"),
    ("gpu-folder", GPUF + "a_folder", "--gpu-file"),
    ("gpu-missing", GPUF + "nope.yaml", "--gpu-file"),
    ("gpu-name-not-in-file", "roofline --model llama-2-7b --gpu h --gpu-file {d}/gpu_ok.yaml", "--gpu"),
    # --- traces -------------------------------------------------------------------------------------
    ("trace-header-only", TRACE + "trace_header.csv", "trace_header.csv"),
    ("trace-columns", TRACE + "trace_columns.csv", "num_prefill_tokens"),
    ("trace-text", TRACE + "trace_text.csv", "num_prefill_tokens"),
    ("trace-negative", TRACE + "trace_negative.csv", "--trace"),
    ("trace-huge", TRACE + "trace_huge.csv", "--trace"),
    ("trace-negative-arrival", TRACE + "trace_bad_arrival.csv", "arrived_at"),
    ("trace-inf-arrival", TRACE + "trace_inf_arrival.csv", "arrived_at"),
    ("trace-no-arrivals", TRACE + "trace_no_arrivals.csv", "--trace"),
    ("trace-utf16", TRACE + "trace_utf16.csv", "trace_utf16.csv"),
    ("trace-binary", TRACE + "binary.bin", "binary.bin"),
    ("trace-empty", TRACE + "empty.csv", "empty.csv"),
    ("trace-folder", TRACE + "a_folder", "--trace"),
    ("trace-missing", TRACE + "nope.csv", "--trace"),
    ("trace-unused-but-missing", f"{SIM_FIXED} --trace {{d}}/nope.csv", "--trace"),
    # --- profile tables -----------------------------------------------------------------------------
    ("profiles-empty-parquet", "evaluate --profiles {d}/empty.parquet", "--profiles"),
    ("profiles-empty-csv", "evaluate --profiles {d}/empty.csv", "--profiles"),
    ("profiles-header-only", "evaluate --profiles {d}/prof_header.csv", "--profiles"),
    ("profiles-binary", "evaluate --profiles {d}/binary.bin", "--profiles"),
    ("profiles-folder", "evaluate --profiles {d}/a_folder", "--profiles"),
    ("profiles-missing", "evaluate --profiles {d}/nope.parquet", "--profiles"),
    ("profiles-utf16", "evaluate --profiles {d}/prof_utf16.csv", "--profiles"),
    ("profiles-text-times", "evaluate --profiles {d}/prof_text.csv", "measured_ms"),
    ("profiles-missing-column", "evaluate --profiles {d}/prof_missing.csv", "op_kind"),
    ("profiles-units", "evaluate --profiles {d}/prof_units.csv", "measured_ms"),
    ("profiles-nan-times", "evaluate --profiles {d}/prof_nan.csv", "nan_or_negative_time"),
    ("profiles-unknown-gpu", "evaluate --profiles {d}/prof_gpu.csv", "unknown_gpu"),
    ("profiles-negative-shapes", "evaluate --profiles {d}/prof_negative.csv", "invalid_number"),
    ("ingest-canonical-binary", "data ingest {d}/binary.bin --source canonical --out {d}/x.parquet", "PATH"),
    ("ingest-canonical-text-times", "data ingest {d}/prof_text.csv --source canonical --out {d}/x.parquet",
     "measured_ms"),
    # --- artifacts ----------------------------------------------------------------------------------
    ("artifact-missing", f"{EST} --artifacts {{d}}/nope", "artifact"),
    ("artifact-is-a-file", f"{EST} --artifacts {{d}}/a_file", "artifact"),
    ("artifact-empty-folder", f"{EST} --artifacts {{d}}/art_empty", MODEL_FILE),
    ("artifact-no-checksum", f"{EST} --artifacts {{d}}/art_no_checksum", CHECKSUM_FILE),
    ("artifact-tampered", f"{EST} --artifacts {{d}}/art_tampered", "checksum mismatch"),
    ("artifact-latin1-metadata", f"{EST} --artifacts {{d}}/art_latin1_metadata", METADATA_FILE),
    ("artifact-metadata-list", f"{EST} --artifacts {{d}}/art_metadata_list", "feature_names"),
    ("artifact-utf16-checksum", f"{EST} --artifacts {{d}}/art_utf16_checksum", CHECKSUM_FILE),
    ("artifact-huge-model", f"{EST} --artifacts {{d}}/art_huge_model", "limit"),
    ("artifact-feature-mismatch", f"{EST} --artifacts {{d}}/art_features", "feature list"),
    ("artifact-garbage-model", f"{EST} --artifacts {{d}}/art_garbage_model", MODEL_FILE),
    ("artifact-bad-overhead", f"{EST} --artifacts {{d}}/art_bad_overhead", "overhead"),
    ("report-artifacts-missing", "report --artifacts {d}/nope", "--artifacts"),
    ("report-evaluation-not-json", "report --json --out-dir {d}/rep --artifacts {d}/art_eval_bad_json",
     "evaluation.json"),
    ("report-evaluation-no-splits", "report --json --out-dir {d}/rep --artifacts {d}/art_eval_no_splits",
     "splits"),
    ("report-sample-not-parquet", "report --json --out-dir {d}/rep --artifacts {d}/art_eval_bad_sample",
     "evaluation_sample.parquet"),
    ("report-metadata-tampered", "report --json --out-dir {d}/rep --artifacts {d}/art_eval_tampered",
     "checksum mismatch"),
    # --- application specs (plan) -------------------------------------------------------------------
    ("app-missing", "plan {d}/nope.yaml", "app"),
    ("app-folder", "plan {d}/a_folder", "app"),
    ("app-empty", "plan {d}/empty.yaml", "app"),
    ("app-binary", "plan {d}/binary.bin", "app"),
    ("app-utf16", "plan {d}/app_utf16.yaml", "UTF-8"),
    ("app-latin1", "plan {d}/app_latin1.yaml", "UTF-8"),
    ("app-nul-byte", "plan {d}/app_nul.yaml", "app"),
    ("app-huge", "plan {d}/app_huge.yaml", "limit"),
    ("app-scalar", "plan {d}/app_scalar.yaml", "mapping"),
    ("app-invalid-yaml", "plan {d}/app_invalid.yaml", "not valid YAML"),
    ("app-tab", "plan {d}/app_tab.yaml", "not valid YAML"),
    ("app-python-tag", "plan {d}/app_python_tag.yaml", "not valid YAML"),
    ("app-duplicate-key", "plan {d}/app_duplicate.yaml", "duplicate key 'name'"),
    ("app-count-text", "plan {d}/app_count_text.yaml", "node.count"),
    ("app-count-negative", "plan {d}/app_count_negative.yaml", "node.count"),
    ("app-count-huge", "plan {d}/app_count_huge.yaml", "node.count"),
    ("app-budget-nan", "plan {d}/app_budget_nan.yaml", "search.time_budget_s"),
    ("app-mean-nan", "plan {d}/app_mean_nan.yaml", "output_lengths.mean"),
    ("app-gpu-unknown", "plan {d}/app_gpu_unknown.yaml", "node.gpu"),
    ("app-dtype-unknown", "plan {d}/app_dtype_unknown.yaml", "node.dtype"),
    ("app-model-unknown", "plan {d}/app_model_unknown.yaml", "models.a.model"),
    ("app-measured-unknown", "plan {d}/app_measured_unknown.yaml", "models.a.output_lengths.measured"),
    ("app-trace-missing", "plan {d}/app_trace_missing.yaml", "prompts.trace"),
    ("app-trace-folder", "plan {d}/app_trace_folder.yaml", "prompts.trace"),
    ("app-trace-bad-columns", "plan {d}/app_trace_bad.yaml", "num_prefill_tokens"),
    ("app-models-missing", "plan {d}/app_models_missing.yaml", "models"),
    ("app-models-empty", "plan {d}/app_models_empty.yaml", "models"),
    ("app-models-text", "plan {d}/app_models_text.yaml", "models"),
    ("app-share-negative", "plan {d}/app_share_negative.yaml", "share"),
    ("app-max-below-min", "plan {d}/app_max_below_min.yaml", "output_lengths"),
    ("app-strategy", "plan {d}/app_strategy.yaml", "search.strategy"),
    ("app-unknown-key", "plan {d}/app_unknown_key.yaml", "colour"),
    ("app-fixed-float", "plan {d}/app_fixed_float.yaml", "output_lengths.fixed"),
    ("app-topology", "plan {d}/app_topology.yaml", "topology"),
    ("app-name-bool", "plan {d}/app_name_bool.yaml", "models.0.name"),
    ("app-seed-negative", "plan {d}/app_seed_negative.yaml", "seed"),
    ("app-model-too-big", "plan {d}/app_too_big.yaml", "llama-2-70b"),
]
NUM_CASES = len(CASES)


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad_inputs")
    build_bad_files(d)
    (d / "app_ok.yaml").write_text(yaml.safe_dump(APP))
    return d


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run from a scratch folder with a scratch MLflow store (nothing lands in the repository)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("INFERENCE_SIM_NO_CACHE", "1")


def test_corpus_size():
    print(f"\n{NUM_CASES} bad-input cases")
    assert NUM_CASES >= 50
    assert len({c[0] for c in CASES}) == NUM_CASES


@pytest.mark.parametrize(("template", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_field_exit_2(bad_dir, capsys, template, field):
    argv = [part.format(d=bad_dir) for part in template.split()]
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert field in lines[0], lines[0]
    assert "Traceback" not in err
    assert out.strip() == ""  # (a progress bar may leave a blank line)


def test_debug_shows_the_traceback_instead(bad_dir):
    """--debug re-raises (the console script then prints Python's full traceback)."""
    from predictor.errors import InputError

    with pytest.raises(InputError, match="--gpu-file"):
        main(["roofline", "--model", "llama-2-7b", "--gpu", "g", "--gpu-file", str(bad_dir / "gpu_utf16.yaml"),
              "--debug"])
    with pytest.raises(InputError, match="--out"):  # checked before the run, not when the first file is written
        main(["simulate", "--model", "llama-2-7b", "--gpu", "a100", "--roofline", "--workload", "offline",
              "--num-requests", "2", "--prompt-len", "8", "--output-len", "8", "--out", str(bad_dir / "a_file"),
              "--debug"])
