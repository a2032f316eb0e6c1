"""KVM's own event-injection tests, restated as scenarios
(`corpus/seeds/kvm-tests/`, `fuzz.assertions`).

Each scenario's `assert` lines say what a kvm-unit-tests or KVM selftests
assertion expects.  The reference must allow an outcome that satisfies them
all: a test that passes on hardware is hardware-validated evidence, so a
mismatch is a bug of the reference or of the translation, never a reason to
loosen the check.  Each KVM port must satisfy them too, unless a `kvm-fails`
line pins the later kernel commit that fixed that port's kernel; and each
implementation's oracle verdict is pinned as a regression case's is
(`fuzz.export.check`).
"""
from pathlib import Path

import pytest

from fuzz import assertions, export, oracle
from fuzz.scenario import EvdiffError, Scenario
from fuzz.seeds import SEEDS
from fuzz.text import parse_scenario, read_scenario
from impls import api

KVM_TESTS = SEEDS / "kvm-tests"
CASES = sorted(KVM_TESTS.glob("*.txt"))
#: Where the restated assertions come from (README.md of the directory).
SOURCES = ("kvm-unit-tests x86/", "selftests ")


def test_at_least_forty_kvm_test_scenarios():
    assert len(CASES) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_kvm_test_scenario(path: Path):
    scenario = read_scenario(path)
    asserts, fails = assertions.parse(scenario)
    assert asserts, f"{path.name}: no 'assert' line"
    assert any(s in scenario.description for s in SOURCES), f"{path.name}: does not name the test file it restates"
    assert set(fails) <= set(api.names()) - {oracle.REFERENCE}, f"{path.name}: kvm-fails names an unknown port"
    problems, report = export.check(path)
    assert not problems, f"{path.name}: pinned verdicts changed: {problems}"
    ref = assertions.reference_failures(asserts, report.results[oracle.REFERENCE])
    assert not ref, f"{path.name}: the reference breaks KVM's assertion (a reference or translation bug): {ref}"
    for name, result in report.results.items():
        if name == oracle.REFERENCE:
            continue
        assert not isinstance(result, oracle.Crash), f"{path.name}: {name} crashed: {result}"
        broken = assertions.failures(asserts, result)
        if name in fails:
            assert broken, f"{path.name}: {name} is pinned as failing ({fails[name]}) but passes"
        else:
            assert not broken, f"{path.name}: {name} fails KVM's test: {broken}"


def test_every_kvm_test_scenario_is_listed_in_the_readme():
    readme = (KVM_TESTS / "README.md").read_text()
    for path in CASES:
        assert path.name in readme, f"{path.name} is missing from corpus/seeds/kvm-tests/README.md"


# ------------------------------------------------------- the assertions --

_SCENARIO = "evdiff 1 vendor=vmx\nl1.intercept exceptions=#UD\nl1.vmentry\nexception #UD\n"


def _with(*lines: str) -> Scenario:
    s = parse_scenario(_SCENARIO)
    return Scenario(s.config, s.events, "\n".join(lines))


def test_assertions_hold_where_the_outcome_has_them():
    s = _with("assert l1@2: EXIT EXCEPTION_NMI #UD", "assert l2@2: nothing", "assert final.level: 1",
              "assert shutdown: none")
    asserts, _ = assertions.parse(s)
    assert len(asserts) == 4
    assert assertions.reference_failures(asserts, oracle.run_one(oracle.REFERENCE, s)) == []


@pytest.mark.parametrize("line", ["assert l1@2: L1 handles #UD", "assert l1@1: EXIT EXCEPTION_NMI #UD",
                                  "assert l2@2: L2 handles #UD", "assert final.level: 2", "assert shutdown: 2"])
def test_an_assertion_the_outcome_breaks_is_reported(line):
    asserts, _ = assertions.parse(_with(line))
    out = assertions.reference_failures(asserts, oracle.run_one(oracle.REFERENCE, _with(line)))
    assert len(out) == 1 and out[0].startswith(asserts[0].what)


def test_kvm_fails_lines_name_a_commit():
    _, fails = assertions.parse(_with("kvm-fails prepatch: 7e5b5ef8dca3 why"))
    assert fails == {"prepatch": "7e5b5ef8dca3 why"}


