"""Generated docs regenerate byte for byte from their scripts.

The regenerations that take under a minute on an idle machine run here, marked slow (CI runs them with
``pytest -m slow tests/test_docs_regenerate.py``, see ``.ci/run``): ``docs/simulator.md``
(``benchmarks.experiments.batching``), ``docs/data.md`` with its plot (``inference-sim data summary``) and
``docs/accuracy.md`` with its plots (``inference-sim report``). The fast tests pin what makes that possible:
the hand-written prose lives in a template and measured figures come from a recorded measurement.

Markdown must match byte for byte. A plot must decode to the same picture: byte for byte on the machine that drew
it, and within a few anti-aliased pixels elsewhere — a CPU with other vector maths (AVX2 against AVX-512) moves a
held-out prediction in its last bits, and a curve through it by a shade in a handful of edge pixels
(:data:`EDGE_PIXELS`), while any change of what is plotted moves thousands.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

from benchmarks.experiments import batching

DOCS = Path(__file__).resolve().parents[1] / "docs"
EDGE_PIXELS = 100  # pixels (of about 760,000 in a 2000 × 380 plot) allowed to differ, by at most EDGE_SHADE levels
EDGE_SHADE = 64


def _assert_same_picture(drawn: Path, shipped: Path) -> None:
    """``drawn`` is ``shipped``, or the same picture up to anti-aliasing noise (see the module docstring)."""
    if drawn.read_bytes() == shipped.read_bytes():
        return
    import numpy as np
    from PIL import Image

    a, b = (np.asarray(Image.open(p).convert("RGBA"), dtype=np.int16) for p in (drawn, shipped))
    assert a.shape == b.shape, f"{shipped.name}: size {a.shape} != {b.shape}"
    diff = np.abs(a - b).max(axis=-1)
    changed = int((diff > 0).sum())
    assert changed <= EDGE_PIXELS and int(diff.max()) <= EDGE_SHADE, (
        f"{shipped.name}: {changed} pixels differ (at most {EDGE_PIXELS} allowed), by up to {int(diff.max())} levels")


def test_simulator_template_names_exactly_the_values_the_script_fills():
    template = string.Template(batching.TEMPLATE.read_text(encoding="utf-8"))
    names = {m.group("braced") for m in template.pattern.finditer(template.template) if m.group("braced")}
    assert names == {"orca_table", "sarathi_table", "sarathi_summary", "efficiency_example", "speed"}
    assert template.template.count("$") == len(list(template.pattern.finditer(template.template)))


def test_speed_sentence_is_formatted_from_the_recorded_measurement(tmp_path):
    record = {"requests": 4096, "rate_rps": 6.0, "target_requests_per_wall_s": 5000,
              "hybrid": {"wall_s": 2.048, "requests_per_wall_s": 2000.0, "cpu_s": 1.024,
                         "requests_per_cpu_s": 4000.0, "kv_util": 0.95},
              "machine": {"cpus": 2, "processor": "x86_64", "python": "3.11.7", "load_1min": 1.5}}
    path = tmp_path / "simulator.json"
    path.write_text(json.dumps(record))
    text = batching.speed_sentence(path)
    assert "take 1.02 s of CPU time — 4,000 simulated requests per CPU second" in text
    assert "its wall time was 2.0 s (2,000 requests per wall second)" in text
    assert "load average of 1.5" in text and "95% mean KV use" in text


def test_missing_speed_record_says_which_benchmark_to_run(tmp_path):
    from predictor.errors import InputError

    with pytest.raises(InputError, match="python -m benchmarks.simulator"):
        batching.speed_sentence(tmp_path / "none.json")


@pytest.mark.slow
def test_simulator_doc_regenerates_byte_for_byte():
    from predictor import Predictor

    assert batching.render(Predictor.load()) == (DOCS / "simulator.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_data_doc_and_plot_regenerate_byte_for_byte(tmp_path):
    from inference_sim.cli import main

    code = main(["data", "summary", "--markdown", str(tmp_path / "data.md"), "--plot", str(tmp_path / "ratio.png"),
                 "--json"])
    assert code == 0
    assert (tmp_path / "data.md").read_bytes() == (DOCS / "data.md").read_bytes()
    _assert_same_picture(tmp_path / "ratio.png", DOCS / "ratio_vs_intensity.png")


@pytest.mark.slow
def test_accuracy_doc_and_plots_regenerate_byte_for_byte(tmp_path):
    from inference_sim.cli import main

    assert main(["report", "--out-dir", str(tmp_path), "--json"]) == 0
    assert (tmp_path / "accuracy.md").read_bytes() == (DOCS / "accuracy.md").read_bytes()
    for name in ("accuracy_cdf.png", "accuracy_scatter.png"):
        _assert_same_picture(tmp_path / name, DOCS / name)


def test_a_picture_may_differ_in_a_few_edge_pixels_only(tmp_path):
    import numpy as np
    from PIL import Image

    base = np.full((380, 2000, 3), 255, np.uint8)
    base[100:110, 200:1800] = (31, 119, 180)  # a curve
    shipped, drawn = tmp_path / "shipped.png", tmp_path / "drawn.png"
    Image.fromarray(base).save(shipped)
    shaded = base.copy()
    shaded[110, 300:314] = (250, 250, 250)  # an anti-aliased edge a shade off
    Image.fromarray(shaded).save(drawn)
    _assert_same_picture(drawn, shipped)
    moved = base.copy()
    moved[100:110, 200:1800], moved[120:130, 200:1800] = 255, (31, 119, 180)  # the curve moved
    Image.fromarray(moved).save(drawn)
    with pytest.raises(AssertionError, match="pixels differ"):
        _assert_same_picture(drawn, shipped)
