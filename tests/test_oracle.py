"""The oracle: comparison against allowed outcomes, signatures, verdicts, crashes."""
from fuzz import oracle
from fuzz.text import parse_scenario
from impls import api
from impls.api import Outcome


SCENARIO = parse_scenario(
    "evdiff 1 vendor=vmx ept=off\nl1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry inject=intr(0x20)\n")


def _drop_vectoring(out, scenario):
    step, exit_ = out.l1[0]
    return Outcome(((step, api.VmExit(exit_.reason, exit_.info, None, exit_.address)),), out.l2, out.shutdown,
                   out.final, out.alarms, out.livelock)


def test_agreeing_implementations_give_no_divergence(fake_impl):
    fake_impl("prepatch", lambda o, s: o)
    report = oracle.compare(SCENARIO, ["reference", "prepatch"])
    assert report.agree and report.divergences == []


def test_fixed_verdict_and_stable_signature(fake_impl):
    fake_impl("prepatch", _drop_vectoring)
    fake_impl("postpatch", lambda o, s: o)
    r1 = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"])
    r2 = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"])
    assert [d.signature for d in r1.divergences] == [d.signature for d in r2.divergences]
    (d,) = r1.divergences
    assert d.field == "l1" and d.impls == ("prepatch",) and d.step == 2
    assert d.verdicts == {"prepatch->postpatch": "fixed"}
    assert d.signature == ("vmx l1 [prepatch: EXIT EXCEPTION_NMI #PF, IDT-vectoring: none] "
                           "expected: EXIT EXCEPTION_NMI #PF, IDT-vectoring: ext-int")
    assert d.got == {"prepatch": "EXIT EXCEPTION_NMI #PF, IDT-vectoring: none"}
    assert d.expected == "EXIT EXCEPTION_NMI #PF, IDT-vectoring: ext-int 0x20"


def test_signature_ignores_error_codes_and_irrelevant_events(fake_impl):
    fake_impl("prepatch", _drop_vectoring)
    other = parse_scenario("evdiff 1 vendor=vmx ept=off\nl1.idt 0x99\nl1.intercept exceptions=#PF\n"
                           "l2.stack #PF\nl1.vmentry inject=intr(0x31)\n")
    a = oracle.compare(SCENARIO, ["reference", "prepatch"]).divergences[0].signature
    b = oracle.compare(other, ["reference", "prepatch"]).divergences[0].signature
    assert a == b


def test_regression_and_still_wrong(fake_impl):
    fake_impl("prepatch", lambda o, s: o)
    fake_impl("postpatch", _drop_vectoring)
    (d,) = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"]).divergences
    assert d.verdicts == {"prepatch->postpatch": "regression"}
    fake_impl("prepatch", _drop_vectoring)
    (d,) = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"]).divergences
    assert d.verdicts == {"prepatch->postpatch": "still-wrong"} and d.impls == ("postpatch", "prepatch")


def test_alarm_is_a_divergence_even_when_outcomes_agree(fake_impl):
    fake_impl("prepatch", lambda o, s: Outcome(o.l1, o.l2, o.shutdown, o.final, ("WARN x86.c:foo",), o.livelock))
    (d,) = oracle.compare(SCENARIO, ["reference", "prepatch"]).divergences
    assert d.field == "alarms" and "WARN x86.c:foo" in d.signature


def test_crash_is_a_finding_not_a_harness_crash(fake_impl):
    def boom(o, s):
        raise KeyError("vcpu")

    fake_impl("prepatch", boom)
    report = oracle.compare(SCENARIO, ["reference", "prepatch"])
    (d,) = report.divergences
    assert d.field.startswith("crash:KeyError@tests/test_oracle.py:")
    assert isinstance(report.results["prepatch"], oracle.Crash)


def test_allowed_outcomes_each_accepted(fake_impl):
    svm = parse_scenario("evdiff 1 vendor=svm\nl1.intercept exceptions=#DF\nl2.idt #GP\nl1.vmentry inject=#GP(0x0)\n")
    ref = api.load("reference").run(svm)
    assert isinstance(ref, api.Allowed) and len(ref.outcomes) == 2
    for i in range(2):
        fake_impl("prepatch", lambda o, s, i=i: ref.outcomes[i])
        assert oracle.compare(svm, ["reference", "prepatch"]).agree


def test_nothing_compared_after_the_reference_leaves_the_architecture(fake_impl):
    sc = parse_scenario("evdiff 1\nirq 0x21\nuser.set_irq 0x20\nuser.set_nmi injected=1\nrun\n")
    before = lambda o: tuple(x for x in o.l1 if x[0] < 2)  # noqa: E731
    fake_impl("prepatch", lambda o, s: Outcome(before(o), o.l2, 3, None, o.alarms, o.livelock))
    assert oracle.compare(sc, ["reference", "prepatch"]).agree
    fake_impl("prepatch", lambda o, s: Outcome(before(o), o.l2, 1, None, o.alarms, o.livelock))
    assert [d.field for d in oracle.compare(sc, ["reference", "prepatch"]).divergences] == ["shutdown"]


