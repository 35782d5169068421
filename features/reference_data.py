"""Build and read the compact reference data shipped in the repository's ``data/`` folder.

:func:`build_reference_data` reads the published source files (the shared store, one folder per
source with the files exactly as published), cleans them with the loaders of
:mod:`features.e2e` and writes small zstd-compressed Parquet copies, the source's LICENSE and a
PROVENANCE.md per source. The ``read_*`` helpers read those Parquet files back.

Layout written under ``out_dir``::

    splitwise/e2e.parquet                   end-to-end TTFT/TPOT of whole serving runs
    vidur/cpu_overheads.parquet             engine CPU overheads per iteration
    vidur/traces/<name>.parquet             request traces (see TRACE_SOURCES)
    samullm/output_lengths.parquet          output-length distributions per model
    samullm/model_init_costs.parquet        engine start-up times
    <source>/LICENSE, <source>/PROVENANCE.md

Every file goes through :func:`predictor.atomic.atomic_path` / :func:`~predictor.atomic.atomic_write`.
"""

from __future__ import annotations

from pathlib import Path

from features import e2e
from predictor.atomic import atomic_path, atomic_write
from predictor.errors import InputError, unknown_name
from predictor.lazy import pandas as pd

#: The repository's ``data/`` folder (the default for the read helpers).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"

#: Trace name → published file under ``vidur/data/processed_traces/``.
TRACE_SOURCES = {
    "splitwise_conv": "splitwise_conv.csv",
    "splitwise_code": "splitwise_code.csv",
    "arxiv_summarization": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
}
#: Vidur profiling folder holding the CPU-overhead files, and the GPU folders used.
CPU_OVERHEAD_DIR = "vidur/history/021ca0c/data/profiling"
CPU_OVERHEAD_GPUS = ("a100", "a40")

SPLITWISE_FILE = "splitwise/e2e.parquet"
CPU_OVERHEADS_FILE = "vidur/cpu_overheads.parquet"
OUTPUT_LENGTHS_FILE = "samullm/output_lengths.parquet"
INIT_COSTS_FILE = "samullm/model_init_costs.parquet"

# Facts about each upstream (for PROVENANCE.md).
_SPLITWISE_URL = "https://github.com/Mutinifni/splitwise-sim"
_SPLITWISE_COMMIT = "8f99e7dc9b407f4ce2488d03dd44c0b8b946dab0"
_VIDUR_URL = "https://github.com/microsoft/vidur"
_VIDUR_MAIN_COMMIT = "7d47513363ec447a741ac5e47241580b47724fbf"
_VIDUR_CPU_COMMIT = "021ca0c"
_SAMULLM_URL = "https://github.com/puddingfjz/vllm"
_SAMULLM_COMMIT = "de1677dcb7e2a216172aedf3262b19b106f17786"


# --- writing ----------------------------------------------------------------------------------
def _write_parquet(df: pd.DataFrame, path: Path) -> int:
    """Write ``df`` as zstd Parquet atomically; return the file size in bytes."""
    clean = df.copy()
    clean.attrs = {}
    with atomic_path(path) as tmp:
        clean.to_parquet(tmp, compression="zstd", index=False)
    return path.stat().st_size


def _copy_license(src_dir: Path, out_dir: Path) -> int:
    src = src_dir / "LICENSE"
    if not src.is_file():
        raise InputError(f"{src}: file does not exist (every source folder must carry its LICENSE)")
    dst = out_dir / "LICENSE"
    atomic_write(dst, src.read_bytes())
    return dst.stat().st_size


def _fmt(n: int) -> str:
    return f"{n:,}"


