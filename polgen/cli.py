"""The ``polgen`` command line.

Built-in subcommands: ``demo`` (synthetic data for every method, run end to end), ``sql`` (the
named DuckDB queries of :mod:`polgen.sql`), ``version`` (also ``polgen --version``).  Method
subcommands are discovered from :data:`METHOD_CLIS` (``polgen.gsem.cli``, ``polgen.lfmm.cli``,
``polgen.stlr.cli``, ``polgen.plot.cli``, ``polgen.warmup``, ``polgen.export``): each may define
``add_parser(subparsers)`` registering its subcommand with ``set_defaults(func=...)``; ``func(args)``
returns an exit code (or None for 0).

One option vocabulary: ``-v`` / ``-q`` are accepted at every level (added to every parser after
the method CLIs registered theirs); the helpers :func:`add_out`, :func:`add_overwrite`,
:func:`add_resume`, :func:`add_executor`, :func:`add_progress` and :func:`examples` give every
subcommand the same ``--out`` / ``--overwrite`` / ``--resume`` / ``--executor`` /
``--progress/--no-progress`` and a runnable-examples epilog; :class:`HelpFormatter` shows each
option's default.  A run with ``--out`` appends its command, parameters, log and timings to
``<out>.log`` (:class:`RunLog`); off a terminal, progress lines go to stderr as the run goes.

Errors polgen raises on purpose (:class:`~polgen.errors.PolgenError`), and the filesystem refusing
a path the user gave (an ``OSError`` naming a file), print one line on stderr and exit with code 2
(``-v`` shows the traceback too); a bug elsewhere keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from polgen.errors import InputError, OutputExistsError, PolgenError

if TYPE_CHECKING:  # polars is imported where a command needs it (fast --help / version)
    import polars as pl

log = logging.getLogger("polgen")

METHOD_CLIS = (
    "polgen.gsem.cli",
    "polgen.lfmm.cli",
    "polgen.stlr.cli",
    "polgen.plot.cli",
    "polgen.warmup",
    "polgen.export",
)
BUILTINS = ("demo", "sql", "version")
EXIT_POLGEN_ERROR = 2


# -- argument types (method CLIs use them too) ---------------------------------------------------
def _number(kind, ok, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
nonneg_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
fraction_float = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
positive_int = _number(int, lambda v: v > 0, "a positive integer")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")


# -- output helpers -----------------------------------------------------------------------------
def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    # a pipe or file gets a wide table rather than one squeezed into 80 columns
    return Console(file=stream, soft_wrap=False, width=None if tty else 200)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)


def print_frame(df, title: str | None = None, max_rows: int = 20) -> None:
    """Print a Polars DataFrame (or anything convertible) as a rich table on stdout."""
    import polars as pl
    from rich.table import Table

    if not isinstance(df, pl.DataFrame):
        df = pl.DataFrame(df)
    shown = df.head(max_rows) if max_rows >= 0 else df
    caption = f"{df.height} rows" + (f", first {shown.height} shown" if shown.height < df.height else "")
    table = Table(title=title, caption=caption)
    for name, dtype in df.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in shown.iter_rows():
        table.add_row(*(_fmt(v) for v in row))
    _console().print(table)


def _print_summary(summary: Any) -> None:
    import polars as pl

    if summary is None:
        return
    if isinstance(summary, pl.LazyFrame):
        summary = summary.collect()
    if isinstance(summary, pl.DataFrame):
        print_frame(summary, title="polgen demo", max_rows=-1)
        return
    for attr in ("summary", "table"):
        inner = getattr(summary, attr, None)
        if isinstance(inner, (pl.DataFrame, pl.LazyFrame)):
            _print_summary(inner)
            return
    if isinstance(summary, dict):
        print_frame(
            pl.DataFrame({"item": [str(k) for k in summary], "value": [_fmt(v) for v in summary.values()]}),
            title="polgen demo",
        )
        return
    if isinstance(summary, list) and summary and all(isinstance(r, dict) for r in summary):
        print_frame(pl.DataFrame(summary, strict=False), title="polgen demo", max_rows=-1)
        return
    _console().print(summary)


# -- demo ---------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from polgen.demo import run_demo

    summary = run_demo(out=args.out, small=args.small, progress=args.progress, seed=args.seed)
    _print_summary(summary)
    bad = summary.filter(summary["status"] != "ok")
    if bad.height:
        steps = ", ".join(f"{m}/{s} ({st})" for m, s, st in bad.select("method", "step", "status").iter_rows())
        print(f"polgen demo: {bad.height} step(s) did not complete: {steps}", file=sys.stderr)
        return 1
    return 0


# -- sql ----------------------------------------------------------------------------------------
def _parse_sql_params(query, pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--param takes key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip()
        p = query.params.get(key)
        if p is None:
            raise InputError(
                f"query {query.name!r} has no parameter {key!r}; its parameters: {', '.join(query.params)}"
            )
        if p.kind == "relations":
            items = [v for v in value.split(",") if v]
            params.setdefault(key, []).extend(items)
        elif key in params:
            raise InputError(f"--param {key} given twice")
        else:
            params[key] = value  # polgen.sql converts text to the declared kind
    return params


def _list_queries() -> None:
    import polars as pl

    from polgen import sql

    rows = []
    for name in sql.list_queries():
        q = sql.get_query(name)
        params = ", ".join(
            f"{p.name}:{p.kind}" + ("" if p.required else f"={_fmt(p.default)}") for p in q.params.values()
        )
        first = q.description.split(". ")[0].rstrip(".") + "."
        rows.append({"query": name, "parameters": params, "description": first})
    print_frame(
        pl.DataFrame(rows, schema=["query", "parameters", "description"]), title="polgen sql queries", max_rows=-1
    )


def _describe(query) -> None:
    import polars as pl

    con = _console()
    con.print(f"[bold]{query.name}[/bold]: {query.description}", highlight=False)
    if query.output:
        con.print(f"[bold]output[/bold]: {query.output}", highlight=False)
    print_frame(
        pl.DataFrame(
            {
                "parameter": [p.name for p in query.params.values()],
                "kind": [p.kind for p in query.params.values()],
                "default": ["(required)" if p.required else _fmt(p.default) for p in query.params.values()],
                "description": [p.description for p in query.params.values()],
            }
        ),
        max_rows=-1,
    )


def cmd_sql(args: argparse.Namespace) -> int:
    from polgen import sql

    if args.list or not args.name:
        _list_queries()
        return 0
    query = sql.get_query(args.name)
    if args.describe:
        _describe(query)
        return 0
    params = _parse_sql_params(query, args.param or [])
    if args.out:
        import polars as pl

        # with out= sql.run writes the file and returns a LazyFrame over it
        lf = cast("pl.LazyFrame", sql.run(args.name, params=params, out=args.out, overwrite=args.overwrite))
        n = lf.select(pl.len()).collect().item()
        print(f"wrote {n} rows to {args.out}")
        return 0
    df = cast("pl.DataFrame", sql.run(args.name, params=params))  # without out=: the result in memory
    if args.csv:
        sys.stdout.write(df.write_csv())
    else:
        print_frame(df, title=args.name, max_rows=args.show)
    return 0


# -- version ------------------------------------------------------------------------------------
def cmd_version(args: argparse.Namespace) -> int:
    import polgen

    print(f"polgen {polgen.__version__}")
    if args.all:
        from importlib import metadata

        for dist in (
            "polars",
            "pyarrow",
            "numpy",
            "scipy",
            "numba",
            "duckdb",
            "bed-reader",
            "anndata",
            "rich",
            "dask",
            "distributed",
        ):
            try:
                print(f"  {dist} {metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                print(f"  {dist} (not installed)")
    return 0


# -- shared option vocabulary (method CLIs use these too) ----------------------------------------
class HelpFormatter(argparse.HelpFormatter):
    """polgen's help layout: every option shows its default, examples keep their line breaks.

    ``(default: X)`` is appended to an option's help unless the help already says what the default
    is or the default is ``None`` / ``False`` (a flag, or "not given"); a description or epilog with
    line breaks is printed as written (examples), a one-paragraph one is wrapped.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._CountAction)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text.strip("\n"):
            return "".join(indent + line for line in text.strip("\n").splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def examples(*lines: str) -> str:
    """An ``--help`` epilog: runnable examples (after ``polgen demo --small``, which makes the files)."""
    return "examples (polgen-demo/ is made by `polgen demo --small`):\n" + "\n".join(f"  {ln}" for ln in lines)


def add_out(p: argparse.ArgumentParser, what: str, *, required: bool = True, short: bool = False) -> None:
    """``--out``: where the command writes (``what`` says a file of which format or a run folder)."""
    flags = ("--out", "-o") if short else ("--out",)
    p.add_argument(*flags, required=required, metavar="PATH", help=what)


def add_overwrite(p: argparse.ArgumentParser | Any) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds (else refuse)")


def add_resume(p: argparse.ArgumentParser | Any) -> None:
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out (finished parts are verified and kept)",
    )