def test_final_state_is_not_compared_when_both_shut_down_on_svm(fake_impl):
    from dataclasses import replace

    sc = parse_scenario("evdiff 1 vendor=svm\nl1.stack #PF\nnmi\nrun\n")
    ref = api.load("reference").run(sc)
    assert ref.shutdown is not None and ref.final.nmi_blocked
    unmasked = lambda o, s: replace(o, final=replace(o.final, nmi_blocked=False))  # noqa: E731
    fake_impl("prepatch", unmasked)
    assert oracle.compare(sc, ["reference", "prepatch"]).agree
    # Without the shutdown on both sides the final state counts again.
    fake_impl("prepatch", lambda o, s: replace(unmasked(o, s), shutdown=None))
    assert {d.field for d in oracle.compare(sc, ["reference", "prepatch"]).divergences} == \
        {"shutdown", "final.nmi_blocked"}

    # On VMX a triple-fault exit saves the guest state: it is compared.
    vmx = parse_scenario("evdiff 1 vendor=vmx\nl1.stack #PF\nnmi\nrun\n")
    fake_impl("prepatch", unmasked)
    assert [d.field for d in oracle.compare(vmx, ["reference", "prepatch"]).divergences] == ["final.nmi_blocked"]


def test_the_closest_allowed_outcome_is_counted_as_compared():
    """Where the manuals allow two outcomes and the scenario leaves the
    architecture later, what comes after does not pick the candidate: L1
    intercepts the #DF merged in L2 during INT n's delivery (SVM: EXITINTINFO
    none or the #PF, APM 15.7.3), then userspace sets a #PF in real mode.
    Every port reports the #PF, which is allowed."""
    from fuzz.text import parse_scenario

    sc = parse_scenario("evdiff 1 vendor=svm npt=on\nl2.stack #PF\nl1.intercept exceptions=#DF\n"
                        "l1.vmentry inject=int(0x80)\nl1.mode real\nuser.set_exception #PF injected=1\n")
    report = oracle.compare(sc, ["reference", "prepatch", "upstream"])
    assert not [d for d in report.divergences if d.field == "l1"]


def test_an_incomplete_reference_judges_only_alarms_and_livelocks(fake_impl):
    """Past its cap of explored choices the reference cannot say that an
    outcome is not allowed: only what no allowed outcome has is judged."""
    from dataclasses import replace

    from impls.api import Allowed

    sc = parse_scenario("evdiff 1 vendor=vmx ept=on\nnmi\nsti\n")
    ref = api.load("reference").run(sc)
    out = ref.outcomes[0] if isinstance(ref, Allowed) else ref
    wrong = replace(out, l1=())
    alarmed = replace(out, l1=(), alarms=("WARN_ON_ONCE x",))
    partial = Allowed((out,), ("too many choices: 64 runs explored, 3 branches not",), complete=False)
    assert oracle.divergences(sc, {"reference": partial, "prepatch": wrong}) == []
    (d,) = oracle.divergences(sc, {"reference": partial, "prepatch": alarmed})
    assert d.field == "alarms"
    assert oracle.divergences(sc, {"reference": replace(partial, complete=True), "prepatch": wrong})


def test_ties_among_allowed_outcomes_go_to_the_one_agreeing_longest():
    """Two allowed outcomes each differ from the port in one field: the
    divergence is filed at the later step, where the port really left what
    the manuals allow, not at an earlier step where it did what one of them
    allows."""
    from impls.api import Allowed, Delivered
    from impls.arch.events import exception

    a, b, x, y = (Delivered(1, exception(v, None)) for v in (6, 7, 3, 4))
    out = Outcome(l1=((0, a), (2, b)))
    early = Outcome(l1=((0, x), (2, b)))
    late = Outcome(l1=((0, a), (2, y)))
    sc = parse_scenario("evdiff 1 vendor=vmx\n")
    (d,) = oracle.divergences(sc, {"reference": Allowed((early, late)), "prepatch": out})
    assert d.step == 2


def test_the_allowed_outcome_agreeing_longest_wins_over_the_one_matching_more_fields():
    """L1 leaves a single-step #DB pending for L2 (both raising it after
    the entry and not are allowed, SDM 26.6.3 not found).  The ports do not
    raise it; much later an SMI taken in HLT returns past the HLT.  The
    outcome that raised the #DB ends in a triple-fault exit and at level 1
    as the ports do, so it matched more fields, and the divergence was filed
    at the entry, with no note (one of the largest groups of shape-keyed
    findings).  The outcome the ports followed is the one agreeing longest:
    the divergence is at the SMI's step, on the branch that made it."""
    sc = parse_scenario("evdiff 1 vendor=vmx ept=on\nl2.stack #PF\nl1.vmentry pending_dbg=bs\nhlt\nsmi\nexception #PF\n")
    report = oracle.compare(sc, ["reference", "prepatch"])
    assert {d.step for d in report.divergences if d.field in ("l1", "l2")} == {4}
    (cause,) = report.causes
    assert cause.note == "vcpu_block: the halted vCPU is woken (mp_state RUNNABLE)"