def _splitwise_provenance(info: dict) -> str:
    d = info["dropped"]
    return f"""# Provenance of `splitwise/`

## Origin
- Project: SplitwiseSim, the simulator released with the Splitwise paper (Patel et al., ISCA 2024,
  arXiv:2311.18677). Repository: {_SPLITWISE_URL}
- Commit: `{_SPLITWISE_COMMIT}`. Source file: `data/perf_model.csv`.
- Licence: MIT, Copyright (c) 2024 Pratyush Patel. `LICENSE` here is the upstream text, unchanged.
- What the file measures: whole serving runs of FP16 models on 8-GPU DGX-A100 and DGX-H100 nodes,
  swept one dimension at a time around prompt 512 / batch 1 / 128 output tokens, each point run
  several times. The serving framework and its version are not recorded upstream.

## What we ship
`e2e.parquet` (zstd), produced by `features.reference_data.build_reference_data` through
`features.e2e.load_splitwise`: {_fmt(info['input_rows'])} published rows in, {_fmt(info['kept_rows'])} kept,
{_fmt(info['output_rows'])} output rows.

Changes relative to the published CSV:
1. Repeated runs of one configuration are collapsed into a single row holding the median of each
   time; `repeats` says how many runs went into it.
2. Names are mapped onto our catalogues: model `llama2-70b` becomes `llama-2-70b`; hardware
   `a100-80gb` stays `a100-80gb` and `h100-80gb` becomes `h100-sxm`.
3. Rows removed, counted on the published rows:
   - `derived_not_measured`: {d['derived_not_measured']}. The power-capped H100 label (`h100-80gb-pcap`)
     does not hold separate measurements: its prefill times equal the H100 ones times 1.3 and
     its other times are the H100 values verbatim.
   - `unsupported_model`: {d['unsupported_model']}. BLOOM-176B, an architecture our model catalogue
     cannot describe.
   - `kv_overflow_anomaly`: {d['kv_overflow_anomaly']}. Llama-2-70B at TP2 with 64 requests per batch.
     Here prefill is faster than at batch 32 while end-to-end latency jumps to 84-160 s,
     the signature of a batch that did not fit in KV-cache memory and was queued or preempted.
   - `unknown_hardware`: {d['unknown_hardware']}; `invalid_value`: {d['invalid_value']}.
4. `e2e_time_ms` is blanked (NaN) on the {info['e2e_masked_rows']} output rows with more than 128 output
   tokens. For those runs the published end-to-end time is far below prefill plus one token time per
   output token and varies wildly between repeats, so generation evidently ended early. The prompt
   and per-token times of those rows are kept.
5. The power columns (`peak_power`, `average_power`) are not carried over.

## Columns
| column | unit | meaning |
|---|---|---|
| model | - | catalogue model name |
| gpu | - | catalogue GPU name |
| tp | GPUs | tensor-parallel degree |
| prompt_size | tokens | prompt length of every request in the batch |
| batch_size | requests | requests served together, all with the same prompt |
| token_size | tokens | output tokens requested per request |
| prompt_time_ms | ms | prefill of the whole batch, i.e. the batch's time to first token |
| token_time_ms | ms | mean time of one generation iteration (time per output token) |
| e2e_time_ms | ms | latency of a request from arrival to last token; NaN where unreliable |
| repeats | runs | published rows behind the medians |

These are end-to-end numbers: they include tensor-parallel communication and framework overhead,
which makes them a check on full-model predictions rather than kernel training data.
"""


