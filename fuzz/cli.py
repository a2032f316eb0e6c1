"""evdiff: differential fuzzing of x86 virtual-CPU event injection.

Commands:
  evdiff impls                 list the registered implementations
  evdiff replay PATH...        run scenarios (files or directories) through
                               every implementation and report divergences
                               (exit 0: all agree, 1: divergence, 2: bad input)
  evdiff explain FILE          side-by-side traces, diverging steps marked
  evdiff minimize FILE [-o OUT]
                               reduce a diverging scenario to a 1-minimal one
                               with the same signature (never overwrites FILE)
  evdiff export-test FILE --name NAME
                               add FILE to corpus/regressions/ with the
                               expected verdict of each implementation
  evdiff fuzz [--time 8h] [--jobs N] [--findings DIR] [--corpus DIR]
              [--engine atheris|hypothesis] [-- LIBFUZZER-FLAGS...]
                               a fuzz campaign: one directory per divergence
                               signature in findings/, resumable, live status
  evdiff report FINDINGS [-o OUT]
                               the campaign as one self-contained HTML page
                               (default: FINDINGS/report.html)
  evdiff bench                 differential execs/s, scaling, time to first
                               finding per seed bug class
  evdiff coverage PATH...      the reference's rules and each port's ported
                               functions a corpus reached, and never reached

Scenarios are text files (one event a line, `;` comments; see README.md) or,
with the suffix `.bin`, the fuzzer's binary form.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import traceback
from pathlib import Path

from fuzz import binary, oracle
from fuzz.scenario import EvdiffError
from fuzz.text import read_scenario
from impls import api

TEXT_SUFFIXES = (".txt", ".evd")


def load_path(path: Path):
    """A scenario from a text file, or from a `.bin` file in binary form
    (only the bytes the binary form can use are read)."""
    if path.suffix == ".bin":
        with open(path, "rb") as f:
            return binary.decode(f.read(1 + binary.RECORD * binary.MAX_EVENTS))
    return read_scenario(path)


def _raise(e: OSError):
    raise e


def expand(paths: list[str]) -> list[Path]:
    """The scenario files named or found (recursively, sorted) in the
    directories named.  A file named on the command line is read whatever it
    is; in a directory, what is not a regular file (a FIFO, a device) is
    skipped with a warning; a directory that cannot be read, or one named
    like a scenario file, is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            os.stat(p)  # missing, dangling, a loop: OSError naming the path
            out.append(p)
            continue
        found = []
        for top, dirs, files in os.walk(p, onerror=_raise, followlinks=False):
            for name in dirs:
                if Path(name).suffix in TEXT_SUFFIXES + (".bin",):
                    raise EvdiffError(f"{Path(top, name)}: a directory, named like a scenario file")
            for name in files:
                q = Path(top, name)
                if q.suffix not in TEXT_SUFFIXES + (".bin",):
                    continue
                if not stat.S_ISREG(os.stat(q).st_mode):  # follows a symlink; a dangling one raises
                    print(f"evdiff: warning: {q}: not a regular file, skipped", file=sys.stderr)
                    continue
                found.append(q)
        out += sorted(found)
    return out


def _impl_names(arg: str | None) -> list[str]:
    if not arg:
        return api.names()
    names = [n.strip() for n in arg.split(",") if n.strip()]
    for n in names:
        api.load(n)
    if oracle.REFERENCE not in names:
        names.insert(0, oracle.REFERENCE)
    return names


# ------------------------------------------------------------- commands --


def cmd_impls(args) -> int:
    for name in api.names():
        impl = api.load(name)
        print(f"{name}\t{impl.summary}\t({impl.origin})")
    return 0