def add_executor(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        default=None,
        metavar="WHERE",
        help="where batches run: in this process (default), 'threads', 'processes', 'dask' "
        "(DASK_SCHEDULER_ADDRESS) or a scheduler address tcp://host:8786",
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars; default: a bar on a terminal, periodic progress lines (rate, ETA) in a log",
    )


def _add_verbosity(p: argparse.ArgumentParser, depth: int) -> None:
    """``-v`` / ``-q`` on one (sub)parser; a per-depth dest so that counts given at several levels add up."""
    default: Any = 0 if depth == 0 else argparse.SUPPRESS
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        dest=f"verbose_{depth}",
        help="log progress (-v) or debug details (-vv) on stderr; with an error, its traceback",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=default,
        dest=f"quiet_{depth}",
        help="only errors on stderr (and no progress unless --progress)",
    )


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out: list[argparse.ArgumentParser] = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for sp in action.choices.values():  # aliases map to the same parser
                if id(sp) not in seen:
                    seen.add(id(sp))
                    out.append(sp)
    return out


def walk_parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, int]]:
    """Every parser below (and including) ``parser`` with its depth."""
    stack = [(parser, 0)]
    while stack:
        p, depth = stack.pop()
        yield p, depth
        stack.extend((sp, depth + 1) for sp in reversed(_subparsers(p)))


