"""`evdiff bench`: how fast the differential loop runs, and how soon it finds
the seed bug classes.  Prints tables; never part of the test suite.

1. **execs/s in-process** (no instrumentation): decode alone, then decode +
   every registered implementation + the oracle, on the same random inputs of
   campaign-like length (`CAMPAIGN_MEAN_EVENTS`), 16 and 64 events (fixed
   seed), in the same run; the ratio says what the
   differential part costs.  Decoding is measured cold (its record cache
   cleared): libFuzzer's mutants share most records with their parents, so a
   campaign decodes faster than this.  Each implementation alone, too.
2. **campaign execs/s** (atheris, instrumented, real `evdiff fuzz` runs from
   the seeds, wall time including start-up): 1 job, `--jobs 2` (`-fork=2`),
   and `--jobs 2 --parallel workers` (`-jobs=2 -workers=2`), then 1 job with
   each other instrumentation scope (`EVDIFF_INSTRUMENT`); scaling is the
   ratio to 1 job.
3. **time to first finding** per seed bug class, from an empty corpus
   without the seeds (and a dictionary without their records): a class is
   what `corpus/seeds/bug-<class>-<vendor>.txt` diverge with (their
   signatures, replayed now, minus those another class shares); median of
   `--runs` campaigns, each stopped when every class is found or after
   `--ttff-timeout`.  With no divergent implementation registered there is
   nothing to find, and the table says so.  `--guidance both` measures
   with and without the target's extra features (`fuzz.guidance`),
   campaigns taking turns so that both see the same load.
4. `--profile`: cProfile of the in-process loop, by own time.
"""
from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("exec", "scaling", "ttff")


def add_arguments(p) -> None:
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per in-process measurement (default: 3)")
    p.add_argument("--campaign-seconds", type=float, default=20.0,
                   help="seconds per campaign for the scaling table (default: 20)")
    p.add_argument("--runs", type=int, default=5, help="campaigns per bug class for time to first finding")
    p.add_argument("--ttff-timeout", type=float, default=60.0, help="seconds before a campaign gives up (60)")
    p.add_argument("--engine", choices=("atheris", "hypothesis"), default="atheris",
                   help="engine for time to first finding (default: atheris)")
    p.add_argument("--guidance", choices=("default", "on", "off", "both"), default="default",
                   help="time to first finding with the target's extra features (fuzz.guidance) on, off, or "
                        "both in turns (default: the target's default)")
    p.add_argument("--setting", action="append", metavar="LABEL:VAR=VALUE[,VAR=VALUE]",
                   help="time to first finding under this target environment (repeatable; campaigns of the "
                        "settings take turns), e.g. 'bare:EVDIFF_INSTRUMENT=none'; overrides --guidance")
    p.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)} (default: all)")
    p.add_argument("--profile", action="store_true", help="also profile the in-process loop")
    p.add_argument("--impls", help="comma-separated implementations (default: all)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers here")


# ---------------------------------------------------------- in-process --


#: Mean events of a campaign's inputs (measured: the corpus of a 10-minute
#: campaign from the seeds, 5.8 events); the "campaign" row draws lengths
#: from a geometric distribution with this mean.
CAMPAIGN_MEAN_EVENTS = 5.8


def _inputs(events: int | str, n: int = 200, seed: int = 1) -> list[bytes]:
    """`n` random inputs of `events` events, or of campaign-like lengths."""
    from fuzz.binary import RECORD

    rng = random.Random(seed)

    def length():
        if events != "campaign":
            return events
        p, k = 1 / CAMPAIGN_MEAN_EVENTS, 1
        while rng.random() > p:
            k += 1
        return k

    return [bytes(rng.randrange(256) for _ in range(1 + RECORD * length())) for _ in range(n)]


def _rate(fn, inputs, seconds: float, before=None) -> float:
    n, busy, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if before is not None:
            before()
        t = time.perf_counter()
        for data in inputs:
            fn(data)
        busy += time.perf_counter() - t
        n += len(inputs)
    return n / busy


def _cold():
    from fuzz import binary

    binary._RECORDS.clear()


def in_process(names: list[str], seconds: float) -> list[dict]:
    from fuzz import binary, oracle
    from impls import api

    rows = []
    for events in ("campaign", 16, 64):
        inputs = _inputs(events)
        scenarios = [binary.decode(d) for d in inputs]
        decode = _rate(binary.decode, inputs, seconds, before=_cold)
        diff_cold = _rate(lambda d: oracle.compare(binary.decode(d), names), inputs, seconds, before=_cold)
        diff = _rate(lambda d: oracle.compare(binary.decode(d), names), inputs, seconds)
        per_impl = {n: _rate(api.load(n).run, scenarios, seconds / 2) for n in names}
        diverging = sum(1 for s in scenarios if oracle.compare(s, names).divergences) / len(scenarios)
        rows.append({"events": events, "decode_per_s": decode, "differential_per_s": diff_cold,
                     "differential_warm_decode_per_s": diff, "ratio": diff_cold / decode, "per_impl": per_impl,
                     "diverging_inputs": diverging})
    return rows


