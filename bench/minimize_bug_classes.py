#!/usr/bin/env python3
"""Minimisation on the seed bug classes: evdiff's minimiser against
libFuzzer's -minimize_crash.  Not a test: prints a table.

For each `corpus/seeds/bug-*.txt` that shows a divergence of a KVM port, the
scenario is padded with unrelated events (fixed seed) to 20+ events while its
signature stays, then minimised by `fuzz.minimize` and, if atheris is
installed, by libFuzzer's `-minimize_crash=1` on the binary form through the
fuzz target in raise mode (EVDIFF_RAISE=1).  Reports events before/after,
seconds, and whether the result still shows the same signature.

    python bench/minimize_bug_classes.py [--export] [--libfuzzer-runs N]

--export writes each minimised case to corpus/regressions/ (never over an
existing one).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz import binary, oracle  # noqa: E402
from fuzz.export import REGRESSIONS, export  # noqa: E402
from fuzz.minimize import minimize  # noqa: E402
from fuzz.scenario import EvdiffError  # noqa: E402
from fuzz.text import parse_event_line, read_scenario  # noqa: E402

NOISE = [
    "user.migrate", "l0.immediate_exit", "l0.mmu_fixup", "l1.idt 0x99 gate=bad_type", "l2.idt 0x98",
    "irq 0x40", "nmi", "iret", "cli", "sti", "run", "l0.emulate", "mov_ss", "l1.idt_limit 200",
    "user.nmi", "exception #UD", "exception #BP", "l2.mode long", "l1.mode long",
]


def signatures(sc) -> set[str]:
    return {d.signature for d in oracle.compare(sc).divergences}


def port_signature(sc) -> str | None:
    """The divergence of a trace or shutdown field the seed is about."""
    for d in oracle.compare(sc).divergences:
        if d.field in ("l1", "l2", "shutdown"):
            return d.signature
    return None


def pad(sc, sig: str, rng: random.Random, target: int = 20):
    events = list(sc.events)
    tries = 0
    while len(events) < target and tries < 400:
        tries += 1
        cand = events[:]
        cand.insert(rng.randrange(len(cand) + 1), parse_event_line(rng.choice(NOISE)))
        if sig in signatures(replace(sc, events=tuple(cand))):
            events = cand
    return replace(sc, events=tuple(events))


def libfuzzer_minimize(sc, sig: str, runs: int):
    """(events after, seconds, same signature?), or None without atheris."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return None
    from fuzz.campaign import write_wrapper

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wrapper = write_wrapper(tmp / "target")
        crash = tmp / "crash.bin"
        crash.write_bytes(binary.encode(sc))
        out = tmp / "min.bin"
        env = dict(os.environ, EVDIFF_RAISE="1")
        env.pop("EVDIFF_FINDINGS", None)
        start = time.perf_counter()
        subprocess.run([str(wrapper), "-minimize_crash=1", f"-runs={runs}", f"-exact_artifact_path={out}",
                        str(crash)], env=env, cwd=tmp, capture_output=True, timeout=600)
        secs = time.perf_counter() - start
        if not out.exists():
            return (len(sc.events), secs, True)
        small = binary.decode(out.read_bytes())
        return (len(small.events), secs, sig in signatures(small))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--libfuzzer-runs", type=int, default=2000)
    ap.add_argument("--no-libfuzzer", action="store_true")
    args = ap.parse_args()
    rng = random.Random(2021_02_25)
    rows = []
    for path in sorted((ROOT / "corpus" / "seeds").glob("bug-*.txt")):
        sc = read_scenario(path)
        sig = port_signature(sc)
        if sig is None:
            rows.append((path.stem, "-", "-", "-", "-", "no port diverges here"))
            continue
        big = pad(sc, sig, rng)
        res = minimize(big, sig)
        lf = None if args.no_libfuzzer else libfuzzer_minimize(big, sig, args.libfuzzer_runs)
        lf_text = "not run" if lf is None else f"{lf[0]} ev, {lf[1]:.1f} s, same sig: {lf[2]}"
        rows.append((path.stem, str(res.before), str(res.after), f"{res.seconds:.2f}", str(res.checks), lf_text))
        if args.export:
            try:
                dest = export(res.scenario, path.stem.removeprefix("bug-"), REGRESSIONS)
                print(f"exported {dest}", file=sys.stderr)
            except EvdiffError as e:
                print(f"not exported: {e}", file=sys.stderr)
    header = ("seed", "events", "minimised", "seconds", "oracle runs", "libFuzzer -minimize_crash")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