def _vidur_provenance(cpu: pd.DataFrame, traces: dict[str, pd.DataFrame]) -> str:
    trace_lines = "\n".join(
        f"| `traces/{name}.parquet` | `data/processed_traces/{src}` | {_fmt(len(traces[name]))} | "
        f"{traces[name].attrs.get('dropped', {}).get('invalid_tokens', 0)} |"
        for name, src in TRACE_SOURCES.items()
    )
    cpu_dropped = cpu.attrs.get("dropped", {}).get("invalid_value", 0)
    cpu_models = ", ".join(sorted(cpu["model"].unique()))
    trace_dropped = sum(t.attrs.get("dropped", {}).get("invalid_tokens", 0) for t in traces.values())
    return f"""# Provenance of `vidur/` (CPU overheads and request traces)

This note covers `cpu_overheads.parquet` and `traces/`. Kernel-profile Parquet files in this folder
(`kernels*.parquet`), if present, are produced by a separate builder and described there.

## Origin
- Project: Vidur, the LLM-inference simulator of Agrawal et al. (MLSys 2024, arXiv:2405.05465).
  Repository: {_VIDUR_URL}
- Licence: MIT, Copyright (c) Microsoft Corporation. `LICENSE` here is the upstream text, unchanged.
- Request traces: branch `main` at commit `{_VIDUR_MAIN_COMMIT}`, folder `data/processed_traces/`.
- CPU overheads: `data/profiling/{{a100,a40}}/cpu_overheads.csv` as of upstream commit
  `{_VIDUR_CPU_COMMIT}` (May 2024). These files were later removed from `main`; only the short commit
  id is known.

## What we ship
Built by `features.reference_data.build_reference_data` with the loaders in `features.e2e`; all
files are zstd Parquet.

### `cpu_overheads.parquet` ({_fmt(len(cpu))} rows, {cpu_dropped} dropped)
Host-side time the serving engine spends per scheduler iteration, measured by the Vidur
authors on a sarathi/vLLM-style engine for batch sizes 8 to 128. We keep only the per-stage
medians (plus the Ray communication time, published only as a mean), rename them with units, and
map the GPU folder (`a100` → `a100-80gb`, `a40` → `a40`) and the Hugging Face model ids onto our
catalogue (models: {cpu_models}). Launch-only timings, means and the model-execution timing are
left out.

| column | unit | meaning |
|---|---|---|
| gpu, model | - | catalogue names |
| batch_size | requests | requests in the iteration |
| tp | GPUs | tensor-parallel degree |
| schedule_ms | ms | scheduler decision |
| sampler_ms | ms | token sampling, end to end |
| prepare_inputs_ms | ms | building the model inputs, end to end |
| process_outputs_ms | ms | handling the sampled tokens |
| ray_comm_ms | ms | Ray communication time (mean) |

### `traces/` (one Parquet file per trace)
| file | published file | rows | dropped |
|---|---|---|---|
{trace_lines}

The two Splitwise traces are Vidur's processed versions of the Azure LLM inference trace 2023
(conversation and coding services); the arXiv trace holds prompt and summary lengths of the arXiv
summarisation data set, counted with the Llama-2 tokenizer, without arrival times. We keep the
arrival time and the two token counts, renamed; derived columns (`num_total_tokens`, `pd_ratio`)
are dropped. Rows with a missing, fractional or non-positive token count are dropped
({trace_dropped} in total).

| column | unit | meaning |
|---|---|---|
| arrival_s | s | arrival since the start of the trace; NaN when the trace has none |
| prompt_tokens | tokens | prompt (prefill) length |
| output_tokens | tokens | generated (decode) length |
"""


def _samullm_provenance(lengths: pd.DataFrame, costs: pd.DataFrame) -> str:
    c_drop = costs.attrs.get("dropped", {})
    return f"""# Provenance of `samullm/`

## Origin
- Project: SamuLLM research code, a fork of vLLM (about v0.3) with extra benchmark scripts.
  Repository: {_SAMULLM_URL}
- Commit: `{_SAMULLM_COMMIT}`.
- Licence: Apache-2.0. `LICENSE` here is the repository's licence text, unchanged.
- Upstream keeps both data sets as Python literals, not data files:
  - output lengths: `benchmarks/collect_output_lengths/no_robot_copy/out_len_sampler_2.py`;
  - start-up costs: the `model_init_costs` dictionary in `benchmarks/model_initcost_database.py`.
  They were converted to CSV by reading the literals (without running upstream code); those
  CSVs are the input here. No upstream code is included in this project.

## What we ship (modified from the original, as the Apache-2.0 licence asks us to state)
Built by `features.reference_data.build_reference_data` with `features.e2e`; zstd Parquet.

### `output_lengths.parquet` ({_fmt(len(lengths))} rows, {lengths['model'].nunique()} models)
For each model, the probability that a request on the *no_robots* prompts ends after a given number
of output tokens, as measured by the SamuLLM authors with vLLM (temperature 1, generation to EOS
or the context limit). Changes: only the entries upstream's sampler actually uses are kept (later
definitions of a model replace earlier ones); each model's probabilities, which already sum to 1
within 1e-6, are divided by their sum to remove float residue; bookkeeping columns are dropped.
Model names are left as upstream wrote them.

| column | unit | meaning |
|---|---|---|
| model | - | upstream model name (e.g. `Llama-2-7b-chat-hf`) |
| output_len | tokens | output length; lengths not listed have probability 0 |
| prob | - | probability of that length (sums to 1 per model) |
| max_model_len | tokens | context limit and output cap; its bin holds every request that never stopped |

### `model_init_costs.parquet` ({_fmt(len(costs))} rows)
Wall time to construct a vLLM engine (weights from a warm page cache, memory profiling, KV-cache
allocation; best of three fresh-process runs), per model and tensor-parallel degree. Changes: only
the values left after upstream's successive dictionary updates are kept (dropped as invalid:
{c_drop.get('invalid_value', 0)}; superseded duplicates: {c_drop.get('superseded_duplicate', 0)}), and a catalogue model name is
added where we have one. Caveats: the GPU is not recorded (the project's analysis scripts refer
to A100 machines); most surviving values were taken on a second machine whose times are about
twice those of the first for the same model, so treat them as rough, machine-specific numbers.

| column | unit | meaning |
|---|---|---|
| model_path | - | Hugging Face id as measured |
| model | - | catalogue model name, or empty when the catalogue lacks it |
| tp | GPUs | tensor-parallel degree |
| init_cost_s | s | engine start-up time |
"""


