"""The ``nnrelax`` command line: inspect, tighten, refine, solve, sweep and verify ONNX ReLU
networks.

Every command reads an ONNX file (or a data file) and prints results on stdout; progress bars
and errors go to stderr.  Errors are one line without a traceback; the exit code is 0 on
success, 1 on a failure while running and 2 on a usage error.  No command overwrites its input,
and existing outputs are only replaced with ``--force``.  Each command lives in a module of its
own; they parse and print, and call the library for everything else.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

try:  # Ctrl-C while the libraries load (seconds on a busy machine): one line, exit 130
    import click

    from .. import __version__
    from .common import (
        USER_ERRORS,
        Interrupted,
        one_line,
        one_line_interrupts,
        parse_arch,
        parse_bounds_text,
        parse_number_list,
        was_interrupted,
    )
    from .inspect import inspect
    from .refine import refine
    from .solve import solve
    from .sweep import sweep
    from .tighten import tighten
    from .verify import verify
except (KeyboardInterrupt, ImportError) as exc:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, KeyboardInterrupt):
        cause = cause.__cause__ or cause.__context__  # an extension interrupted while loading
    if cause is None:
        raise
    sys.stderr.write("Interrupted while starting; nothing was written; run the command again.\n")
    sys.exit(130)

__all__ = ["main", "parse_arch", "parse_bounds_text", "parse_number_list"]


INTERRUPTED = "Interrupted; nothing was written; run the command again."
"""Ctrl-C outside the parts of a command that keep something (those say what they kept): the
commands write their outputs last, each atomically, so nothing was written."""


class NNRelaxGroup(click.Group):
    """A click group whose errors are one line on stderr, including the package's own errors."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        one_line_interrupts()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Interrupted as exc:
            click.echo(one_line(exc.format_message()), err=True)
            code = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except ImportError as exc:
            if not was_interrupted(exc):
                raise
            click.echo(INTERRUPTED, err=True)
            code = 130
        except USER_ERRORS as exc:
            click.echo(f"Error: {one_line(str(exc))}", err=True)
            code = 1
        except click.Abort as exc:
            interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
            click.echo(INTERRUPTED if interrupted else "Aborted.", err=True)
            code = 130 if interrupted else 1
        except KeyboardInterrupt:
            click.echo(INTERRUPTED, err=True)
            code = 130
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=NNRelaxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nnrelax")
def main() -> None:
    """Embed ReLU networks from ONNX in MILPs, tighten their bounds, and train them to be easy."""


for command in (inspect, tighten, refine, solve, sweep, verify):
    main.add_command(command)
