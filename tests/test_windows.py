"""L1's interrupt controls for L2, `l1.controls` (issue 14): VMX
interrupt-window and NMI-window exiting, SVM V_INTR_MASKING, V_IRQ and the
VINTR intercept.

The language carries them in both forms with one meaning for the other
vendor's flags; the reference gives the manuals' rules (SDM 25.2, 26.6.5-6,
26.2.1.1; APM 15.21.1, 15.21.4, 15.21.6); the simulated CPU takes virtual
interrupts; each port's path (vmcs12's controls merged into vmcs02 and
reflected by nested_vmx_l1_wants_exit, nested_vmx_check_nmi_controls,
vmcb12's int_ctl through nested_prepare_vmcb_control / sync /
nested_svm_vmexit, svm_set_vintr / svm_clear_vintr) is exercised, with the
divergences it shows pinned.
"""
from __future__ import annotations

import pytest

import agreement

from fuzz import binary, seeds
from fuzz.scenario import SPEC_BY_KIND, Config, Event, Scenario, ScenarioError, event
from fuzz.text import format_scenario, parse_scenario
from impls import api
from impls.api import Delivered, EntryFailed, VmExit
from impls.arch import Ev, EvType
from impls.arch import svm as asvm
from impls.hw import Cpu, Environment, Recorder
from impls.hw import cpu as hw

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream", "current")
SVM_511 = ("postpatch", "postpatch-v2", "prepatch")
CONTROLS = ("intr_window", "nmi_window", "v_intr_masking", "v_irq", "vintr", "hlt")
VIRQ = Delivered(2, Ev(EvType.EXT_INTR, asvm.L1_V_INTR_VECTOR))
INTR_WINDOW, NMI_WINDOW = VmExit("INTERRUPT_WINDOW"), VmExit("NMI_WINDOW")


def scenario(vendor: str, body: str):
    return parse_scenario(f"evdiff 1 vendor={vendor}\n{body}")


def outcomes(name: str, s) -> list:
    out = api.load(name).run(s)
    return list(out.outcomes) if isinstance(out, api.Allowed) else [out]


def traces(name: str, s) -> list:
    """Each allowed outcome's (L1 trace, L2 trace), steps included."""
    return [(list(o.l1), list(o.l2)) for o in outcomes(name, s)]


def only(name: str, s):
    (t,) = traces(name, s)
    return t


# -------------------------------------------------------------- language --


def test_controls_go_after_the_first_release_kinds_with_false_defaults_encoded_as_zero():
    kinds = [s.kind for s in binary.SPECS]
    assert kinds.index("l1.controls") > kinds.index("icebp")
    assert [p.name for p in SPEC_BY_KIND["l1.controls"].params] == list(CONTROLS)
    assert binary.encode_record(event("l1.controls"))[1:] == bytes(binary.RECORD - 1)


@pytest.mark.parametrize("vendor,line", [("vmx", "l1.controls intr_window=1 nmi_window=1"),
                                         ("svm", "l1.controls v_intr_masking=1 v_irq=1 vintr=1")])
def test_controls_round_trip_in_both_forms(vendor, line):
    s = scenario(vendor, line + "\n")
    text = format_scenario(s)
    assert text.splitlines()[-1] == line
    assert parse_scenario(text) == s and binary.decode(binary.encode(s)) == s


@pytest.mark.parametrize("vendor,flag", [("vmx", "v_irq"), ("vmx", "vintr"), ("vmx", "v_intr_masking"),
                                         ("svm", "intr_window"), ("svm", "nmi_window")])
def test_the_other_vendors_flags_are_refused_in_text_and_read_as_0_in_binary(vendor, flag):
    with pytest.raises(ScenarioError, match=f"{flag}=1 is not a {vendor} control"):
        scenario(vendor, f"l1.controls {flag}=1\n")
    raw = Event("l1.controls", tuple(p == flag for p in CONTROLS))
    s = Scenario(Config(vendor), (raw,))
    assert s.events == (event("l1.controls"),)
    assert binary.decode(binary.encode(Scenario(Config(vendor), (event("l1.controls"),)))[:1]
                         + binary.encode_record(raw)) == s


