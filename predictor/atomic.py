"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A crash, a kill (even SIGKILL) or a full disk midway leaves the previous file untouched: the new
content goes to a hidden temporary file ``.<name>.<random>.tmp`` next to the target, is flushed to disk,
and only then renamed over the target (the rename is atomic on POSIX; the folder is fsynced after it so
the rename itself survives a power cut). On an exception the temporary file is removed; only a process
killed outright can leave one behind, and it never has the target's name. Temporary names carry the
writer's process id (``.<name>.<pid>.<random>.tmp``): the next write of the same target removes those whose
process is gone (:func:`remove_stale_temps`).

Files that only make sense together (an artifact's model, metadata and checksum) go through
:func:`atomic_write_many`: every new file is written and flushed first, then all are renamed into place;
if a rename fails, the ones already renamed are put back from hard-link backups, so an error at any point
leaves the previous set whole (a kill between the renames leaves a mix that checksums detect).

Every file the tool produces goes through :func:`atomic_write` or :func:`atomic_path`. Errors name the
destination: an OSError raised while writing carries the target path (so the CLI can print
``error: could not write '<path>': No space left on device``), and a target that is a folder, or whose
folder cannot be created, is an :class:`~predictor.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from predictor.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def temp_prefix(name: str) -> str:
    """Prefix of this process's temporary siblings of ``name``: ``.<name>.<pid>.``."""
    return f".{name}.{os.getpid()}."


def remove_stale_temps(folder: Path, name: str) -> list[Path]:
    """Remove temporary siblings ``.<name>.<pid>.*.tmp`` in ``folder`` whose process no longer runs.

    Returns the paths removed. Siblings of live processes (a concurrent run) are left alone; so are files
    that do not follow the pattern.
    """
    removed = []
    try:
        candidates = list(Path(folder).glob(f".{name}.*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        middle = path.name[len(name) + 2:-len(".tmp")]
        pid_text = middle.split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def _prepare_folder(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"output: {str(path)!r} is a directory, expected a file path")
    parent = path.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"output: cannot write {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
            break
    parent.mkdir(parents=True, exist_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk; best effort (not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The caller writes the whole file to the yielded path (e.g. ``df.to_parquet(tmp)``). On any
    exception the temporary file is removed and ``path`` is left as it was; an :class:`OSError`
    (full disk, I/O error) is re-raised naming ``path``.
    """
    path = Path(path)
    _prepare_folder(path)
    remove_stale_temps(path.parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as err:
        _reraise_naming(err, path)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
        except OSError as err:
            _reraise_naming(err, path)
        _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(OSError):
            if tmp_path.exists():
                tmp_path.unlink()


def _reraise_naming(err: OSError, path: Path):
    """Re-raise ``err`` naming the destination ``path`` instead of the temporary file (or nothing)."""
    name = str(err.filename) if err.filename is not None else ""
    if name and not Path(name).name.startswith(f".{path.name}.") and Path(name) != path:
        raise err  # about some other file: keep it as it is
    code = err.errno
    if code is None and "No space left" in str(err):  # e.g. pyarrow's IOError text without an errno
        import errno

        code = errno.ENOSPC
    raise OSError(code, err.strerror or " ".join(str(err).split()) or type(err).__name__, str(path)) from err


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_write_many(files: dict[str | Path, bytes | str], encoding: str = "utf-8") -> list[Path]:
    """Write several files as one unit, in the given order (see the module docstring); return their paths.

    All contents are written to temporary files and flushed before any target is touched, so a full disk
    leaves every previous file as it was. The renames follow in order; if one fails, the targets already
    replaced are restored from backups taken just before (hard links, or copies where links are not
    supported) and the error propagates.
    """
    items = [(Path(p), data.encode(encoding) if isinstance(data, str) else data) for p, data in files.items()]
    for path, _ in items:
        _prepare_folder(path)
    staged: list[tuple[Path, Path]] = []
    backups: dict[Path, Path] = {}
    done: list[Path] = []
    try:
        for path, payload in items:
            try:
                remove_stale_temps(path.parent, path.name)
                fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
                staged.append((path, Path(tmp)))
                with os.fdopen(fd, "wb") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o666 & ~_UMASK)
            except OSError as err:
                _reraise_naming(err, path)
        for path, _ in items:  # backups of what is about to be replaced (no data copied for hard links)
            if path.exists():
                backup = path.parent / f".{path.name}.{os.getpid()}.bak"
                with contextlib.suppress(FileNotFoundError):
                    backup.unlink()
                try:
                    os.link(path, backup)
                except OSError:
                    try:
                        shutil.copy2(path, backup)
                    except OSError as err:
                        _reraise_naming(err, path)
                backups[path] = backup
        try:
            for path, tmp in staged:
                os.replace(tmp, path)
                done.append(path)
        except OSError as err:
            for path in reversed(done):  # put the previous files back
                with contextlib.suppress(OSError):
                    if path in backups:
                        os.replace(backups.pop(path), path)
                    else:
                        path.unlink()
            _reraise_naming(err, staged[len(done)][0])
        for folder in {path.parent for path, _ in items}:
            _fsync_folder(folder)
    finally:
        for _, tmp in staged:
            with contextlib.suppress(OSError):
                if tmp.exists():
                    tmp.unlink()
        for backup in backups.values():
            with contextlib.suppress(OSError):
                backup.unlink()
    return [path for path, _ in items]


def save_figure(fig, path: str | Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay out a matplotlib figure (``tight_layout`` within ``rect``, figure fractions), write it atomically as
    PNG to ``path`` and close it; return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        fig.tight_layout(rect=rect)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