@pytest.mark.parametrize("line", ["assert l3@1: x", "assert final.nosuch: 1", "kvm-fails prepatch: why", "kvm-fails prepatch: fixed why"])
def test_a_malformed_line_is_refused(line):
    with pytest.raises(EvdiffError):
        assertions.parse(_with(line))


def test_pin_writes_the_expect_lines_and_keeps_the_rest(tmp_path):
    path = tmp_path / "case.txt"
    path.write_text("; prose\n; assert l1@2: EXIT EXCEPTION_NMI #UD\n; expect prepatch: stale\n" + _SCENARIO)
    assertions.pin(path)
    text = path.read_text()
    assert "; prose\n; assert l1@2: EXIT EXCEPTION_NMI #UD\n" in text and "stale" not in text
    assert export.check(path)[0] == []


def test_an_unmerged_series_is_pinned_without_a_commit():
    _, fails = assertions.parse(_with("kvm-fails postpatch-v2: unmerged (NOTES.md V1) why"))
    assert fails == {"postpatch-v2": "unmerged (NOTES.md V1) why"}


@pytest.mark.parametrize("ending, holds", [(", IDT-vectoring: any", True), (", IDT-vectoring: undefined", True),
                                           (", IDT-vectoring: #SS", False), (", IDT-vectoring: #UD", True),
                                           ("", False)])
def test_an_exit_may_leave_its_vectoring_open(ending, holds):
    s = parse_scenario("evdiff 1 vendor=vmx\nl1.intercept exceptions=#GP\nl2.idt_limit 0\nl1.vmentry\n"
                       "exception #UD\n")
    out = oracle.run_one(oracle.REFERENCE, s)
    assert str(out.l1[0][1]) == "EXIT EXCEPTION_NMI #GP(ec=0x33), IDT-vectoring: #UD"
    line = "assert l1@3: EXIT EXCEPTION_NMI #GP(ec=0x33)" + ending
    asserts, _ = assertions.parse(Scenario(s.config, s.events, line))
    assert (assertions.failures(asserts, out) == []) == holds, line


@pytest.mark.parametrize("text, holds", [("L1 handles #PF(ec=0x2)", True), ("L1 handles #PF(ec=0x3)", False),
                                         ("L1 handles #PF(ec=0x2) ret=+0", True),
                                         ("L1 handles #PF(ec=0x2) ret=+2", False)])
def test_fields_an_assertion_does_not_name_are_open(text, holds):
    from impls.api import Delivered
    from impls.arch import Ev, EvType

    class Shown(Delivered):  # an observation that prints a return address
        def __str__(self):
            return super().__str__() + " ret=+0"

    out = oracle.api.Outcome(l1=((0, Shown(1, Ev(EvType.HW_EXCEPTION, 14, 2))),))
    asserts, _ = assertions.parse(_with(f"assert l1@0: {text}"))
    assert (assertions.failures(asserts, out) == []) == holds


@pytest.mark.parametrize("text, holds", [("EXIT EXTERNAL_INTERRUPT", True),
                                         ("EXIT EXTERNAL_INTERRUPT, activity HLT", True),
                                         ("EXIT VMCALL", False)])
def test_an_exits_activity_state_is_open_unless_named(text, holds):
    s = parse_scenario("evdiff 1 vendor=vmx\nl1.intercept intr=1\nl1.vmentry\nhlt\nirq 0x30\nrun\n")
    out = oracle.run_one(oracle.REFERENCE, s)
    assert str(out.l1[0][1]) == "EXIT EXTERNAL_INTERRUPT, activity HLT"
    asserts, _ = assertions.parse(Scenario(s.config, s.events, f"assert l1@{out.l1[0][0]}: {text}"))
    assert (assertions.failures(asserts, out) == []) == holds


@pytest.mark.parametrize("text, holds", [("L2 handles INT 0x20 ret=+0", True), ("L2 handles INT 0x20", True),
                                         ("L2 handles INT 0x20 ret=+2", False)])
def test_a_zero_return_address_is_the_unprinted_one(text, holds):
    s = parse_scenario("evdiff 1 vendor=svm\nl1.vmentry inject=int(0x20) insn_len=0\n")
    out = oracle.run_one(oracle.REFERENCE, s)
    assert str(out.l2[0][1]) == "L2 handles INT 0x20"
    asserts, _ = assertions.parse(Scenario(s.config, s.events, f"assert l2@0: {text}"))
    assert (assertions.failures(asserts, out) == []) == holds
