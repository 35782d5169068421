"""`inference-sim data summary` and `data ingest`."""

from __future__ import annotations

import json

import pandas as pd

from inference_sim.cli import main
from tests.test_ingest_vidur import mlp_csv


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_json_counts_every_shipped_row(capsys, tmp_path):
    md = tmp_path / "data.md"
    code, out, err = run(capsys, "data", "summary", "--json", "--markdown", str(md))
    assert code == 0, err
    payload = json.loads(out)
    assert payload["total_rows"] == sum(r["rows"] for r in payload["table"]) > 800_000
    assert set(payload["rows_by_source"]) == {"vidur", "aiconfigurator"}
    assert payload["ingest"]["aiconfigurator"]["rejected"]["block_scaled_fp8"] > 0
    assert "| vidur | a100-80gb | gemm | fp16 |" in md.read_text()


def test_ingest_vidur_folder_to_canonical_parquet(capsys, tmp_path):
    mlp_csv(tmp_path / "prof/compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv", (32, 32, 4096, 11008), [(64, 1), (128, 2)])
    out_file = tmp_path / "mine.parquet"
    code, out, err = run(capsys, "data", "ingest", str(tmp_path / "prof"), "--source", "vidur", "--out", str(out_file),
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kept"] == 20  # 10 ops × 2 rows
    table = pd.read_parquet(out_file)
    assert set(table["op"]) >= {"qkv_proj", "gate_up_proj"} and set(table["tp"]) == {1.0, 2.0}
    # the canonical output re-ingests as a canonical table
    code, out, err = run(capsys, "data", "ingest", str(out_file), "--source", "canonical",
                         "--out", str(tmp_path / "again.parquet"), "--json")
    assert code == 0 and json.loads(out)["kept"] == 20


def test_ingest_bad_inputs(capsys, tmp_path):
    cases = [
        (["data", "ingest", str(tmp_path), "--source", "csv", "--out", str(tmp_path / "x.parquet")], "--source"),
        (["data", "ingest", str(tmp_path / "missing"), "--source", "vidur", "--out", str(tmp_path / "x.parquet")],
         "does not exist"),
        (["data", "ingest", str(tmp_path), "--source", "aiconfigurator", "--out", str(tmp_path / "x.parquet")], ""),
        (["data", "ingest", str(tmp_path), "--source", "vidur", "--out", str(tmp_path / "x.csv")], ".parquet"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, *args)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, (args, err)