def profile(names: list[str], seconds: float, top: int = 20) -> str:
    from fuzz import binary, oracle

    inputs = _inputs(16)
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    while time.perf_counter() - start < seconds:
        for d in inputs:
            oracle.compare(binary.decode(d), names)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# ----------------------------------------------------------- campaigns --


def _env(impls: str | None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("EVDIFF_FINDINGS", "EVDIFF_RAISE")}
    if impls:
        env["EVDIFF_IMPLS"] = impls
    return env | extra


def _fuzz_cmd(findings: Path, seconds: float, *extra: str, engine: str = "atheris") -> list[str]:
    return [sys.executable, "-m", "fuzz.cli", "fuzz", "--quiet", "--engine", engine, "--time", str(int(seconds)),
            "--findings", str(findings), *extra]


def campaign_rate(seconds: float, jobs: int, impls: str | None, parallel: str = "fork",
                  target_env: dict[str, str] | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="evdiff-bench-") as tmp:
        out = Path(tmp) / "findings"
        subprocess.run(_fuzz_cmd(out, seconds, "--jobs", str(jobs), "--parallel", parallel),
                       env=_env(impls, **(target_env or {})), capture_output=True, timeout=seconds + 120)
        stats = json.loads((out / "stats.json").read_text())
        flags = "" if jobs == 1 else f" (-fork={jobs})" if parallel == "fork" else f" (-jobs={jobs} -workers={jobs})"
        mode = f"--jobs {jobs}" + (f" --parallel {parallel}" if jobs > 1 and parallel != "fork" else "") + flags
        mode += "".join(f" {k}={v}" for k, v in (target_env or {}).items())
        return {"mode": mode, "execs": stats["execs"], "seconds": stats["elapsed"],
                "execs_per_s": stats["execs"] / max(stats["elapsed"], 1e-9)}


# -------------------------------------------------- time to first finding --


def bug_classes(names: list[str]) -> dict[str, set[str]]:
    """{class: signatures that name it} from corpus/seeds/bug-*.txt."""
    from fuzz import oracle, seeds
    from fuzz.text import read_scenario

    raw: dict[str, set[str]] = {}
    for path in sorted(seeds.SEEDS.glob("bug-*.txt")):
        cls = re.sub(r"-(vmx|svm)$", "", path.stem)
        report = oracle.compare(read_scenario(path), names)
        sigs = {c.signature for c in report.causes}
        raw.setdefault(cls, set()).update(sigs)
    classes = {}
    for cls, sigs in raw.items():
        others = set().union(*(s for c, s in raw.items() if c != cls))
        classes[cls] = (sigs - others) or sigs
    return classes


