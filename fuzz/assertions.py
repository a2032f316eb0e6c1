"""What a test of KVM's own asserts, written in a scenario's leading comment
and checked against an implementation's outcome (`corpus/seeds/kvm-tests/`).

A scenario that restates a KVM test (kvm-unit-tests, KVM selftests) says what
that test asserts in lines of its description, next to the `expect` lines of
a regression case (`fuzz.export`), which pin every implementation's verdict:

    ; assert l2@3: L2 handles #DE
    ; assert l1@4: EXIT VMCALL
    ; assert l1@2: nothing
    ; assert final.level: 1
    ; assert shutdown: none
    ; kvm-fails prepatch: 1a2b3c4d5e6f "subject": why the 5.11 kernel fails it
    ; kvm-fails postpatch-v2: unmerged (NOTES.md V1): a slip of the posting

`TRACE@STEP` is L1's or L2's trace at one step (a step is the index of the
event that produced it, as `evdiff explain` numbers them; the implicit final
`run` is the number of events): the observations there are exactly those
listed, in order, separated by ` | ` (`nothing`: none); an exit ending in
`, IDT-vectoring: any` leaves that field open (KVM's test does not read it),
`, IDT-vectoring: undefined` too (the manuals leave it undefined); a
` NAME=VALUE` field of an observation (`ret=+2`, `len=1`, `addr=0x1000`) that
the assertion does not name is left open likewise (`ret=+0` names a field
the observation prints only when it is not zero), and so is an exit's
`, activity HLT` where the assertion names no activity.  `final.FIELD` is a
field of the final state as `evdiff explain` shows it (`yes` / `no`, hex
vectors, `none`); `shutdown` is the step of a shutdown or `none`.

The reference satisfies a scenario's assertions if one outcome it allows
does (a KVM test passes on one CPU: the CPU made one of the choices the
manuals leave open).  A KVM port must satisfy them, unless a `kvm-fails`
line names the later kernel commit that fixed the failure in that port's
kernel version (`unmerged` for a posted series that never landed, with the
note that explains it); then it must fail them (`tests/test_kvm_tests.py`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from fuzz.scenario import EvdiffError, Scenario
from impls.api import Allowed, FinalState, Outcome, VmExit

_ASSERT = re.compile(r"^assert (?:(l1|l2)@(\d+)|final\.(\w+)|(shutdown)): (.+)$")
_FAILS = re.compile(r"^kvm-fails ([\w.-]+): ([0-9a-f]{12,40}|unmerged) (.+)$")
NOTHING = "nothing"
#: An exit written with one of these endings matches whatever IDT-vectoring
#: information it has: `undefined` where the manuals leave it so (after an
#: SVM shutdown intercept, APM 15.14.3), `any` where KVM's test does not look.
_ANY_VECTORING = (", IDT-vectoring: undefined", ", IDT-vectoring: any")
#: An observation's ` NAME=VALUE` fields (`ret=+2`, `len=1`, `addr=0x1000`).
_FIELD_VALUE = re.compile(r" (\w+)=\S+")
_FIELD = re.compile(r" (\w+)=")
_ZERO = re.compile(r" \w+=[+-]?0")
#: The activity state a VMX exit saved (`impls.api.VmExit`), where it is HLT.
_ACTIVITY = ", activity "
_FINAL_FIELDS = {f.name for f in fields(FinalState)}


@dataclass(frozen=True)
class Assertion:
    what: str  # "l1@3", "final.level", "shutdown"
    expected: str

    def __str__(self):
        return f"{self.what}: {self.expected}"


def parse(scenario: Scenario) -> tuple[list[Assertion], dict[str, str]]:
    """(assertions, {implementation: the fixing commit and why}) of a scenario."""
    asserts, fails = [], {}
    for line in scenario.description.splitlines():
        if m := _ASSERT.match(line):
            if m[1]:
                what = f"{m[1]}@{int(m[2])}"
            elif m[3]:
                if m[3] not in _FINAL_FIELDS:
                    raise EvdiffError(f"assert final.{m[3]}: no such field (one of {sorted(_FINAL_FIELDS)})")
                what = f"final.{m[3]}"
            else:
                what = "shutdown"
            asserts.append(Assertion(what, m[5].strip()))
        elif m := _FAILS.match(line):
            fails[m[1]] = f"{m[2]} {m[3]}"
        elif line.startswith(("assert ", "kvm-fails ")):
            raise EvdiffError(f"cannot read {line!r}: see fuzz/assertions.py for the syntax")
    return asserts, fails


def show(value) -> str:
    """A final-state value as `evdiff explain` shows it."""
    from fuzz.explain import _final

    return _final(value)


def actual(assertion: Assertion, outcome: Outcome) -> str:
    """What `outcome` has where `assertion` looks, in the assertion's syntax."""
    what = assertion.what
    if what == "shutdown":
        return "none" if outcome.shutdown is None else str(outcome.shutdown)
    if what.startswith("final."):
        if outcome.final is None:
            return "none (no final state)"
        return show(getattr(outcome.final, what[len("final."):]))
    trace, step = what.split("@")
    seen = [str(obs) for s, obs in getattr(outcome, trace) if s == int(step)]
    return " | ".join(seen) or NOTHING


