"""Reading user YAML files safely: size-limited, UTF-8, plain data only, no duplicate keys.

``yaml.safe_load`` already refuses Python object tags; on top of it this loader rejects a mapping that
repeats a key (PyYAML keeps the last one silently, so a typo'd override would go unnoticed) and files
over :data:`MAX_YAML_BYTES`. Every problem is a one-line :class:`~predictor.errors.InputError` naming the
option or field the file came from.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from predictor.errors import InputError

try:  # PyYAML's C parser (libyaml), when the wheel has it; the same safe constructor either way
    from yaml import CSafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as CSafeLoader

MAX_YAML_BYTES = 10 * 2**20


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let SafeLoader report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(field: str, path: Path, err: yaml.YAMLError) -> InputError:
    mark = getattr(err, "problem_mark", None)
    line = f" (line {mark.line + 1})" if mark is not None else ""
    problem = getattr(err, "problem", None) or ""
    detail = f": {problem}" if problem.startswith("duplicate key") else ""
    return InputError(f"{field}: {str(path)!r} is not valid YAML{line}{detail}")


def load_yaml_text(text: str, field: str, path: Path | str = "<text>"):
    """Parse YAML text with the safe, duplicate-refusing loader."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise _yaml_error(field, Path(path), err) from None
    except RecursionError:
        raise InputError(f"{field}: {str(path)!r} nests too deeply to be a spec file") from None


def load_yaml_file(path: str | Path, field: str, what: str = "a YAML file"):
    """Read and parse a user's YAML file; ``field`` names the option or spec key in messages."""
    from predictor.validate import check_regular_file

    path = check_regular_file(path, field, what)  # exists, not a folder, FIFO or device (those block)
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise InputError(f"{field}: {str(path)!r} is {size / 2**20:.0f} MiB, over the {MAX_YAML_BYTES // 2**20} MiB "
                         f"limit for {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{field}: {str(path)!r} is not UTF-8 text") from None
    if "\x00" in text:
        raise InputError(f"{field}: {str(path)!r} is binary (holds NUL bytes), expected {what}")
    return load_yaml_text(text, field, path)


def load_shipped(text: str):
    """Parse a shipped catalogue file (trusted text): ``yaml.safe_load``'s result, with PyYAML's C parser
    (``CSafeLoader``, several times faster) where libyaml is available."""
    return yaml.load(text, Loader=CSafeLoader)
