"""The `trm` command: a thin table of subcommands, each calling into puzzles/ or trmlm/."""

from __future__ import annotations

import typer

from trmlm.cli import puzzle_cmds
from trmlm.cli import lm_cmds
from trmlm.cli import bench_cmds
from trmlm.cli import export_cmds
from trmlm.cli import view_cmds

app = typer.Typer(
    name="trm",
    help="Tiny Recursive Models: puzzle benchmarks and a per-token recursive language model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

puzzle_cmds.register(app)
lm_cmds.register(app)
bench_cmds.register(app)
export_cmds.register(app)
view_cmds.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
