"""Output folders that never lose a user's files: stage in a hidden sibling, publish when complete.

A command that writes several files into a folder (``simulate --out``, ``sweep --out``) writes them first
into a fresh hidden sibling ``.<name>.<pid>.<random>.tmp`` next to the folder. Only when the run is complete
are they moved into the folder, one atomic rename each; a run cut short (Ctrl-C, SIGTERM) publishes into
``<folder>/partial/`` instead, so a complete earlier result in the folder stays as it was.

Whose files are they? Each published folder holds a manifest, ``.inference-sim-outputs.json``, with the name,
size and modification time of every file the tool wrote there. A later run may replace those files while
they are unchanged; any other file with a name the run needs (a user's own ``results.csv``, or one of ours
edited since) is replaced only with ``force`` — without it the run stops before it starts, with a one-line
:class:`~predictor.errors.InputError`.

Temporary siblings carry the writer's process id; a process killed outright (SIGKILL, power cut) leaves one
behind, and the next writer of the same folder removes those whose process is gone
(:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from predictor.atomic import atomic_write, remove_stale_temps, temp_prefix
from predictor.errors import InputError

MANIFEST = ".inference-sim-outputs.json"
PARTIAL = "partial"


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_manifest(folder: Path) -> dict[str, list[int]]:
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = raw.get("files", {}) if isinstance(raw, dict) else {}
        return {str(k): list(v) for k, v in files.items() if isinstance(v, list)}
    except (OSError, ValueError, AttributeError):
        return {}


def foreign_files(folder: Path, names) -> list[Path]:
    """Files among ``folder/<name>`` that exist and are not unchanged outputs of an earlier run."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    ours = _read_manifest(folder)
    out = []
    for name in names:
        path = folder / name
        if not path.exists() and not path.is_symlink():
            continue
        try:
            mine = path.is_file() and not path.is_symlink() and ours.get(name) == _stat_key(path)
        except OSError:
            mine = False
        if not mine:
            out.append(path)
    return out


class OutputFolder:
    """Stage a command's output files, then publish them into ``path`` (complete) or ``path/partial``.

    Parameters
    ----------
    path : Path
        The user's output folder (created when needed).
    names : iterable of str
        File names the command may write (checked against the user's files before the run).
    force : bool
        Replace files the tool did not write (the user's own) with the same names.
    option : str
        The option named in error messages (``--out``).

    Examples
    --------
    >>> folder = OutputFolder(Path("out"), ["summary.json"])  # doctest: +SKIP
    >>> folder.check()                                          # before the long computation
    >>> with folder as staging:                                 # write files into ``staging``
    ...     (staging / "summary.json").write_text("{}")
    ...     folder.publish(partial=False)
    """

    def __init__(self, path: str | Path, names, *, force: bool = False, option: str = "--out"):
        self.path = Path(path)
        self.names = list(names)
        self.force = force
        self.option = option
        self.staging: Path | None = None

    def check(self, partial: bool = False) -> None:
        """Raise :class:`InputError` if the folder cannot take the outputs (a file, or foreign files)."""
        target = self.path / PARTIAL if partial else self.path
        for p in (self.path, target):
            if p.exists() and not p.is_dir():
                raise InputError(f"{self.option}: {str(p)!r} is a file, expected a folder")
        for ancestor in self.path.parents:
            if ancestor.exists():
                if not ancestor.is_dir():
                    raise InputError(f"{self.option}: cannot create {str(self.path)!r}: {str(ancestor)!r} is a file")
                break
        if self.force:
            return
        foreign = foreign_files(target, self.names)
        if foreign:
            raise InputError(f"{self.option}: {str(foreign[0])!r} exists and was not written by this tool (or was "
                             f"changed since); pass --force to replace it, or choose another folder")

    def __enter__(self) -> Path:
        self.check()
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(parent, self.path.name)
        self.staging = Path(tempfile.mkdtemp(prefix=temp_prefix(self.path.name), suffix=".tmp", dir=parent))
        return self.staging

    def __exit__(self, *exc) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def publish(self, partial: bool = False) -> Path:
        """Move the staged files into the folder (``partial``: into ``folder/partial``); return that folder.

        Files of an earlier run that this run did not produce (and that are unchanged) are removed so the
        folder holds one run's outputs.
        """
        assert self.staging is not None, "publish() inside the with block"
        target = self.path / PARTIAL if partial else self.path
        self.check(partial)
        target.mkdir(parents=True, exist_ok=True)
        previous = _read_manifest(target)
        produced = sorted(p.name for p in self.staging.iterdir() if p.is_file() and not p.name.endswith(".tmp"))
        manifest = {}
        for name in produced:
            os.replace(self.staging / name, target / name)
            manifest[name] = _stat_key(target / name)
        for name, key in previous.items():
            stale = target / name
            if name not in manifest and name != MANIFEST:
                with contextlib.suppress(OSError):
                    if stale.is_file() and _stat_key(stale) == key:
                        stale.unlink()
        atomic_write(target / MANIFEST, json.dumps({"files": manifest}, indent=1) + "\n")
        return target