def test_dictionary_holds_the_controls():
    assert "kind_l1_controls=" in seeds.dictionary()
    assert seeds.DICTIONARY.read_text() == seeds.dictionary()


# ------------------------------------------------------- reference: VMX --


def test_reference_interrupt_window_exits_right_after_entry():
    """SDM 25.2 / 26.6.5: with IF=1 and no blocking the exit occurs
    immediately after VM entry, before any L2 instruction."""
    s = scenario("vmx", "l1.controls intr_window=1\nl1.vmentry\nl2.vmcall\n")
    assert only("reference", s) == ([(1, INTR_WINDOW)], [])


def test_reference_interrupt_window_waits_for_sti_blocking_to_end():
    """SDM 25.2: no exit while STI blocks interrupts: the instruction after
    STI runs (here L2's VMCALL exits), the window is open after it (L1
    skipped the VMCALL)."""
    s = scenario("vmx", "l1.vmentry\ncli\nl2.vmcall\nl1.controls intr_window=1\nl1.vmentry\nsti\nl2.vmcall\n"
                        "l1.vmentry\n")
    l1, _ = only("reference", s)
    assert l1 == [(2, VmExit("VMCALL")), (6, VmExit("VMCALL")), (7, INTR_WINDOW)]


def test_reference_interrupt_window_beats_a_pending_external_interrupt():
    """SDM 25.2 priority: interrupt-window exits before external interrupts;
    the interrupt stays pending."""
    s = scenario("vmx", "l1.vmentry\nl2.vmcall\nl1.controls intr_window=1\nirq 0x30\nl1.vmentry\n")
    (out,) = outcomes("reference", s)
    assert [o for _, o in out.l1] == [VmExit("VMCALL"), INTR_WINDOW] and out.l2 == ()
    assert out.final.irq_pending == (0x30,)


#: An NMI pending for L2 while L1 is blocked by NMI (after an NMI exit,
#: SDM 27.5.5), so that it waits for the next entry.
BLOCKED_NMI = "l1.intercept nmi=1\nl1.vmentry\nnmi\nrun\nnmi\n"
NMI_WINDOW_OVER_NMI = BLOCKED_NMI + "l1.controls nmi_window=1\nl1.vmentry\nl2.vmcall\n"


def test_reference_nmi_exit_beats_the_interrupt_window():
    """SDM 25.2: NMIs (here NMI exiting) take priority over the window."""
    s = scenario("vmx", BLOCKED_NMI + "l1.controls intr_window=1\nl1.vmentry\nl2.vmcall\n")
    l1, _ = only("reference", s)
    assert l1[-1] == (7, VmExit("EXCEPTION_NMI", Ev(EvType.NMI, 2)))
    for port in PORTS:
        assert agreement.agrees(port, s), port


def test_reference_nmi_window_beats_a_pending_nmi():
    """SDM 25.2: NMI-window exits take priority over NMIs (here NMI
    exiting); the NMI stays pending, held by L1's blocking by NMI after its
    NMI exit (SDM 27.5.5)."""
    (out,) = outcomes("reference", scenario("vmx", NMI_WINDOW_OVER_NMI))
    assert [o for _, o in out.l1] == [VmExit("EXCEPTION_NMI", Ev(EvType.NMI, 2)), NMI_WINDOW]
    assert out.l1[-1][0] == 7 and out.final.nmi_pending == 1


