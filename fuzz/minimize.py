"""Reduce a scenario to a 1-minimal one that keeps one root cause's signature.

Three passes, repeated until none changes anything:

1. delta debugging over events (Zeller's ddmin): remove chunks, halving the
   chunk size down to single events,
2. fields: each parameter of each event is tried at simpler values (its
   default, zero, a vector set with one vector fewer, an event without its
   error code ...), one at a time, only ever lowering `cost`,
3. configuration: drop each cap; nested paging back on.

A candidate is kept only if the oracle still reports a root cause with the
**same signature** (`fuzz.causes`: the same blamed branch of a KVM function;
for an implementation's crash, the same exception type and raising line), so
the minimiser never jumps to another bug.
At the end no single event can be removed and no single field simplified
without losing it: the result is 1-minimal.  Results of the oracle are cached
by scenario.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

from fuzz import oracle
from fuzz.causes import symptom
from fuzz.scenario import Event, PType, Scenario, normalise
from impls.arch import Ev


@dataclass
class Result:
    scenario: Scenario
    signature: str
    before: int  # events
    after: int
    checks: int  # oracle runs (cache misses)
    seconds: float


def signatures(scenario: Scenario, names: list[str] | None) -> set[str]:
    """The signatures of the scenario's root causes (`fuzz.causes`)."""
    return {c.signature for c in oracle.compare(scenario, names).causes}


# --------------------------------------------------------------- fields --


def _cost(ptype: PType, default, value) -> int:
    """How far a value is from the simplest one: 0 at the default."""
    if value == default:
        return 0
    if ptype is PType.VECSET:
        return 1 + bin(value).count("1")
    if ptype is PType.EVENT:
        return 1 + (value is not None and value.error_code not in (None, 0))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return 1
    return 1 + (value != 0) + value.bit_length()


def _simpler(ptype: PType, default, value) -> list:
    """Candidate values strictly cheaper than `value`, cheapest first."""
    cands = [default]
    if ptype is PType.VECSET:
        cands += [value & ~(1 << v) for v in range(32) if value >> v & 1]
    elif ptype is PType.EVENT and value is not None:
        cands += [Ev(value.type, value.vector, 0 if value.error_code is not None else None)]
    elif ptype in (PType.U8, PType.U16, PType.EC32, PType.PAGE) and value:
        cands += [0, value & (value - 1)]  # zero; one set bit fewer
    here = _cost(ptype, default, value)
    out = []
    for c in cands:
        if c not in out and c != value and _cost(ptype, default, c) < here:
            out.append(c)
    return out


def _event_variants(ev: Event):
    for i, p in enumerate(ev.spec.params):
        for v in _simpler(p.type, p.default, ev.args[i]):
            new = normalise(Event(ev.kind, ev.args[:i] + (v,) + ev.args[i + 1 :]))
            if new != ev:
                yield new


def _config_variants(sc: Scenario):
    c = sc.config
    for cap in sorted(c.caps):
        yield replace(sc, config=replace(c, caps=c.caps - {cap}))
    if not c.npt:
        yield replace(sc, config=replace(c, npt=True))


# ------------------------------------------------------------ minimiser --


class Minimizer:
    """Keeps a root cause's signature; `SymptomMinimizer` a symptom."""

    def __init__(self, signature: str, names: list[str] | None = None):
        self.signature = signature
        self.names = names
        self.cache: dict[tuple, bool] = {}
        self.checks = 0

    def holds(self, sc: Scenario) -> bool:
        return self.signature in signatures(sc, self.names)

    def keeps(self, sc: Scenario) -> bool:
        key = (sc.config, sc.events)
        if key not in self.cache:
            self.checks += 1
            self.cache[key] = self.holds(sc)
        return self.cache[key]

    def ddmin(self, sc: Scenario) -> Scenario:
        events = list(sc.events)
        n = 2
        while len(events) >= 2:
            chunk = max(1, len(events) // n)
            removed = False
            for start in range(0, len(events), chunk):
                cand = events[:start] + events[start + chunk :]
                if self.keeps(replace(sc, events=tuple(cand))):
                    events, n, removed = cand, max(n - 1, 2), True
                    break
            if not removed:
                if chunk == 1:
                    break
                n = min(len(events), n * 2)
        if len(events) == 1 and self.keeps(replace(sc, events=())):
            events = []
        return replace(sc, events=tuple(events))

    def simplify_fields(self, sc: Scenario) -> Scenario:
        events = list(sc.events)
        for i in range(len(events)):
            changed = True
            while changed:
                changed = False
                for variant in _event_variants(events[i]):
                    cand = events[:i] + [variant] + events[i + 1 :]
                    if self.keeps(replace(sc, events=tuple(cand))):
                        events, changed = cand, True
                        break
        return replace(sc, events=tuple(events))

    def simplify_config(self, sc: Scenario) -> Scenario:
        changed = True
        while changed:
            changed = False
            for cand in _config_variants(sc):
                if self.keeps(cand):
                    sc, changed = cand, True
                    break
        return sc

    def run(self, sc: Scenario) -> Scenario:
        while True:
            before = (sc.config, sc.events)
            sc = self.simplify_config(self.simplify_fields(self.ddmin(sc)))
            if (sc.config, sc.events) == before:
                return sc


class SymptomMinimizer(Minimizer):
    """Keeps what one implementation did wrong first (`causes.symptom`: the
    field and the shapes of its first divergence), not the note it was
    blamed on: a note made by an event the minimiser removes then gives way
    to the note of the branch that really went wrong."""

    def __init__(self, impl: str, symptom: tuple):
        super().__init__(f"{impl}: {symptom}", [oracle.REFERENCE, impl])
        self.impl, self.symptom = impl, symptom

    def holds(self, sc: Scenario) -> bool:
        return symptom(oracle.compare(sc, self.names), self.impl) == self.symptom


def minimize_symptom(scenario: Scenario, impl: str) -> Scenario:
    """The 1-minimal scenario in which `impl` still deviates first the way
    it does in `scenario` (`SymptomMinimizer`); what a new finding is keyed
    on (`fuzz.findings`)."""
    return SymptomMinimizer(impl, symptom(oracle.compare(scenario, [oracle.REFERENCE, impl]), impl)).run(scenario)


def minimize(scenario: Scenario, signature: str | None = None, names: list[str] | None = None) -> Result:
    """Minimise `scenario` keeping the root cause `signature` (default: its
    first, `oracle.Report.causes`), running only the reference and the
    implementations that show it (unless `names` says otherwise).  Raises ValueError if the scenario shows no divergence or
    not that one."""
    start = time.perf_counter()
    report = oracle.compare(scenario, names)
    found = {c.signature: c for c in report.causes}
    if not found:
        raise ValueError("the scenario shows no divergence: nothing to keep while minimising")
    if signature is None:
        signature = report.causes[0].signature
    elif signature not in found:
        raise ValueError(f"the scenario does not show the signature {signature!r}")
    if names is None:  # a cause depends on its implementations and the reference only
        names = [oracle.REFERENCE, *found[signature].impls]
    m = Minimizer(signature, names)
    out = m.run(scenario)
    desc = f"minimised from {len(scenario.events)} events, keeping: {signature}"
    out = replace(out, description=desc)
    return Result(out, signature, len(scenario.events), len(out.events), m.checks, time.perf_counter() - start)