def _unread(shown: str, text: str) -> str:
    """`shown` without its ` NAME=VALUE` fields that `text` does not name
    (a return address `ret=`, an instruction length `len=`, a #PF address
    `addr=`) and without an exit's `, activity HLT` if `text` names no
    activity: what KVM's test does not read is left open."""
    named = set(_FIELD.findall(text))
    shown = _FIELD_VALUE.sub(lambda m: m[0] if m[1] in named else "", shown)
    return shown if _ACTIVITY in text else shown.replace(_ACTIVITY + "HLT", "")


def _zeros_unshown(text: str, shown: str) -> str:
    """`text` without its ` NAME=+0` fields where `shown` has no NAME: an
    observation does not print a field that is zero (`impls.api._offset`)."""
    present = set(_FIELD.findall(shown))
    return _FIELD_VALUE.sub(lambda m: "" if m[1] not in present and _ZERO.fullmatch(m[0]) else m[0], text)


def _same(obs, text: str) -> bool:
    text = _zeros_unshown(text, str(obs))
    if _unread(str(obs), text) == text:
        return True
    for ending in _ANY_VECTORING:
        if text.endswith(ending) and isinstance(obs, VmExit):
            return _unread(str(replace(obs, vectoring=None)), text) == text[:-len(ending)]
    return False


def _holds(assertion: Assertion, outcome: Outcome) -> bool:
    """`assertion` holds in `outcome` (`_ANY_VECTORING`: an exit's
    IDT-vectoring information left open)."""
    if not assertion.what.startswith(("l1@", "l2@")):
        return actual(assertion, outcome) == assertion.expected
    trace, step = assertion.what.split("@")
    seen = [obs for s, obs in getattr(outcome, trace) if s == int(step)]
    wanted = [] if assertion.expected == NOTHING else assertion.expected.split(" | ")
    return len(seen) == len(wanted) and all(_same(obs, text) for obs, text in zip(seen, wanted))


def failures(assertions: list[Assertion], outcome: Outcome) -> list[str]:
    """Each assertion `outcome` breaks: 'WHAT: expected X, got Y'."""
    return [f"{a.what}: expected {a.expected}, got {actual(a, outcome)}"
            for a in assertions if not _holds(a, outcome)]


def reference_failures(assertions: list[Assertion], result: Outcome | Allowed) -> list[str]:
    """[] if one outcome the reference allows satisfies every assertion;
    else the breaks of the allowed outcome that breaks fewest."""
    outcomes = result.outcomes if isinstance(result, Allowed) else (result,)
    return min((failures(assertions, o) for o in outcomes), key=len)


def pin(path) -> None:
    """Write (again) the `expect` / `verdict` lines of a KVM-test scenario
    from today's oracle (`fuzz.export.header`), keeping every other line of
    its description: `python -m fuzz.assertions --pin FILE...`.  Run it when
    a port's verdict on the scenario changed for a reason the commit gives."""
    from pathlib import Path

    from fuzz import export, oracle
    from fuzz.text import format_scenario, read_scenario

    scenario = read_scenario(path)
    _, _, keep = export.parse_header(scenario)
    desc = keep + export.header(oracle.compare(scenario))
    Path(path).write_text(format_scenario(Scenario(scenario.config, scenario.events, "\n".join(desc))))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fuzz.assertions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pin", nargs="+", metavar="FILE", required=True,
                    help="write each scenario's expect / verdict lines from today's oracle")
    for path in ap.parse_args(argv).pin:
        pin(path)
        print(f"pinned {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
