#!/usr/bin/env python3
"""The atheris (libFuzzer) target: bytes -> scenario -> every implementation
-> the oracle.

Decoding is total (`fuzz.binary`): every byte string is a scenario, so no
input is rejected.  The implementations, the oracle and the event language
are imported under `atheris.instrument_imports()`, the standard library is
not; the registry loads implementations lazily, so each registered one is
loaded here, inside the instrumented block, or libFuzzer would see no
coverage in it.  At start-up the target checks which modules carry atheris's
instrumentation and says loudly when an implementation does not.

A divergence (an implementation's crash included) is a finding, not a crash
of the target: with `EVDIFF_FINDINGS=DIR` it goes to the findings store under
its signature and fuzzing goes on; otherwise (ClusterFuzzLite, a plain run)
it is raised from frames that follow its signature (`fuzz.failures`), so
libFuzzer stops and ClusterFuzz buckets by signature, unless the signature
is in the known list (`fuzz.known`; `EVDIFF_RAISE_KNOWN=1` raises those too).  Options are
environment variables (`fuzz.targetenv`): libFuzzer takes bare words as
corpus directories.

Run it as `evdiff fuzz`, or by hand: `python -m fuzz.evdiff_fuzzer CORPUS
-max_total_time=60` (fork mode `-fork=N` needs an executable with a shebang:
`evdiff fuzz` writes one).  Built for ClusterFuzzLite by
`.clusterfuzzlite/build.sh` (which prepends code to this file in coverage
builds: so no `from __future__` import here).
"""
import contextlib
import os
import sys

try:
    import atheris
except ImportError:  # the module still imports: `main()` says what to install
    atheris = None

from fuzz import targetenv

#: Modules of our packages that must not be instrumented: the findings store
#: and failure reporting run only on divergences, and their branches are no
#: coverage of the implementations.
NOT_INSTRUMENTED = ["fuzz.findings", "fuzz.failures", "fuzz.text", "fuzz.explain", "fuzz.targetenv",
                    "fuzz.evdiff_fuzzer", "fuzz.mutator", "fuzz.seeds", "fuzz.guidance"]
INSTALL = targetenv.INSTALL

SCOPE = targetenv.instrument_scope()
_instrument = atheris is not None and not targetenv.flag(targetenv.NO_INSTRUMENT) and SCOPE != "none"
TRACE_CMP = targetenv.trace_cmp()
#: Our packages, and those of implementations registered from outside.
INSTRUMENTED = ["impls"] + ["fuzz"] * (SCOPE == "all") + sorted({t.split(":")[0].split(".")[0]
                                                               for t in targetenv.extra_impls().values()})


def _hooks():
    """atheris's import hook, with comparison tracing as `TRACE_CMP` says.
    `instrument_imports` always traces comparisons; its `HookManager` takes
    the flag (atheris 2.3)."""
    if TRACE_CMP:
        return atheris.instrument_imports(include=INSTRUMENTED, exclude=NOT_INSTRUMENTED)
    from atheris.import_hook import HookManager

    return HookManager(set(INSTRUMENTED), set(NOT_INSTRUMENTED), enable_loader_override=True, trace_dataflow=False)


with _hooks() if _instrument else contextlib.nullcontext():
    from fuzz import binary, oracle
    from impls import api

    targetenv.register_extra(api)
    NAMES = targetenv.impl_names(api)
    for _name in NAMES:
        api.load(_name)

from fuzz import failures, findings, guidance, known, mutator  # noqa: E402 -- after the instrumented block, on purpose

_findings_dir = os.environ.get(targetenv.FINDINGS)
STORE = findings.FindingStore(_findings_dir) if _findings_dir else None
RAISE = targetenv.flag(targetenv.RAISE) or STORE is None
#: Signatures not raised (targetenv.RAISE_KNOWN); the store records them all.
QUIET = frozenset() if targetenv.flag(targetenv.RAISE_KNOWN) else frozenset(known.load())


#: Reports of recently run scenarios.  Decoding is many-to-one (values are
#: taken modulo their domain, padding is ignored), so about a fifth of
#: libFuzzer's mutants decode to a scenario run shortly before (measured:
#: 21.7% of 19,985 executions in 40 s from the seeds).  Their report is
#: reused: the implementations are deterministic, so running them again
#: would give the same outcomes and the same coverage.  Bounded; cleared
#: when full.
_RECENT: dict = {}
RECENT_MAX = 2048

#: Extra features (`fuzz.guidance`): counters reserved from atheris, one per
#: feature bucket, bumped after each run; empty when guidance is off.
GUIDE = [atheris._reserve_counter() for _ in range(guidance.SIZE)] \
    if atheris is not None and targetenv.guidance() else []