def test_reference_nmi_window_under_sti_blocking_is_a_choice():
    """SDM 25.2: a processor may also hold the NMI-window exit under STI
    blocking: both are allowed.  L2's STI blocking survives an
    external-interrupt exit taken in its shadow (itself a choice, SDM
    25.4.1) into the next entry."""
    s = scenario("vmx", "l1.intercept nmi=1 intr=1\nl1.vmentry\ncli\nsti\nirq 0x30\nl2.vmcall\n"
                        "l1.controls nmi_window=1\nl1.vmentry\nl2.vmcall\n")
    out = api.load("reference").run(s)
    assert "SDM 25.2: NMI-window exit under STI blocking" in out.choices
    after_shadow_exit = {o.l1[-1] for o in out.outcomes if o.l1[0] == (5, VmExit("EXTERNAL_INTERRUPT"))}
    assert (8, NMI_WINDOW) in after_shadow_exit and len(after_shadow_exit) > 1


@pytest.mark.parametrize("body", [
    "l1.vmentry\nl2.vmcall\nl1.controls intr_window=1\nl1.vmentry activity=hlt\n",
    "l1.intercept nmi=1\nl1.vmentry\nl2.vmcall\nl1.controls nmi_window=1\nl1.vmentry activity=hlt\n",
])
def test_reference_window_exit_from_hlt_saves_either_activity_state(body):
    """SDM 26.6.5-6: a window exit "wakes" the HLT state a VM entry left,
    and no section says which activity state the exit saves (27.1 says HLT
    only for events and MTF): both allowed; the ports' ACTIVE agrees."""
    s = scenario("vmx", body)
    out = api.load("reference").run(s)
    assert any("window exit that wakes HLT" in c for c in out.choices)
    assert {o.l1[-1][1].halted for o in out.outcomes} == {True, False}
    for port in PORTS:
        assert [o.l1[-1][1].halted for o in outcomes(port, s)] == [False]


def test_reference_nmi_window_needs_virtual_nmis():
    """SDM 26.2.1.1: NMI-window exiting without virtual NMIs fails the
    entry, VMfailValid(7); every port agrees (nested_vmx_check_nmi_controls)."""
    s = scenario("vmx", "l1.controls nmi_window=1\nl1.vmentry\n")
    assert only("reference", s) == ([(1, EntryFailed("VMfailValid(7)"))], [])
    for port in PORTS:
        assert agreement.agrees(port, s), port


# ------------------------------------------------------- reference: SVM --


def test_reference_virtual_interrupt_is_taken_when_l2_enables_interrupts():
    """APM 15.21.4: V_IRQ is taken with IF=1 and no interrupt shadow, through
    L2's IDT with V_INTR_VECTOR; it is cleared, so a later entry does not
    take it again."""
    s = scenario("svm", "l1.vmentry\ncli\nl2.vmcall\nl1.controls v_irq=1\nl1.vmentry\nsti\nsti\nl2.vmcall\n"
                        "l1.vmentry\nsti\n")
    l1, l2 = only("reference", s)
    assert l2 == [(7, VIRQ)]


def test_reference_vintr_intercept_exits_and_leaves_v_irq_set():
    """APM 15.21.6 / 15.21.4: the VINTR intercept exits just before the
    virtual interrupt would be taken; V_IRQ is cleared only on dispatch, so
    the next entry exits again."""
    s = scenario("svm", "l1.controls v_irq=1 vintr=1\nl1.vmentry\nl1.vmentry\nl1.controls v_irq=1\nl1.vmentry\n")
    assert only("reference", s) == ([(1, VmExit("VINTR")), (2, VmExit("VINTR"))], [(4, VIRQ)])


def test_reference_physical_interrupt_before_the_virtual_one():
    """APM 15.21.4: physical interrupts take priority over virtual ones."""
    s = scenario("svm", "l1.vmentry\ncli\nl2.vmcall\nl1.controls v_irq=1\nirq 0x30\nl1.vmentry\nsti\nsti\n"
                        "sti\nsti\n")
    _, l2 = only("reference", s)
    assert [o for _, o in l2] == [Delivered(2, Ev(EvType.EXT_INTR, 0x30)), VIRQ]


