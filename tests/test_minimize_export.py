"""Minimiser and regression export, with a test double that loses the
IDT-vectoring info of an exit whenever L1 had injected an interrupt."""
from dataclasses import replace

import pytest

from fuzz import oracle
from fuzz.cli import main
from fuzz.export import check, export, parse_header
from fuzz.minimize import minimize
from fuzz.scenario import EvdiffError
from fuzz.text import format_scenario, parse_scenario, read_scenario
from impls import api
from impls.api import Outcome, VmExit


def lose_vectoring(out, scenario):
    l1 = tuple((s, VmExit(o.reason, o.info, None, o.address) if isinstance(o, VmExit) else o) for s, o in out.l1)
    return Outcome(l1, out.l2, out.shutdown, out.final, out.alarms, out.livelock)


LONG = """\
evdiff 1 vendor=vmx ept=off caps=exception_payload,triple_fault_event
l1.idt 0x40
irq 0x33
nmi
run
iret
l1.intercept exceptions=#GP,#PF,#DF nmi=0 pf_mask=0x4 pf_match=0x4
cli
sti
user.migrate
l2.idt 0x30 gate=bad_type
l2.stack #PF
l0.mmu_fixup
l1.vmentry inject=intr(0x30)
l0.immediate_exit
run
stgi
irq 0x21
iret
user.migrate
nmi
run
"""


@pytest.fixture
def buggy(fake_impl, monkeypatch):
    """Only the reference and the double: other registered ports stay out."""
    fake_impl("prepatch", lose_vectoring)
    monkeypatch.setattr(api, "names", lambda: ["reference", "prepatch"])


def test_minimises_to_the_few_events_that_matter(buggy):
    sc = parse_scenario(LONG)
    assert len(sc.events) >= 20
    sig = oracle.compare(sc).causes[0].signature
    res = minimize(sc)
    assert res.signature == sig and sig in {c.signature for c in oracle.compare(res.scenario).causes}
    text = format_scenario(res.scenario, with_description=False)
    assert text.splitlines()[1:] == ["l1.intercept exceptions=#GP", "l2.idt 0x30 gate=bad_type",
                                     "l1.vmentry inject=intr(0x30)"]
    assert res.scenario.config.caps == frozenset() and res.scenario.config.npt


def test_result_is_one_minimal(buggy):
    res = minimize(parse_scenario(LONG))
    sc, sig = res.scenario, res.signature
    for i in range(len(sc.events)):
        fewer = replace(sc, events=sc.events[:i] + sc.events[i + 1:])
        assert sig not in {c.signature for c in oracle.compare(fewer).causes}


def test_refuses_a_scenario_without_divergence(buggy):
    with pytest.raises(ValueError, match="no divergence"):
        minimize(parse_scenario("evdiff 1\nrun\n"))


def test_cli_never_overwrites_input(buggy, tmp_path, capsys):
    src = tmp_path / "case.txt"
    src.write_text(LONG)
    assert main(["minimize", str(src), "-o", str(src)]) == 2
    assert src.read_text() == LONG
    assert main(["minimize", str(src)]) == 0
    out = capsys.readouterr().out
    assert "21 -> 3 events" in out
    assert len(read_scenario(tmp_path / "case.min.txt").events) == 3 and src.read_text() == LONG


def test_export_records_expectations_and_refuses_overwrite(buggy, tmp_path):
    sc = minimize(parse_scenario(LONG)).scenario
    path = export(sc, "lost-vectoring", tmp_path)
    exp, ver, _ = parse_header(read_scenario(path))
    assert exp["reference"] == [] and exp["prepatch"] == ["l1 = EXIT EXCEPTION_NMI #GP, IDT-vectoring: none"]
    assert check(path)[0] == []
    with pytest.raises(EvdiffError, match="exists"):
        export(sc, "lost-vectoring", tmp_path)


def test_export_check_fails_when_the_port_changes(fake_impl, tmp_path):
    fake_impl("prepatch", lose_vectoring)
    names = ["reference", "prepatch"]
    path = export(minimize(parse_scenario(LONG), names=names).scenario, "case", tmp_path, names)
    fake_impl("prepatch", lambda out, sc: out)  # "fixed"
    problems, _ = check(path)
    assert problems == ["prepatch: expected ['l1 = EXIT EXCEPTION_NMI #GP, IDT-vectoring: none'], now agrees"]