def _first_findings(wanted: dict[str, set[str]], timeout: float, engine: str, env: dict) -> dict[str, float]:
    """One campaign from nothing: {class: seconds to its first finding}."""
    from fuzz.findings import FindingStore

    with tempfile.TemporaryDirectory(prefix="evdiff-bench-") as tmp:
        out = Path(tmp) / "findings"
        t0 = time.time()
        proc = subprocess.Popen(_fuzz_cmd(out, timeout, "--no-seeds", engine=engine), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found: dict[str, float] = {}
        while proc.poll() is None and len(found) < len(wanted):
            time.sleep(0.5)
            for f in FindingStore(out).findings() if out.exists() else []:
                for c, sigs in wanted.items():
                    if c not in found and f.signature in sigs:
                        found[c] = f.meta.get("first_seen_unix", time.time()) - t0
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return found


def ttff(classes: dict[str, set[str]], runs: int, timeout: float, engine: str, impls: str | None,
         note=print, settings: dict[str, dict] | None = None) -> dict[str, dict[str, list[float | None]]]:
    """{setting: {class: seconds to the first finding per run, None where
    not found}}.  `settings`: label -> extra environment of the target;
    their campaigns take turns, so that all see the same load (default: one
    setting, "", the environment as it is)."""
    settings = settings or {"": {}}
    wanted = {c: s for c, s in classes.items() if s}
    times = {label: {c: [] for c in classes} for label in settings}
    for r in range(runs):
        for label, extra in settings.items():
            found = _first_findings(wanted, timeout, engine, _env(impls, **extra))
            for c in classes:
                times[label][c].append(found.get(c))
            note(f"  {label + ': ' if label else ''}run {r + 1}/{runs}: found {len(found)}/{len(wanted)} classes")
    return times


def _ttff_table(classes: dict[str, set[str]], times: dict[str, list[float | None]], timeout: float) -> None:
    print(f"{'class':<34} {'sigs':>4} {'found':>6} {'median s':>9} {'min s':>6} {'max s':>6}")
    for c, ts in times.items():
        got = [t for t in ts if t is not None]
        if not classes[c]:
            print(f"{c:<34} {0:>4} {'-':>6}   (its seeds do not diverge here)")
            continue
        med = statistics.median(got) if len(got) == len(ts) else None
        print(f"{c:<34} {len(classes[c]):>4} {len(got):>3}/{len(ts):<2} "
              f"{(f'{med:.1f}' if med is not None else f'>{timeout:.0f}'):>9} "
              f"{(f'{min(got):.1f}' if got else '-'):>6} {(f'{max(got):.1f}' if got else '-'):>6}")


def parse_setting(text: str) -> tuple[str, dict[str, str]]:
    """`LABEL:VAR=VALUE,VAR=VALUE` to (LABEL, {VAR: VALUE})."""
    from fuzz.scenario import EvdiffError

    label, colon, rest = text.partition(":")
    pairs = [p.partition("=") for p in rest.split(",") if p.strip()]
    if not colon or not label.strip() or any(not eq or not k.strip() for k, eq, _ in pairs):
        raise EvdiffError(f"--setting {text!r}: write LABEL:VAR=VALUE[,VAR=VALUE...]")
    return label.strip(), {k.strip(): v.strip() for k, _, v in pairs}


# --------------------------------------------------------------- main --


def main(args) -> int:
    from fuzz import campaign, targetenv
    from impls import api

    targetenv.register_extra(api)
    names = targetenv.impl_names(api, {targetenv.IMPLS: args.impls or ""})
    for n in names:
        api.load(n)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    bad = only - set(SECTIONS)
    if bad:
        from fuzz.scenario import EvdiffError

        raise EvdiffError(f"--only {','.join(sorted(bad))}: sections are {', '.join(SECTIONS)}")
    result: dict = {"implementations": names, "load_average": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"evdiff bench: implementations {', '.join(names)}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (numbers from a busy machine are low)")

    if "exec" in only:
        rows = in_process(names, args.seconds)
        result["in_process"] = rows
        print(f"\n1. execs/s in-process, no instrumentation, {len(names)} implementation(s)")
        print(f"{'events':>8} {'decode/s':>10} {'differential/s':>15} {'ratio':>6} {'(warm decode)':>14} "
              f"{'diverging':>9}   each implementation alone, runs/s")
        for r in rows:
            each = "  ".join(f"{n} {v:,.0f}" for n, v in r["per_impl"].items())
            print(f"{str(r['events']):>8} {r['decode_per_s']:>10,.0f} {r['differential_per_s']:>15,.0f} "
                  f"{r['ratio']:>6.3f} {r['differential_warm_decode_per_s']:>14,.0f} "
                  f"{r['diverging_inputs']:>9.0%}   {each}")

    if "scaling" in only:
        if not campaign.atheris_available():
            print("\n2. campaign execs/s: skipped, atheris is not installed")
        else:
            print(f"\n2. campaign execs/s (atheris, instrumented, from the seeds, {args.campaign_seconds:.0f} s each)")
            rows = [campaign_rate(args.campaign_seconds, 1, args.impls),
                    campaign_rate(args.campaign_seconds, 2, args.impls),
                    campaign_rate(args.campaign_seconds, 2, args.impls, "workers")]
            rows += [campaign_rate(args.campaign_seconds, 1, args.impls, target_env={"EVDIFF_INSTRUMENT": scope})
                     for scope in ("all", "impls", "none") if scope != targetenv.INSTRUMENT_DEFAULT]
            result["campaign"] = rows
            base = rows[0]["execs_per_s"] or 1
            print(f"{'mode':<50} {'execs':>10} {'seconds':>8} {'execs/s':>9} {'vs 1 job':>9}")
            for r in rows:
                print(f"{r['mode']:<50} {r['execs']:>10,} {r['seconds']:>8.1f} {r['execs_per_s']:>9,.0f} "
                      f"{r['execs_per_s'] / base:>9.2f}")

    if "ttff" in only:
        print(f"\n3. time to first finding per seed bug class (empty corpus, no seeds, {args.engine}, "
              f"median of {args.runs}, {args.ttff_timeout:.0f} s limit)")
        classes = bug_classes(names)
        result["bug_classes"] = {c: sorted(s) for c, s in classes.items()}
        if len(names) < 2:
            print("no divergent implementation registered: only the reference runs, there is nothing to find")
        elif not any(classes.values()):
            print("no seed bug class diverges with the registered implementations: nothing to find")
        else:
            # Guidance on or off over instrumented line coverage: without
            # instrumentation (the default) guidance is the coverage.
            line = {"EVDIFF_INSTRUMENT": "all"}
            settings = {"default": {"": {}},
                        "on": {"guidance on": line | {"EVDIFF_GUIDANCE": "1"}},
                        "off": {"guidance off": line | {"EVDIFF_GUIDANCE": "0"}},
                        "both": {"guidance off": line | {"EVDIFF_GUIDANCE": "0"},
                                 "guidance on": line | {"EVDIFF_GUIDANCE": "1"}}}[args.guidance]
            if args.setting:
                settings = dict(parse_setting(s) for s in args.setting)
            times = ttff(classes, args.runs, args.ttff_timeout, args.engine, args.impls,
                         note=lambda s: print(s, flush=True), settings=settings)
            result["ttff"] = times[""] if "" in times else times
            for label, by_class in times.items():
                if label:
                    print(label)
                _ttff_table(classes, by_class, args.ttff_timeout)

    if args.profile:
        print("\n4. profile of decode + every implementation + oracle (16 events), by own time")
        print(profile(names, args.seconds))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0