def test_reference_v_intr_masking_without_the_intr_intercept():
    """APM 15.21.1: with V_INTR_MASKING L1's IF masks physical interrupts,
    L2's only virtual ones: an interrupt reaches L2 with L2's IF=0."""
    s = scenario("svm", "l1.controls v_intr_masking=1\nl1.vmentry\ncli\nirq 0x30\n")
    assert only("reference", s) == ([], [(4, Delivered(2, Ev(EvType.EXT_INTR, 0x30)))])
    plain = scenario("svm", "l1.vmentry\ncli\nirq 0x30\n")
    assert only("reference", plain) == ([], [])


# ---------------------------------------------------------- the hardware --


@pytest.mark.parametrize("prio,tpr,ign,taken", [(0xF, 0, False, True), (0x8, 0x8, False, False),
                                                (0x8, 0xA, True, True), (0, 0, False, False)])
def test_cpu_takes_a_virtual_interrupt_by_its_priority(prio, tpr, ign, taken):
    """APM 15.21.4: V_INTR_PRIO above V_TPR, or V_IGN_TPR; V_IRQ is cleared
    when it is dispatched (kvm-unit-tests svm virq_inject: "V_IRQ not
    cleared on VMEXIT after firing")."""
    rec = Recorder()
    cpu = Cpu("svm", True, rec, Environment())
    vmcb = hw.Vmcb(level=2)
    vmcb.int_ctl = hw.V_IRQ_MASK | prio << hw.V_INTR_PRIO_SHIFT | tpr | (hw.V_IGN_TPR_MASK if ign else 0)
    vmcb.int_vector = 0x41
    cpu.svm_run(vmcb)
    assert (rec.l2 == [(0, Delivered(2, Ev(EvType.EXT_INTR, 0x41)))]) is taken
    assert bool(vmcb.int_ctl & hw.V_IRQ_MASK) is not taken


# ------------------------------------------------------------ the ports --


@pytest.mark.parametrize("body", [
    "l1.controls intr_window=1\nl1.vmentry\nl2.vmcall\n",
    "l1.vmentry\ncli\nl2.vmcall\nl1.controls intr_window=1\nl1.vmentry\nsti\nl2.vmcall\n",
    "l1.intercept nmi=1\nl1.controls nmi_window=1\nl1.vmentry\nl2.vmcall\nnmi\nl1.vmentry\n",
    "l1.vmentry\ncli\nl2.vmcall\nl1.controls intr_window=1\nl1.vmentry\nuser.migrate\nsti\nl2.vmcall\n",
])
def test_ports_reflect_l1s_window_exits(body):
    """prepare_vmcs02_early merges vmcs12's window controls into vmcs02,
    nested_vmx_l1_wants_exit gives their exits to L1 (and a migration keeps
    them: prepare_vmcs02_early again)."""
    s = scenario("vmx", body)
    for port in PORTS:
        assert agreement.agrees(port, s), port


@pytest.mark.parametrize("body", [
    "l1.controls v_irq=1\nl1.vmentry\nl2.vmcall\nl1.vmentry\nl2.vmcall\n",
    "l1.controls v_irq=1 vintr=1\nl1.vmentry\nl1.vmentry\n",
    "l1.vmentry\ncli\nl2.vmcall\nl1.controls v_irq=1\nl1.vmentry\nuser.migrate\nsti\nsti\n",
    "l1.controls v_intr_masking=1\nl1.vmentry\ncli\nirq 0x30\nl2.vmcall\n",
])
def test_ports_carry_l1s_int_ctl(body):
    """nested_prepare_vmcb_control copies V_IRQ / V_INTR_MASKING into
    vmcb02, the CPU takes or intercepts the virtual interrupt, the sync and
    nested_svm_vmexit write V_IRQ back to vmcb12 (a taken interrupt is not
    taken again), svm_interrupt_blocked masks with L1's IF."""
    s = scenario("svm", body)
    for port in PORTS:
        assert agreement.agrees(port, s), port


