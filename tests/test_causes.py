"""Root causes: one per implementation's first deviation, blamed on the KVM
branch it noted, grouped across implementations; two causes in one scenario
are two findings, never a combined one."""
from pathlib import Path

import pytest

from fuzz import causes, findings, known, oracle
from fuzz.text import parse_scenario, read_scenario

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "corpus" / "regressions"


def test_blame_takes_the_first_note_at_the_step_else_the_last_before():
    notes = ((0, "KVM_SET_VCPU_EVENTS: dropped"), (2, "kvm_multiple_exception: vector 14 replaces vector 13"),
             (2, "nested_svm_inject_exception_vmexit: pending vector 14 to L1"), (5, "later: x"))
    assert causes.blame(notes, 2).startswith("kvm_multiple_exception")
    assert causes.blame(notes, 1) == "KVM_SET_VCPU_EVENTS: dropped"
    assert causes.blame(notes, None) == "later: x"
    assert causes.blame((), 3) is None
    assert causes.function_of("kvm_vcpu_reset(init_event=True): INIT") == "kvm_vcpu_reset"
    assert causes.branch("vector 14 replaces vector 0x1f in L2") == "vector N replaces vector N in LN"


def test_blame_passes_over_progress_notes_to_the_deciding_branch():
    notes = ((1, "kvm_deliver_pending_exception: vector 14 committed as the injected exception"),
             (1, "kvm_deliver_pending_exception: vector 14 on top of injected #DF: KVM_REQ_TRIPLE_FAULT"),
             (1, "vcpu_enter_guest: a request is pending after injection: entry cancelled"))
    assert "KVM_REQ_TRIPLE_FAULT" in causes.blame(notes, 1)
    assert causes.blame(notes[:1], 1) == notes[0][1]  # nothing else at the step: progress it is


def test_two_ports_with_two_causes_in_one_scenario_are_two_causes():
    """Userspace sets an injected #DF and a pending #PF: the February RFC
    keeps both slots and merges them into a triple fault (its cause); the
    April repost drops the exception (another): the scenario is filed under
    both, never under one combined signature."""
    report = oracle.compare(read_scenario(CASES / "set-events-keeps-slot-vmx.txt"))
    by_impls = {c.impls: c for c in report.causes}
    assert set(by_impls) == {("postpatch",), ("postpatch-v2",)}
    assert by_impls[("postpatch-v2",)].function == "KVM_SET_VCPU_EVENTS"
    assert by_impls[("postpatch",)].function == "kvm_deliver_pending_exception"
    assert all("postpatch" not in c.signature for c in report.causes)  # no implementation in a key


def test_one_cause_reached_through_different_events_is_one_signature():
    """The repost's set-events drop, with an exception and with a #PF, on
    each vendor: one signature a vendor."""
    sigs = {}
    for case in ("v2-set-events-drops-exception", "v2-set-events-drops-pf"):
        for vendor in ("vmx", "svm"):
            (c,) = oracle.compare(read_scenario(CASES / f"{case}-{vendor}.txt")).causes
            sigs.setdefault(vendor, set()).add(c.signature)
    assert all(len(s) == 1 for s in sigs.values()) and sigs["vmx"] != sigs["svm"]


def test_implementations_sharing_a_cause_are_one_entry_with_their_verdicts(tmp_path):
    report = oracle.compare(read_scenario(CASES / "df-then-benign-vmx.txt"))
    by_impls = {c.impls: c for c in report.causes}
    assert set(by_impls) == {("current", "prepatch", "upstream"), ("postpatch", "postpatch-v2")}
    shared = by_impls[("current", "prepatch", "upstream")]
    assert shared.function == "kvm_multiple_exception"
    assert shared.verdicts["prepatch->upstream"] == "still-wrong"
    store = findings.FindingStore(tmp_path)
    assert sorted(store.record(report)) == sorted(c.signature for c in report.causes)
    assert {tuple(f.meta["impls"]) for f in store.findings()} == set(by_impls)


def test_a_finding_gathers_every_implementation_seen_with_its_cause(tmp_path):
    """The same cause first seen in 5.11 alone, then in 5.11 and 6.1."""
    store = findings.FindingStore(tmp_path)
    sc = read_scenario(CASES / "df-then-benign-svm.txt")
    store.record(oracle.compare(sc, ["reference", "prepatch"]))
    store.record(oracle.compare(sc, ["reference", "prepatch", "upstream"]))
    store.flush()
    f = next(f for f in store.findings() if f.meta["function"] == "kvm_multiple_exception")
    assert f.meta["impls"] == ["prepatch", "upstream"] and f.hits == 2
    assert f.meta["verdicts"]["prepatch->upstream"] == "still-wrong"  # not the first scenario's "fixed"


def test_agreeing_scenarios_have_no_causes():
    sc = parse_scenario("evdiff 1 vendor=vmx ept=on\nirq 0x20\n")
    assert oracle.compare(sc).causes == []


def _cases_named(reason: str) -> list[str]:
    return [c.strip() for c in reason.rsplit("[", 1)[1].rstrip("]").split(",")]


@pytest.mark.parametrize("signature, reason", sorted(known.load().items()))
def test_every_known_entry_is_shown_by_the_case_it_names(signature, reason):
    """The known list is keyed on causes: each entry's regression case(s)
    still show that cause, so an entry cannot outlive what it explains."""
    shown = set()
    for case in _cases_named(reason):
        path = CASES / f"{case}.txt"
        assert path.exists(), f"{case}: no such regression case"
        shown |= {c.signature for c in oracle.compare(read_scenario(path)).causes}
    assert signature in shown


def test_a_wrong_shutdown_is_blamed_on_the_branch_that_requested_the_triple_fault():
    """The RFC shuts down on a triple fault in L2 (seed bug class B) after a
    chain of notes (#PF replaces the injected event, #PF on #PF is a #DF):
    the cause is the branch that requested KVM_REQ_TRIPLE_FAULT, whatever
    event L1 injected first."""
    sigs = set()
    for inject in ("#DB", "intr(0x20)", "#PF(0x0)"):
        sc = parse_scenario(f"evdiff 1 vendor=svm npt=off\nl2.stack #PF\nl1.vmentry inject={inject}\n")
        sigs |= {c.signature for c in oracle.compare(sc, ["reference", "postpatch"]).causes}
    assert sigs == {"svm kvm_deliver_pending_exception: vector N on top of injected #DF: KVM_REQ_TRIPLE_FAULT"}