def _print(text: str) -> None:
    """Print to stdout; once its reader has gone (`evdiff replay | head`),
    print nothing more and go on, so that the exit code still says whether
    anything diverged."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _too_many_choices(report) -> str:
    ref = report.results.get(oracle.REFERENCE)
    if isinstance(ref, api.Allowed) and not ref.complete:
        return f" (the reference: {next(c for c in ref.choices if c.startswith('too many choices'))})"
    return ""


def cmd_replay(args) -> int:
    names = _impl_names(args.impls)
    files = expand(args.paths)
    scenarios = [(p, load_path(p)) for p in files]  # all parsed first: bad input stops before any run
    diverged = False
    for path, scenario in scenarios:
        report = oracle.compare(scenario, names)
        diverged |= not report.agree
        if args.json:
            _print(json.dumps({"path": str(path), **report.to_json()}))
            continue
        if report.agree:
            _print(f"{path}: all {len(names)} agree{_too_many_choices(report)}")
            continue
        lines = [f"{path}: {len(report.causes)} root cause(s){_too_many_choices(report)}"]
        for c in report.causes:
            verdicts = ", ".join(f"{pair}: {v}" for pair, v in c.verdicts.items())
            lines.append(f"  {c.signature}  ({' '.join(c.impls)})" + (f"  [{verdicts}]" if verdicts else ""))
        _print("\n".join(lines))
    return 1 if diverged else 0


def cmd_explain(args) -> int:
    from fuzz.explain import explain

    scenario = load_path(Path(args.file))
    report = oracle.compare(scenario, _impl_names(args.impls))
    _print(explain(report, args.format))
    return 0 if report.agree else 1


def cmd_minimize(args) -> int:
    from fuzz.minimize import minimize
    from fuzz.text import format_scenario

    src = Path(args.file)
    out = Path(args.output) if args.output else src.with_name(src.stem + ".min.txt")
    if out.resolve() == src.resolve():
        raise EvdiffError(f"{out}: the minimiser never overwrites its input; choose another -o")
    if not out.parent.is_dir():
        raise EvdiffError(f"{out}: no directory {out.parent} to write it in")
    scenario = load_path(src)
    try:
        res = minimize(scenario, args.signature, _impl_names(args.impls) if args.impls else None)
    except ValueError as e:
        raise EvdiffError(f"{src}: {e}") from None
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(format_scenario(res.scenario))
        tmp.replace(out)
    except OSError as e:
        raise EvdiffError(f"{out}: {e.strerror}") from None
    print(f"{src}: {res.before} -> {res.after} events in {res.seconds:.2f} s ({res.checks} oracle runs)")
    print(f"  signature: {res.signature}")
    print(f"  written to {out}")
    return 0


def cmd_export_test(args) -> int:
    from fuzz.export import export, regressions_dir

    scenario = load_path(Path(args.file))
    directory = Path(args.dir) if args.dir else regressions_dir(Path(args.corpus) if args.corpus else None)
    path = export(scenario, args.name, directory)
    print(f"wrote {path}")
    if len(scenario.events) > 6:
        print(f"  note: {len(scenario.events)} events; `evdiff minimize` first gives a shorter test")
    return 0


def cmd_fuzz(args) -> int:
    from fuzz import campaign, known

    opts = campaign.Options(
        engine=args.engine, time=campaign.parse_duration(args.time) if args.time is not None else 0, jobs=args.jobs,
        parallel=args.parallel,
        findings=Path(args.findings), corpus=Path(args.corpus) if args.corpus else None,
        seeds=None if args.no_seeds else Path(args.seeds) if args.seeds else campaign.seeds.SEEDS,
        extra=args.libfuzzer, max_examples=args.max_examples, impls=args.impls, quiet=args.quiet,
        known=known.load(Path(args.known) if args.known else known.KNOWN))
    return campaign.run(opts)


def cmd_report(args) -> int:
    from fuzz import known, report

    listed = known.load(Path(args.known) if args.known else known.KNOWN)
    print(f"wrote {report.write(args.findings, args.output, listed)}")
    return 0


def cmd_bench(args) -> int:
    from fuzz import bench

    return bench.main(args)


def cmd_coverage(args) -> int:
    from fuzz import coverage

    return coverage.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evdiff", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("impls", help="list registered implementations").set_defaults(fn=cmd_impls)
    p = sub.add_parser("replay", help="run scenarios through every implementation")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per scenario")
    p.add_argument("--impls", help="comma-separated implementations (default: all)")
    p.set_defaults(fn=cmd_replay)
    p = sub.add_parser("explain", help="side-by-side traces of one scenario")
    p.add_argument("file")
    p.add_argument("--format", choices=("text", "md", "html"), default="text")
    p.add_argument("--impls", help="comma-separated implementations (default: all)")
    p.set_defaults(fn=cmd_explain)
    p = sub.add_parser("minimize", help="reduce a diverging scenario, keeping its signature")
    p.add_argument("file")
    p.add_argument("-o", "--output", help="where to write (default: FILE's name with .min.txt)")
    p.add_argument("--signature", help="the divergence to keep (default: the first)")
    p.add_argument("--impls", help="comma-separated implementations (default: all)")
    p.set_defaults(fn=cmd_minimize)
    p = sub.add_parser("export-test", help="add a scenario to corpus/regressions/")
    p.add_argument("file")
    p.add_argument("--name", required=True)
    p.add_argument("--corpus", help="the project's corpus directory; the case goes to CORPUS/regressions "
                                    "(default: this project's corpus/)")
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_export_test)
    p = sub.add_parser("fuzz", help="run a fuzz campaign (atheris or hypothesis)",
                       description="Run a fuzz campaign; see fuzz/campaign.py.  Flags after `--` go to libFuzzer.")
    p.add_argument("--time", help="stop after this long: 60, 90s, 15m, 8h (default: until Ctrl-C)")
    p.add_argument("--jobs", type=int, default=1, help="N fuzzing processes (see --parallel)")
    p.add_argument("--parallel", choices=("fork", "workers"), default="workers",
                   help="with --jobs: -jobs=N -workers=N, N independent fuzzers sharing the corpus (default: "
                        "it scales better), or fork mode -fork=N (survives a fuzzer that dies)")
    p.add_argument("--findings", default="findings", help="findings directory (default: findings/)")
    p.add_argument("--corpus", help="corpus directory (default: FINDINGS/corpus)")
    p.add_argument("--engine", choices=("atheris", "hypothesis"), default="atheris")
    p.add_argument("--seeds", help="text seeds to start from (default: corpus/seeds)")
    p.add_argument("--no-seeds", action="store_true", help="start from the corpus directory alone")
    p.add_argument("--max-examples", type=int, default=10, help="inputs kept per signature (default: 10)")
    p.add_argument("--impls", help="comma-separated implementations (default: all)")
    p.add_argument("--quiet", action="store_true", help="no status line; the summary only")
    p.add_argument("--known", help="known divergences, listed apart in the summary "
                                   "(default: corpus/known-divergences.txt)")
    p.add_argument("libfuzzer", nargs="*", metavar="-- LIBFUZZER-FLAG", help="passed to libFuzzer")
    p.set_defaults(fn=cmd_fuzz)
    p = sub.add_parser("report", help="a campaign's findings as one self-contained HTML page")
    p.add_argument("findings", metavar="FINDINGS", help="findings directory of `evdiff fuzz`")
    p.add_argument("-o", "--output", help="where to write (default: FINDINGS/report.html)")
    p.add_argument("--known", help="known divergences, shown apart (default: corpus/known-divergences.txt)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("bench", help="measure execs/s, scaling and time to first finding")
    from fuzz.bench import add_arguments as _bench_arguments

    _bench_arguments(p)
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("coverage", help="the manual rules and ported KVM functions a corpus reached",
                       description="Replay a corpus (libFuzzer's, a findings directory, scenario files) and "
                                   "list the reference's rules and each port's @origin functions with how "
                                   "many scenarios reached each; see fuzz/coverage.py.")
    p.add_argument("paths", nargs="+", metavar="CORPUS_OR_FINDINGS")
    p.add_argument("--impls", help="comma-separated implementations (default: all)")
    p.add_argument("--unreached", action="store_true", help="only the rows something never reached")
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    p.set_defaults(fn=cmd_coverage)
    args = parser.parse_args(argv)
    # Exit codes: 0 all agree, 1 a divergence, 2 an error (bad input or
    # options, a file that cannot be read or written: one line
    # `evdiff: PATH: what went wrong`), 3 a bug in evdiff, 130 Ctrl-C.
    try:
        return args.fn(args)
    except (EvdiffError, api.RegistryError) as e:
        print(f"evdiff: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader has gone; commands that print as they go use `_print`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        where = e.filename if e.filename is not None else "error"
        print(f"evdiff: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evdiff: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- never exit 1, which means "divergence"
        traceback.print_exc()
        print(f"evdiff: internal error: {type(e).__name__}: {e} (a bug in evdiff)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