VECTOR_0 = ("l1.vmentry\ncli\nl2.vmcall\nl1.controls v_irq=1\nirq 0x30\nl1.vmentry\nsti\nsti\nsti\nsti\n")


def test_511_svm_clear_vintr_leaves_l1s_virtual_interrupt_with_vector_0():
    """KVM's interrupt window for L2 (svm_set_vintr: vector 0) over L1's
    V_IRQ: 5.11's svm_clear_vintr puts L1's V_IRQ back but not its vector, so
    L2 takes vector 0; 6.1 restores int_vector (and 6.18 keeps it)."""
    s = scenario("svm", VECTOR_0)
    _, l2 = only("reference", s)
    assert [o for _, o in l2][-1] == VIRQ
    for port in SVM_511:
        (out,) = outcomes(port, s)
        assert out.l2[-1][1] == Delivered(2, Ev(EvType.EXT_INTR, 0))
        assert any("int_vector not restored" in n for _, n in out.notes)
    for port in ("upstream", "current"):
        assert agreement.agrees(port, s), port


def test_61_dummy_v_irq_reaches_l2_under_l1s_v_intr_masking():
    """6.1's svm_set_vintr arms its dummy V_IRQ even where recalc_intercepts
    dropped the VINTR intercept (L1 uses V_INTR_MASKING, its IF=0): the CPU
    delivers vector 0 into L2.  6.18 gives up there."""
    s = scenario("svm", "l1.intercept intr=1\ncli\nl1.vmentry\nirq 0x20\nrun\n")
    (out,) = outcomes("upstream", s)
    assert [o for _, o in out.l2] == [Delivered(2, Ev(EvType.EXT_INTR, 0))]
    assert agreement.agrees("current", s)


def test_every_port_injects_an_interrupt_the_window_exit_should_beat():
    """KVM injects L1's pending interrupt into L2 through VM entry, which the
    CPU delivers before looking at vmcs02's interrupt window (SDM 26.6.5);
    on a CPU the window exit comes first (SDM 25.2).  Every tree."""
    s = scenario("vmx", "l1.vmentry\nl2.vmcall\nl1.controls intr_window=1\nirq 0x30\nl1.vmentry\n")
    for port in PORTS:
        (out,) = outcomes(port, s)
        assert [o for _, o in out.l2] == [Delivered(2, Ev(EvType.EXT_INTR, 0x30))], port
        assert not agreement.agrees(port, s)


def test_every_port_makes_the_nmi_exit_the_nmi_window_should_beat():
    """vmx_check_nested_events turns the pending NMI into L1's NMI exit
    without looking at vmcs12's NMI-window exiting, which on a CPU comes
    first (SDM 25.2).  Every tree."""
    s = scenario("vmx", NMI_WINDOW_OVER_NMI)
    for port in PORTS:
        (out,) = outcomes(port, s)
        assert out.l1[-1] == (7, VmExit("EXCEPTION_NMI", Ev(EvType.NMI, 2))), port


def test_every_port_hands_its_own_vintr_exit_to_an_l1_that_intercepts_vintr():
    """KVM's interrupt window for L2 (svm_set_vintr) exits with VINTR, and
    nested_svm_intercept gives the exit to L1, which intercepts VINTR but
    left no V_IRQ: a #VMEXIT(VINTR) no virtual interrupt caused (APM
    15.21.6), where the interrupt should reach L2.  Every tree."""
    s = scenario("svm", "irq 0x20\nl1.controls vintr=1\nnmi\nl1.vmentry inject=#UD\nsti\n")
    _, l2 = only("reference", s)
    assert l2[-1] == (5, Delivered(2, Ev(EvType.EXT_INTR, 0x20)))
    for port in PORTS:
        (out,) = outcomes(port, s)
        assert out.l1[-1] == (5, VmExit("VINTR")), port