def _apply_conventions(parser: argparse.ArgumentParser) -> None:
    """The vocabulary every subcommand shares, whoever built its parser: ``-v``/``-q`` accepted at
    every level (``polgen gsem munge ... -v`` as well as ``polgen -v gsem munge ...``) and the help
    layout that shows defaults."""
    for p, depth in walk_parsers(parser):
        p.formatter_class = HelpFormatter
        if "-v" not in p._option_string_actions and "-q" not in p._option_string_actions:
            _add_verbosity(p, depth)


def _verbosity(args: argparse.Namespace) -> int:
    ns = vars(args)
    up = sum(v for k, v in ns.items() if k.startswith("verbose_") and isinstance(v, int))
    down = sum(v for k, v in ns.items() if k.startswith("quiet_") and isinstance(v, int))
    return up - down


# -- parser -------------------------------------------------------------------------------------
def _add_method_parsers(subparsers) -> list[str]:
    """Mount the method subcommands that exist; a broken one is reported, not fatal."""
    import importlib

    mounted = []
    for modname in METHOD_CLIS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name in (modname, modname.rsplit(".", 1)[0]):
                continue
            log.warning("cannot load the %s subcommand: %s", modname, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - one broken method must not break the others
            log.warning("cannot load the %s subcommand: %s: %s", modname, type(exc).__name__, exc)
            continue
        add = getattr(mod, "add_parser", None)
        if not callable(add):
            continue
        try:
            add(subparsers)
            mounted.append(modname)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot mount the %s subcommand: %s: %s", modname, type(exc).__name__, exc)
    return mounted


def build_parser(methods: bool = True) -> argparse.ArgumentParser:
    import polgen

    parser = argparse.ArgumentParser(
        prog="polgen",
        description="Genomic SEM, out-of-core LFMM2 and SpaceTravLR on Polars/Arrow, from the shell.",
        epilog=examples(
            "polgen demo --small --out polgen-demo",
            "polgen gsem munge --help",
            "polgen sql --list",
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"polgen {polgen.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="make synthetic data for every method and run them",
        description="Generate deterministic synthetic inputs for Genomic SEM, LFMM2 and "
        "SpaceTravLR, run each method end to end and print a summary.",
        epilog=examples("polgen demo --small --out polgen-demo", "polgen demo --out polgen-demo --overwrite"),
    )
    add_out(d, "output directory (inputs and results of every method)", required=False)
    d.set_defaults(out="polgen-demo")
    d.add_argument("--small", action="store_true", help="a smaller, faster demo")
    d.add_argument("--seed", type=int, default=None, help="random seed (default: the demo's own fixed seeds)")
    add_progress(d)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "sql",
        help="run a named DuckDB query over results",
        description="Run one of the named queries in sql/ over parquet files, globs or "
        "polgen output directories. Without NAME, list the queries.",
        epilog=examples(
            "polgen sql --list",
            "polgen sql top_hits --describe",
            "polgen sql top_hits -p source=polgen-demo/lfmm/results/associations -p p_max=1e-3",
            "polgen sql top_hits -p source=polgen-demo/lfmm/results/associations --out hits.tsv",
            "polgen sql per_chrom_summary -p source=polgen-demo/lfmm/results/associations --csv",
        ),
    )
    s.add_argument("name", nargs="?", help="query name (see --list)")
    s.add_argument(
        "--param",
        "-p",
        action="append",
        metavar="KEY=VALUE",
        help="a query parameter; repeat it; a 'relations' parameter takes a comma-separated list (or the key repeated)",
    )
    add_out(
        s,
        "write the result to this file instead of printing it; the format follows the extension: "
        ".parquet, .tsv, .csv, .tsv.gz, .csv.gz",
        required=False,
    )
    add_overwrite(s)
    s.add_argument("--show", type=int, default=20, help="rows to print (-1 for all)")
    s.add_argument("--csv", action="store_true", help="print the whole result as CSV")
    s.add_argument("--list", action="store_true", help="list the queries and their parameters")
    s.add_argument("--describe", action="store_true", help="describe query NAME and its parameters")
    s.set_defaults(func=cmd_sql)

    v = sub.add_parser(
        "version",
        help="print the version",
        description="Print polgen's version (same as polgen --version); --all adds the main dependencies'.",
        epilog=examples("polgen version --all"),
    )
    v.add_argument("--all", action="store_true", help="also the versions of the main dependencies")
    v.set_defaults(func=cmd_version)

    if methods:
        _add_method_parsers(sub)
    _apply_conventions(parser)
    return parser


def _wants_methods(argv: Sequence[str]) -> bool:
    """Method CLIs (and their imports) are loaded unless the command is a built-in one."""
    for tok in argv:
        if tok.startswith("-"):
            continue
        return tok not in BUILTINS
    return True


def _level(verbosity: int) -> int:
    if verbosity < 0:
        return logging.ERROR
    return logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG


PROGRESS_LOGGER = "polgen.progress"  # = polgen.engine.progress.PROGRESS_LOGGER (not imported: fast --help)


def _stderr_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _ConsoleFilter(logging.Filter):
    """stderr shows records at the verbosity's level, and progress lines whenever stderr is not a
    terminal (a terminal has the bar instead); progress is only emitted when it is on at all."""

    def __init__(self, level: int, tty: bool) -> None:
        super().__init__()
        self.level = level
        self.tty = tty

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PROGRESS_LOGGER:
            return not self.tty
        return record.levelno >= self.level


def _setup_logging(verbosity: int) -> logging.Handler:
    tty = _stderr_tty()
    handler: logging.Handler
    if tty:  # share the progress bars' console: log lines go above a live bar
        from rich.logging import RichHandler

        from polgen.engine.progress import stderr_console

        handler = RichHandler(console=stderr_console(), show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ConsoleFilter(_level(verbosity), tty))
    logger = logging.getLogger("polgen")
    logger.addHandler(handler)
    logger.setLevel(_level(verbosity))
    # the CLI owns the console: a library that configures the root logger behind our back
    # (bed_reader.to_bed calls logging.info, which runs basicConfig) must not print our records twice
    logger.propagate = False
    return handler


def _set_console_level(handler: logging.Handler, level: int) -> None:
    for f in handler.filters:
        if isinstance(f, _ConsoleFilter):
            f.level = level


_INTERNAL_COLUMN = re.compile(r"'__row', |, '__row'(?=\])|\['__row'\]")


def user_message(exc: BaseException) -> str:
    """The one-line message shown for a typed error: a reader's internal row-number column
    (``__row``) is not one of the file's columns, so column lists in messages leave it out."""
    return _INTERNAL_COLUMN.sub(lambda m: "[]" if m.group(0).startswith("[") else "", str(exc))


# -- the run log beside --out ---------------------------------------------------------------------
def run_log_path(out: Any) -> Path | None:
    """``<out>.log`` beside ``--out`` (``gwas/`` -> ``gwas.log``, ``hits.tsv`` -> ``hits.tsv.log``), as
    plink2 and ldsc write ``<out>.log``; None without an --out or when its directory does not exist."""
    if out is None or str(out) == "":
        return None
    p = Path(str(out))
    if p.name in ("", ".", ".."):
        return None
    log_path = p.with_name(p.name + ".log")
    return log_path if log_path.parent.is_dir() else None


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_param_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


class RunLog:
    """Appends one run to ``<out>.log``: command line, parameters, the log records (INFO and up, with
    the progress lines) and the timings.  Every run of the same ``--out`` appends (a resumed run
    follows the interrupted one)."""

    FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

    def __init__(self, path: Path, argv: Sequence[str], args: argparse.Namespace, verbosity: int) -> None:
        import datetime
        import platform
        import shlex
        import time

        import polgen

        self.path = path
        self._size_before = path.stat().st_size if path.exists() else None
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {
            k: v
            for k, v in sorted(vars(args).items())
            if k != "func" and not k.startswith(("verbose_", "quiet_")) and not callable(v)
        }
        head = [
            f"# polgen {polgen.__version__} run started {now}",
            f"command: {shlex.join(['polgen', *argv])}",
            f"cwd: {os.getcwd()}",
            f"host: {platform.node()} pid {os.getpid()} python {platform.python_version()} on {platform.system()}",
            "parameters:",
            *(f"  {k} = {_param_value(v)}" for k, v in params.items()),
        ]
        self._file.write("\n".join(head) + "\n")
        self._file.flush()
        self.records = 0
        self.handler = logging.StreamHandler(self._file)
        self.handler.addFilter(self._count)
        self.handler.setFormatter(logging.Formatter(self.FORMAT, "%Y-%m-%d %H:%M:%S"))
        self.handler.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
        logging.getLogger("polgen").addHandler(self.handler)

    def _count(self, record: logging.LogRecord) -> bool:
        self.records += 1
        return True

    def close(self, code: int, error: str | None = None, *, discard: bool = False) -> None:
        """Write the timings and close; ``discard``: the run was refused before it started, so it
        leaves nothing beside its output either - the entry is removed."""
        import time

        logging.getLogger("polgen").removeHandler(self.handler)
        if discard:
            self._file.close()
            if self._size_before is None:
                self.path.unlink(missing_ok=True)
            else:
                os.truncate(self.path, self._size_before)
            return
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        lines = []
        if error:
            lines.append(f"error: {error}")
        peak = ""
        try:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            peak = f", peak RSS {kb / 1024:.0f} MB"
        except (ImportError, OSError):  # pragma: no cover - not on Windows
            pass
        lines.append(f"finished: exit code {code} after {wall:.1f}s wall, {cpu:.1f}s CPU{peak}")
        self._file.write("\n".join(lines) + "\n\n")
        self._file.close()


#: commands whose --out is a picture or a page, not a computed result: no run log beside it
NO_RUN_LOG = ("plot", "report")


def _open_run_log(args: argparse.Namespace, argv: Sequence[str], verbosity: int) -> RunLog | None:
    if getattr(args, "command", None) in NO_RUN_LOG:
        return None
    path = run_log_path(getattr(args, "out", None))
    if path is None:
        return None
    try:
        return RunLog(path, argv, args, verbosity)
    except OSError as exc:
        log.warning("cannot write the run log %s: %s", path, exc.strerror or exc)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polgen`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = 0
    for a in argv:
        if a in ("--verbose", "--quiet"):
            pre += 1 if a == "--verbose" else -1
        elif len(a) > 1 and a[0] == "-" and a[1] != "-" and set(a[1:]) <= {"v", "q"}:
            pre += a.count("v") - a.count("q")
    handler = _setup_logging(pre)  # warnings while mounting method CLIs are shown too
    progress_logger = logging.getLogger(PROGRESS_LOGGER)
    progress_logger.setLevel(logging.INFO)  # progress lines pass whatever the verbosity (when progress is on)
    runlog: RunLog | None = None
    code = EXIT_POLGEN_ERROR
    error: str | None = None
    refused = False  # by its output (exists, locked): the run log entry is dropped again
    try:
        parser = build_parser(methods=_wants_methods(argv))
        args = parser.parse_args(argv)
        verbosity = _verbosity(args)
        args.verbose = verbosity
        if verbosity < 0 and getattr(args, "progress", False) is None:
            args.progress = False  # -q: no progress unless asked for
        level = _level(verbosity)
        _set_console_level(handler, level)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return EXIT_POLGEN_ERROR
        runlog = _open_run_log(args, argv, verbosity)
        # the logger passes what the console or the run log wants; each handler filters for itself
        logging.getLogger("polgen").setLevel(min(level, runlog.handler.level) if runlog else level)
        try:
            result = func(args)
            code = 0 if result is None else int(result)
            return code
        except PolgenError as exc:
            if verbosity > 0:
                import traceback

                traceback.print_exc(file=sys.stderr)
            error, refused = user_message(exc), isinstance(exc, OutputExistsError)
            print(f"polgen: error: {error}", file=sys.stderr)
            return EXIT_POLGEN_ERROR
        except OSError as exc:
            # The filesystem refused a path the user gave (missing directory, a file where a
            # directory is needed, no permission, disk full): report it in one line.  An OSError
            # without a file name is not about the user's paths and keeps its traceback.
            if exc.filename is None:
                error = f"{type(exc).__name__}: {exc}"
                raise
            if verbosity > 0:
                import traceback

                traceback.print_exc(file=sys.stderr)
            where = f"{exc.filename!r}" + (f" -> {exc.filename2!r}" if exc.filename2 else "")
            error = f"{exc.strerror or type(exc).__name__}: {where}"
            print(f"polgen: error: {error}", file=sys.stderr)
            return EXIT_POLGEN_ERROR
        except KeyboardInterrupt:
            print("polgen: interrupted", file=sys.stderr)
            code, error = 130, "interrupted"
            return 130
        except Exception as exc:
            code, error = 1, f"{type(exc).__name__}: {exc}"  # a bug: the traceback follows on stderr
            raise
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        if runlog is not None:
            # refused (a typed error) before anything was logged, or because of its output: no entry
            runlog.close(code, error, discard=error is not None and (refused or runlog.records == 0) and code == 2)
        logging.getLogger("polgen").removeHandler(handler)
        logging.getLogger("polgen").propagate = True
        progress_logger.setLevel(logging.NOTSET)
        handler.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
