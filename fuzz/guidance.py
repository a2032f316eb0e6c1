"""Features for libFuzzer beyond Python line coverage: what the
implementations did, with the values line coverage cannot tell apart.

Line coverage sees that the reference noted a fault during a delivery; it
does not see which fault during the delivery of which event, nor that a
port took one branch at the step where the reference applied a given rule.
The seed bug classes differ from scenarios the fuzzer already has by such
values (an injected #PF instead of an interrupt, a #PF intercepted during
its delivery), so each of these becomes a feature of its own:

* each note an implementation made, numbers made N (`fuzz.causes.branch`):
  for the reference its rule and the classes it applied to
  ("#PF(ec=N) during delivery of ext-int N is intercepted by L1 ..."), for a
  port its branch;
* each pair of a reference note and a port's note made at the same step,
  and each port's pair of consecutive notes;
* each observation's shape (`fuzz.oracle.abstract`) per implementation and
  level;
* each choice the reference met (`Allowed.choices`), and each root cause's
  signature.

A feature is hashed (CRC-32: the same in every fork-mode process) into one
of `SIZE` counters that the target reserves from atheris and bumps after
each run (`fuzz.evdiff_fuzzer`): a feature never seen before is new
coverage to libFuzzer, which keeps the input.  Collisions only merge
features.  This module is not instrumented.

On by default, as the only coverage: the target instruments nothing
(`fuzz.targetenv.INSTRUMENT_DEFAULT`), so the implementations run at 2.65x
the speed and libFuzzer keeps an input when it made the implementations do
something new.  Measured by time to first finding from nothing (README,
"Fuzz campaigns"), this finds every seed class sooner than line coverage.
Added to line coverage (`EVDIFF_INSTRUMENT=all EVDIFF_GUIDANCE=1`) it gave
no clear gain: 14 campaigns each way taking turns, 120 s each, class A 11
of 14 vs. 7, the spurious #DF 11 vs. 14, B and C alike.
"""
from __future__ import annotations

import zlib

from fuzz.causes import branch
from fuzz.oracle import REFERENCE, abstract
from impls.api import Allowed, Outcome

#: Counters reserved for features.
SIZE = 1 << 16

_BRANCH: dict[str, str] = {}
_BRANCH_MAX = 8192


def _branch(text: str) -> str:
    b = _BRANCH.get(text)
    if b is None:
        if len(_BRANCH) >= _BRANCH_MAX:
            _BRANCH.clear()
        b = _BRANCH[text] = branch(text)
    return b


def _outcomes(result) -> tuple:
    if isinstance(result, Allowed):
        return result.outcomes
    if isinstance(result, Outcome):
        return (result,)
    return ()


def feature_texts(report) -> set[str]:
    """The features of one run (`report`: `fuzz.oracle.Report`), as text."""
    out: set[str] = set()
    ref_at: dict[int, set[str]] = {}
    results = sorted(report.results.items(), key=lambda kv: kv[0] != REFERENCE)  # the reference first
    for i, (name, result) in enumerate(results):
        reference = name == REFERENCE
        for o in _outcomes(result):
            prev = ""
            for step, text in o.notes:
                b = _branch(text)
                out.add(f"{i} {b}")
                if reference:
                    ref_at.setdefault(step, set()).add(b)
                else:
                    out.add(f"{i} {prev} > {b}")
                    out.update(f"{i} {r} @ {b}" for r in ref_at.get(step, ()))
                prev = b
            for level, trace in ((1, o.l1), (2, o.l2)):
                out.update(f"{i} L{level} {abstract(obs)}" for _, obs in trace)
            if o.shutdown is not None:
                out.add(f"{i} shutdown")
        if isinstance(result, Allowed):
            out.update(f"choice {_branch(c)}" for c in result.choices)
        elif not isinstance(result, Outcome):
            out.add(f"{i} crash")
    if report.divergences:
        out.update(f"cause {c.signature}" for c in report.causes)
    return out


def features(report) -> tuple[int, ...]:
    """The counters (0 .. SIZE-1) the run's features fall in."""
    return tuple({zlib.crc32(f.encode()) % SIZE for f in feature_texts(report)})
