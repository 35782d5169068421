"""HF ``config.json`` files of the models in aiconfigurator's serving runs, shipped so that runs resolve without
``../shared``.

``inference-sim data build`` copies every config of ``aiconfigurator/model_configs/`` that the model builders
can parse (:func:`predictor.models.parse_hf_config`) into ``data/aiconfigurator/model_configs.json.gz``: one
JSON object, ``{"<org>--<name>": config}`` (the source file names without ``_config.json``), the configs
unchanged, gzip-compressed (written deterministically: the same sources give the same bytes).
:func:`shipped_config` reads one back; :func:`scheduler.serving_rows.resolve_model` looks there after the
catalogue.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

from features.canonical import DATA_DIR
from predictor.atomic import atomic_write

SHIPPED_CONFIGS = DATA_DIR / "aiconfigurator" / "model_configs.json.gz"
SUFFIX = "_config.json"


def build_model_configs(source: str | Path, out: str | Path = SHIPPED_CONFIGS) -> int:
    """Collect the parseable configs of folder ``source`` into ``out``; return how many were kept."""
    from predictor.errors import InputError
    from predictor.models import parse_hf_config

    kept = {}
    for path in sorted(Path(source).glob(f"*{SUFFIX}")):
        if path.name.endswith("_hf_quant" + SUFFIX):
            continue  # quantisation side files, not model configs
        config = json.loads(path.read_text(encoding="utf-8"))
        try:
            parse_hf_config(config, name=path.name, source=str(path))
        except InputError:
            continue  # an architecture the builders do not know yet
        kept[path.name.removesuffix(SUFFIX)] = config
    text = json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()
    atomic_write(out, gzip.compress(text, compresslevel=9, mtime=0))
    return len(kept)


@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
    if not SHIPPED_CONFIGS.exists():
        return {}
    return json.loads(gzip.decompress(SHIPPED_CONFIGS.read_bytes()))


def shipped_config(stem: str) -> dict | None:
    """The shipped config of ``<org>--<name>`` (None when not shipped)."""
    return _shipped().get(stem)


def shipped_stems() -> list[str]:
    """Every ``<org>--<name>`` shipped, sorted."""
    return sorted(_shipped())