def build_reference_data(shared_dir: str | Path = "../shared/data", out_dir: str | Path = "data") -> dict:
    """Clean the published source files and write the compact copies shipped in ``data/``.

    Parameters
    ----------
    shared_dir : str or Path
        Folder holding the published sources (``splitwise/``, ``vidur/``, ``samullm/``).
    out_dir : str or Path
        Destination, normally the repository's ``data/`` folder.

    Returns
    -------
    dict
        ``files``: relative path → ``{"rows", "bytes"}`` for every Parquet file written;
        ``dropped``: relative path → dropped rows per reason; ``splitwise``: the full report of
        :func:`features.e2e.load_splitwise`; ``total_bytes``: size of everything written
        (Parquet, LICENSE and PROVENANCE.md files).

    Raises
    ------
    InputError
        A source folder, file, column or LICENSE is missing or malformed.
    """
    shared, out = Path(shared_dir), Path(out_dir)
    if not shared.is_dir():
        raise InputError(f"shared_dir: {str(shared)!r} is not a folder")
    files: dict[str, dict] = {}
    dropped: dict[str, dict] = {}
    total = 0

    def put(rel: str, df: pd.DataFrame, drops: dict) -> None:
        nonlocal total
        size = _write_parquet(df, out / rel)
        files[rel] = {"rows": len(df), "bytes": size}
        dropped[rel] = dict(drops)
        total += size

    def text(rel: str, body: str) -> None:
        nonlocal total
        atomic_write(out / rel, body)
        total += (out / rel).stat().st_size

    # Splitwise
    split, info = e2e.load_splitwise(shared / "splitwise" / "perf_model.csv")
    put(SPLITWISE_FILE, split, info["dropped"])
    total += _copy_license(shared / "splitwise", out / "splitwise")
    text("splitwise/PROVENANCE.md", _splitwise_provenance(info))

    # Vidur: CPU overheads and traces
    cpu_paths = [shared / CPU_OVERHEAD_DIR / g / "cpu_overheads.csv" for g in CPU_OVERHEAD_GPUS]
    cpu = e2e.load_cpu_overheads(cpu_paths)
    put(CPU_OVERHEADS_FILE, cpu, cpu.attrs.get("dropped", {}))
    traces = {}
    for name, src in TRACE_SOURCES.items():
        traces[name] = e2e.load_trace(shared / "vidur" / "data" / "processed_traces" / src)
        put(f"vidur/traces/{name}.parquet", traces[name], traces[name].attrs.get("dropped", {}))
    total += _copy_license(shared / "vidur", out / "vidur")
    text("vidur/PROVENANCE.md", _vidur_provenance(cpu, traces))

    # SamuLLM
    lengths = e2e.load_output_lengths(shared / "samullm" / "output_lengths.csv")
    put(OUTPUT_LENGTHS_FILE, lengths, {})
    costs = e2e.load_model_init_costs(shared / "samullm" / "model_init_costs.csv")
    put(INIT_COSTS_FILE, costs, costs.attrs.get("dropped", {}))
    total += _copy_license(shared / "samullm", out / "samullm")
    text("samullm/PROVENANCE.md", _samullm_provenance(lengths, costs))

    return {"files": files, "dropped": dropped, "splitwise": info, "total_bytes": total}


# --- reading ----------------------------------------------------------------------------------
def _path(rel: str, data_dir: str | Path | None) -> Path:
    path = (DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)) / rel
    if not path.is_file():
        raise InputError(
            f"{path}: reference data file does not exist; build it with "
            "features.reference_data.build_reference_data"
        )
    return path


