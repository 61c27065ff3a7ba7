"""The `safeset` command: a thin layer over the library, a module per command group (`banks`,
`audit`: scan and decide, `tools`: hash, report, bench, demo), each registering on `cli`.

Each command parses its options, calls one library function, and prints. Errors are mapped to exit
codes in one place (`_Group.invoke`): 2 usage, 3 bad input (the message names the file and line or
row), 1 internal error.
"""

from __future__ import annotations

import errno
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from .. import BankStore, __version__
from ..errors import SafesetError
from ..redact import redact

# no emoji codes: a bank named `v` would print `match:v:pdq` as a victory hand
_out = Console(soft_wrap=True, emoji=False)
_err = Console(stderr=True, soft_wrap=True, emoji=False)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SafesetError as exc:
            _err.print(f"[red]error:[/] {escape(str(exc))}")
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _err.print("[yellow]interrupted:[/] shards that finished are done; a rerun resumes from them")
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                where = f": {redact(str(exc.filename))}" if exc.filename else ""
                _err.print(
                    f"[red]error:[/] cannot write{escape(where)} ({exc.strerror}). Shards that finished are done: "
                    "free space and run the same command again to resume."
                )
            else:  # a bug: its traceback, with any URI's credentials masked
                _err.print(escape(redact(traceback.format_exc())), highlight=False)
                _err.print("[red]internal error[/] (a bug in safeset: please report it with the above)")
            ctx.exit(1)


def _store(ctx: click.Context) -> BankStore:
    return BankStore(ctx.obj["home"])


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SAFESET_HOME",
    default=None,
    help="Bank store directory [env SAFESET_HOME; default ~/.local/share/safeset].",
)
@click.version_option(__version__, prog_name="safeset")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """Find and remove known illegal and unwanted images from image-text datasets, without anyone
    viewing them, and write a cleaned release with an audit report."""
    ctx.obj = {"home": home}


# the command groups register themselves on `cli`
from . import audit, banks, serve, tools  # noqa: E402, F401


def main() -> None:
    from ..engines.base import arrow_without_pandas

    arrow_without_pandas()
    cli(prog_name="safeset")
