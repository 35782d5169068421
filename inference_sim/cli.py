"""The ``inference-sim`` command line: a thin shell over the Python API.

Every command prints data as a rich table, or as JSON with ``--json``. Bad input exits with code 2
and a one-line ``error: …`` message on stderr; ``--debug`` (anywhere on the line) shows the full
traceback instead. Commands live in :mod:`inference_sim.commands`, one module per group.

Exit codes
----------
0
    success.
1
    the environment failed, not the input: a full disk, an I/O error, a read-only file system
    (``error: could not write '<path>': No space left on device``), or an internal error.
2
    bad input: an option, a file's content, or a path that cannot be used as given (missing, a
    directory where a file is expected, a file where a folder is expected, no permission).
130
    interrupted (Ctrl-C); commands that can keep partial results (``simulate``) write them first.
"""

from __future__ import annotations

import errno
import functools
import importlib
import pkgutil
import sys

EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 1
EXIT_INTERRUPTED = 130
# OSErrors about the path a user gave (bad input, exit 2); every other OSError is the environment's (exit 1).
_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
                errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTEMPTY}
# OSErrors that mean a write could not complete.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}


class _Interrupted(Exception):
    """Ctrl-C inside a command (Typer would otherwise turn it into a silent exit code 130)."""


def _guard(callback):
    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            raise _Interrupted from None

    guarded.__guarded__ = True
    return guarded


def _guard_commands(typer_app) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__guarded__", False):
            info.callback = _guard(info.callback)
    for group in typer_app.registered_groups:
        _guard_commands(group.typer_instance)


def _flags_without_type() -> None:
    """Help shows a boolean flag as ``--json``, not ``--json <bool>``.

    Typer's rich help prints every option's type, flags included (they take no value). Flags get no type
    column here; every other option keeps Typer's own rendering.
    """
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "__flags_hidden__", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.__flags_hidden__ = True
    TyperOption.display_type_rich = display_type_rich


@functools.lru_cache(maxsize=1)
def _app():
    """The Typer app with every command module registered (imported on first use, inside main's guard, so a
    Ctrl-C while the libraries load is still a one-line interruption)."""
    from inference_sim import commands
    from inference_sim.common import app

    for module in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{module.name}")
    _guard_commands(app)
    _flags_without_type()
    return app


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_validation_error(exc: BaseException) -> bool:
    """Whether ``exc`` is pydantic's ValidationError (checked without importing pydantic on the help path:
    if pydantic was never imported, no command can have raised one)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(exc, pydantic.ValidationError)


def _validation_message(exc) -> str:
    """``field: what is wrong (got value)`` from a pydantic ValidationError's first error."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or exc.title
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) or got is None else ""
    return f"{loc}: {first.get('msg', exc)}{shown}"


def os_error_message(exc: OSError) -> tuple[str, int]:
    """One-line message and exit code for a file-system error (see the module docstring)."""
    reason = exc.strerror or _one_line(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " " + " → ".join(repr(p) for p in paths) if paths else ""
    if exc.errno in _WRITE_ERRNOS:
        return f"could not write{where}: {reason}", EXIT_ENVIRONMENT
    if exc.errno in _PATH_ERRNOS or isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError |
                                               FileExistsError | PermissionError):
        return f"cannot use path{where}: {reason}", EXIT_BAD_INPUT
    return f"file system error{where}: {reason}", EXIT_ENVIRONMENT


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one ``warning: …`` line on stderr (no file name, no source line)."""
    print(f"warning: {_one_line(message)}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning bad input into one line on stderr and exit code 2."""
    import warnings

    shown = warnings.showwarning
    warnings.showwarning = _warning_line
    try:
        return _main(argv)
    finally:
        warnings.showwarning = shown


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        import typer
        from typer.exceptions import Abort, Exit, TyperException

        from predictor.errors import InputError

        app = _app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        # Without standalone mode click returns (not raises) the code of a command's ``typer.Exit(code)``.
        result = app(args=args, prog_name="inference-sim", standalone_mode=False)
    except Exit as exc:
        return exc.exit_code
    except (Abort, _Interrupted):
        typer.echo("error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except TyperException as exc:  # usage errors: unknown option, missing or out-of-range value
        if debug:
            raise
        text = _one_line(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        if text:  # empty for "no arguments: show help", which click already printed
            typer.echo(f"error: {text}", err=True)
        return EXIT_BAD_INPUT
    except InputError as exc:
        if debug:
            raise
        typer.echo(f"error: {_one_line(exc)}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `inference-sim … --json | head`: the reader left; nothing to report
        import os

        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 — keeps the interpreter's final flush quiet
        return EXIT_ENVIRONMENT
    except OSError as exc:
        if debug:
            raise
        message, code = os_error_message(exc)
        typer.echo(f"error: {_one_line(message)}", err=True)
        return code
    except MemoryError:
        if debug:
            raise
        typer.echo("error: out of memory; try a smaller input (fewer requests, shorter lengths, a smaller batch)",
                   err=True)
        return EXIT_ENVIRONMENT
    except Exception as exc:  # noqa: BLE001 — last resort: one line, traceback only with --debug
        if debug:
            raise
        if _is_validation_error(exc):
            typer.echo(f"error: {_one_line(_validation_message(exc))}", err=True)
            return EXIT_BAD_INPUT
        typer.echo(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); rerun with --debug for details",
                   err=True)
        return EXIT_ENVIRONMENT
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
