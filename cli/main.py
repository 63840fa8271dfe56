"""The `trm` command: a thin table of subcommands, each calling into puzzles/ or trmlm/."""

from __future__ import annotations

from typing import Optional

import typer

import trmlm
from trmlm.cli import puzzle_cmds
from trmlm.cli import lm_cmds
from trmlm.cli import bench_cmds
from trmlm.cli import export_cmds
from trmlm.cli import view_cmds

app = typer.Typer(
    name="trm",
    help="Tiny Recursive Models: puzzle benchmarks and a per-token recursive language model.",
    no_args_is_help=True,
    add_completion=True,  # trm --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    # Plain (click) help: typer's rich panels print `<bool>` beside on/off flags as if they took a
    # value (`--json true` then fails on the stray `true`); click prints a flag as a flag.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"trm (trmlm) {trmlm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")) -> None:
    """Tiny Recursive Models: puzzle benchmarks and a per-token recursive language model."""


puzzle_cmds.register(app)
lm_cmds.register(app)
bench_cmds.register(app)
export_cmds.register(app)
view_cmds.register(app)


def main() -> None:
    """The console script. A command-line usage mistake (unknown option, missing or extra
    argument, bad value) is one `error:` line naming it, exit code 2, like every other bad input."""
    import sys

    from typer.core import _click  # the click that typer parses with (typer >= 0.2x vendors one)

    exceptions = _click.exceptions
    try:
        code = app(standalone_mode=False)
    except exceptions.NoArgsIsHelpError as e:  # `trm` alone: the help, as before
        e.show()
        sys.exit(e.exit_code)
    except exceptions.UsageError as e:
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        print(f"error: {e.format_message().splitlines()[0]}{where}", file=sys.stderr)
        sys.exit(2)
    except exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, EOFError, typer.Abort):
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
