"""The ``inference-sim`` command line: a thin shell over the Python API.

Every command prints data as a rich table, or as JSON with ``--json``. Bad input exits with code 2
and a one-line ``error: …`` message on stderr; ``--debug`` (anywhere on the line) shows the full
traceback instead. Commands live in :mod:`inference_sim.commands`, one module per group.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from inference_sim import commands
from inference_sim.common import app

EXIT_BAD_INPUT = 2

for _module in pkgutil.iter_modules(commands.__path__):
    importlib.import_module(f"{commands.__name__}.{_module.name}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning bad input into one line on stderr and exit code 2."""
    from pydantic import ValidationError
    from typer.exceptions import Abort, Exit, TyperException

    from predictor.errors import InputError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="inference-sim", standalone_mode=False)
    except Exit as exc:
        return exc.exit_code
    except Abort:
        typer.echo("error: interrupted", err=True)
        return 130
    except TyperException as exc:  # usage errors: unknown option, missing or out-of-range value
        if debug:
            raise
        text = _one_line(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        if text:  # empty for "no arguments: show help", which click already printed
            typer.echo(f"error: {text}", err=True)
        return EXIT_BAD_INPUT
    except (InputError, ValidationError) as exc:
        if debug:
            raise
        message = exc if isinstance(exc, InputError) else exc.errors()[0].get("msg", exc)
        typer.echo(f"error: {_one_line(message)}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 — last resort: one line, traceback only with --debug
        if debug:
            raise
        typer.echo(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); rerun with --debug for details",
                   err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