def TestOneInput(data: bytes) -> None:  # noqa: N802 -- libFuzzer's name
    scenario = binary.decode(data)
    cached = _RECENT.get(scenario)
    if cached is None:
        if len(_RECENT) >= RECENT_MAX:
            _RECENT.clear()
        report = oracle.compare(scenario, NAMES)
        cached = _RECENT[scenario] = (report, tuple(GUIDE[f] for f in guidance.features(report)) if GUIDE else ())
    report, features = cached
    for counter in features:
        atheris._trace_branch(counter)
    if report.divergences:
        if STORE is not None:
            STORE.record(report)
        if RAISE:
            fresh = [c for c in report.causes if c.signature not in QUIET]
            if fresh:
                failures.raise_divergence(report, fresh[0])
    elif STORE is not None:
        STORE.maybe_flush()


def _flush_at_exit() -> None:
    """libFuzzer ends with C `exit()` (-max_total_time, -runs, fork-mode
    jobs), which skips Python's `atexit`: register the last flush of hit
    counts with glibc's `on_exit` instead.  Best effort; without it at most
    FLUSH_SECONDS of counts are lost."""
    if STORE is None:
        return
    try:
        import ctypes

        callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)(lambda status, arg: STORE.flush())
        if ctypes.CDLL(None).on_exit(callback, None) == 0:
            _flush_at_exit.keep = callback  # the C library holds a pointer to it
    except (OSError, AttributeError):  # pragma: no cover -- not glibc
        pass


# ---------------------------------------------------- start-up checks --

MARKER = "__ATHERIS_INSTRUMENTED__"


def _own_functions(module) -> list:
    """Functions and methods defined in `module` itself (not imported)."""
    out = []
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if hasattr(value, "__code__"):
            out.append(value)
        elif isinstance(value, type):
            out += [f for f in vars(value).values() if hasattr(f, "__code__")]
    return out


def _instrumented(module) -> bool | None:
    """Whether atheris instrumented `module` (None: it defines no code)."""
    funcs = _own_functions(module)
    if not funcs:
        return None
    return any(MARKER in f.__code__.co_consts for f in funcs)


def instrumentation() -> tuple[list[str], list[str]]:
    """(instrumented, not instrumented) among the modules that decide
    coverage: every loaded implementation's module, the oracle, decoding."""
    if SCOPE == "none":
        return [], []
    wanted = {"fuzz.oracle", "fuzz.binary", "fuzz.scenario"} if SCOPE == "all" else set()
    wanted |= {type(api.load(n)).__module__ for n in NAMES}
    wanted |= {m for m in sys.modules if m == "impls" or m.startswith("impls.")}
    wanted -= {"fuzz.evdiff_fuzzer", "__main__"}
    yes, no = [], []
    for name in sorted(wanted):
        mod = sys.modules.get(name)
        state = None if mod is None else _instrumented(mod)
        if state is not None:
            (yes if state else no).append(name)
    return yes, no


def startup_report(out=sys.stderr) -> bool:
    """Print what runs and whether coverage can grow; False if it cannot."""
    yes, no = instrumentation()
    mode = f"findings -> {STORE.root}" if STORE is not None else "raise at the first divergence"
    if STORE is None and QUIET:
        mode += f" not in the known list ({len(QUIET)} signatures, {targetenv.RAISE_KNOWN}=1 raises them too)"
    print(f"evdiff-target: implementations: {', '.join(NAMES)}; {mode}; "
          f"guidance {'on' if GUIDE else 'off'} ({targetenv.GUIDANCE}); instrumented: {SCOPE} "
          f"({targetenv.INSTRUMENT}), comparisons {'traced' if TRACE_CMP else 'not traced'} "
          f"({targetenv.TRACE_CMP})", file=out)
    print(f"evdiff-target: instrumented {len(yes)} modules: {', '.join(yes)}", file=out)
    if no:
        bar = "!" * 78
        print(f"{bar}\nevdiff-target: COVERAGE WILL NOT GROW: not instrumented: {', '.join(no)}\n"
              "  These modules were imported outside atheris.instrument_imports() (imported earlier, or\n"
              "  loaded lazily after start-up), so libFuzzer sees no edges in them and fuzzes blind.\n"
              f"{bar}", file=out)
    if len(NAMES) < 2:
        print("evdiff-target: only the reference runs: no divergence can be found "
              "(coverage still grows; the corpus is still useful)", file=out)
    out.flush()
    return not no


def _custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Record-level mutations half of the time (`fuzz.mutator`)."""
    return mutator.mutate(data, max_size, seed, atheris.Mutate)


def _custom_crossover(data1: bytes, data2: bytes, max_size: int, seed: int) -> bytes:
    """Cross-over at record boundaries (`fuzz.mutator.crossover`)."""
    return mutator.crossover(data1, data2, max_size, seed)


def main(argv: list[str] | None = None) -> int:
    if atheris is None:
        print(INSTALL.format(python=sys.executable), file=sys.stderr)
        return 2
    argv = list(sys.argv if argv is None else argv)
    startup_report()
    _flush_at_exit()
    atheris.Setup(argv, TestOneInput, custom_mutator=_custom_mutator, custom_crossover=_custom_crossover)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