def _check_columns(path: Path, present, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r}; rebuild the reference data")


def _read(rel: str, data_dir: str | Path | None, columns: tuple[str, ...]) -> pd.DataFrame:
    path = _path(rel, data_dir)
    df = pd.read_parquet(path)
    _check_columns(path, df.columns, columns)
    return df


def read_splitwise(data_dir: str | Path | None = None) -> pd.DataFrame:
    """Splitwise end-to-end medians (columns of :func:`features.e2e.load_splitwise`; times in ms).

    ``data_dir`` defaults to the repository's ``data/`` folder, found relative to this module.
    """
    return _read(SPLITWISE_FILE, data_dir, e2e.SPLITWISE_COLUMNS)


def read_trace(name: str, data_dir: str | Path | None = None) -> pd.DataFrame:
    """A shipped request trace: ``arrival_s`` (s, NaN if none), ``prompt_tokens``, ``output_tokens``.

    Parameters
    ----------
    name : str
        One of :data:`TRACE_SOURCES` (``splitwise_conv``, ``splitwise_code``, ``arxiv_summarization``).
    data_dir : str or Path, optional
        Folder holding ``vidur/traces/``; defaults to the repository's ``data/``.
    """
    if name not in TRACE_SOURCES:
        raise unknown_name("trace", name, TRACE_SOURCES)
    return _read(f"vidur/traces/{name}.parquet", data_dir, e2e.TRACE_COLUMNS)


def _cached_columns(rel: str, data_dir: str | Path | None, columns: tuple[str, ...]) -> dict:
    """Columns of a shipped Parquet file as numpy arrays, cached (:mod:`predictor.array_cache`, keyed by the file's
    SHA-256) so that a later process reads them without importing pandas and pyarrow."""
    import hashlib

    from predictor.array_cache import cache_dir, load_arrays, save_arrays

    path = _path(rel, data_dir)
    folder = cache_dir()
    cached = None
    if folder is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
        cached = folder / "reference" / f"{rel.replace('/', '-').removesuffix('.parquet')}-{digest}.npz"
        arrays = load_arrays(cached, columns)
        if arrays is not None:
            return arrays
    table = _read(rel, data_dir, columns)
    arrays = {c: table[c].to_numpy() for c in columns}
    arrays = {c: a.astype(str) if a.dtype == object else a for c, a in arrays.items()}  # text: no pickle in the cache
    if cached is not None:
        try:
            save_arrays(cached, arrays)
        except OSError:  # a read-only cache only costs the next process the read
            pass
    return arrays


def read_trace_columns(name: str, data_dir: str | Path | None = None) -> dict:
    """:func:`read_trace`'s columns as numpy arrays (cached: see :func:`_cached_columns`)."""
    if name not in TRACE_SOURCES:
        raise unknown_name("trace", name, TRACE_SOURCES)
    return _cached_columns(f"vidur/traces/{name}.parquet", data_dir, e2e.TRACE_COLUMNS)


def read_output_lengths(data_dir: str | Path | None = None) -> pd.DataFrame:
    """SamuLLM output-length distributions: ``model``, ``output_len`` (tokens), ``prob``, ``max_model_len``."""
    return _read(OUTPUT_LENGTHS_FILE, data_dir, e2e.OUTPUT_LENGTH_COLUMNS)


def read_output_length_columns(data_dir: str | Path | None = None) -> dict:
    """:func:`read_output_lengths`'s columns as numpy arrays (cached: see :func:`_cached_columns`)."""
    return _cached_columns(OUTPUT_LENGTHS_FILE, data_dir, e2e.OUTPUT_LENGTH_COLUMNS)


def read_model_init_costs(data_dir: str | Path | None = None) -> pd.DataFrame:
    """SamuLLM engine start-up times: ``model_path``, ``model``, ``tp``, ``init_cost_s`` (s)."""
    return _read(INIT_COSTS_FILE, data_dir, e2e.INIT_COST_COLUMNS)


def read_cpu_overheads(data_dir: str | Path | None = None) -> pd.DataFrame:
    """Vidur per-iteration CPU overheads (columns of :func:`features.e2e.load_cpu_overheads`; ms)."""
    return _read(CPU_OVERHEADS_FILE, data_dir, e2e.CPU_OVERHEAD_COLUMNS)
