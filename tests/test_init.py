"""INIT signals in the KVM ports (5.11, the RFC and its repost, 6.1).

What every port must do, as the reference does:

* VMX: INIT is held in VMX root operation (L1 is a hypervisor), so it is
  latched while L1 runs (no reset, `init_pending` in the final state, also
  across KVM_GET/SET_VCPU_EVENTS and a migration) and becomes an exit with
  reason INIT and no IDT-vectoring information once L1 has entered L2,
* an INIT that arrives while an event must be re-injected is deferred
  (check_events returns -EBUSY) until that event has been delivered,
* SVM: with GIF=1 an INIT L1 does not intercept resets the vCPU (the
  scenario ends); GIF=0 holds it; with L1's INIT intercept an INIT in L2 is
  #VMEXIT(INIT) and stays pending, held by the GIF=0 the exit leaves.

Where a port differs from the reference the test pins the difference with
the KVM function behind it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import agreement

from fuzz.oracle import compare
from fuzz.text import parse_scenario, read_scenario
from impls import api
from impls.api import Delivered, Reset, VmExit
from impls.arch import Ev, EvType

SEEDS = Path(__file__).resolve().parent.parent / "corpus" / "seeds"

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream")
#: The ports built on 5.11's svm_set_gif (the RFC and its repost do not touch it).
PORTS_511_GIF = ("prepatch", "postpatch", "postpatch-v2")

GP0 = Ev(EvType.HW_EXCEPTION, 13, 0)


def run(name: str, s):
    out = api.load(name).run(s)
    return out.outcomes[0] if isinstance(out, api.Allowed) else out


def scenario(header: str, body: str):
    return parse_scenario(f"evdiff 1 {header}\n{body}")


def diverging(s, name: str) -> set[str]:
    """The fields on which `name` differs from the reference (the oracle's
    judgement, allowed outcomes included)."""
    report = compare(s, ["reference", name])
    return {d.field for d in report.divergences if name in d.impls}


def notes(out, step: int) -> list[str]:
    return [text for st, text in out.notes if st == step]


# ------------------------------------------------------------------ VMX --


@pytest.mark.parametrize("name", PORTS)
def test_vmx_init_in_l1_is_latched_not_a_reset(name):
    """vmx_apic_init_signal_blocked: VMXON and not in guest mode, so
    kvm_apic_accept_events leaves the INIT in apic.pending_events."""
    s = scenario("vendor=vmx", "init\nrun\nexception #UD\n")
    out = run(name, s)
    assert not any(isinstance(o, Reset) for _, o in out.l1)
    assert [o for _, o in out.l1] == [Delivered(1, Ev(EvType.HW_EXCEPTION, 6))]
    assert out.final is not None and out.final.init_pending is True
    assert any("INIT latched" in n or "INIT blocked" in n for n in notes(out, 1)), out.notes
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_vmx_latched_init_exits_to_l1_once_l1_enters_l2(name):
    """The INIT held since step 0 exits from L2 at the boundary after L1's
    injected #GP was delivered (vmx_check_nested_events: -EBUSY while the
    nested run is pending, then EXIT_REASON_INIT_SIGNAL)."""
    s = read_scenario(SEEDS / "init-held-in-vmx-root.txt")
    out = run(name, s)
    assert out.l2 == ((2, Delivered(2, GP0)),)
    assert out.l1 == ((3, VmExit("INIT")),)
    assert out.final.level == 1 and out.final.init_pending is False
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_vmx_init_in_l2_exits_with_reason_init_and_no_vectoring(name):
    s = scenario("vendor=vmx", "l1.intercept nmi=1\nl1.vmentry\nnmi\ninit\nrun\n")
    out = run(name, s)
    (step, exit_), *rest = out.l1
    assert step == 4 and exit_ == VmExit("INIT", None, None, None)
    # INIT ranks above the NMI L1 intercepts: the INIT exit comes first and
    # leaves the NMI pending, which L1 then takes.
    assert [str(o) for _, o in rest] == ["L1 handles NMI"]
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
@pytest.mark.parametrize("header", ["vendor=vmx ept=on", "vendor=vmx ept=off"])
def test_vmx_init_waits_for_the_reinjected_event(name, header):
    """L2's next delivery hits a fault L0 fixes (EPT violation, or a shadow
    #PF), so the #GP L1 injects must be re-injected while the INIT L1 held
    is pending: vmx_check_nested_events returns -EBUSY (an event needs
    re-injection) and the INIT exit comes only after L2 handled the #GP,
    without IDT-vectoring information."""
    s = scenario(header, "l1.vmentry\nl0.mmu_fixup\nl2.vmcall\ninit\nl1.vmentry inject=#GP(0x0)\nrun\n")
    out = run(name, s)
    assert out.l2 == ((4, Delivered(2, GP0)),)
    assert out.l1[-1] == (5, VmExit("INIT", None, None))
    assert any("-EBUSY" in n for n in notes(out, 4)), out.notes
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_vmx_init_survives_get_set_vcpu_events_and_migration(name):
    """KVM_GET_VCPU_EVENTS reports smi.latched_init, KVM_SET_VCPU_EVENTS sets
    or clears KVM_APIC_INIT from it (with KVM_VCPUEVENT_VALID_SMM, which
    get reports): a set that dropped it would lose the INIT exit."""
    s = scenario("vendor=vmx", "init\nuser.set_irq 0x20\nuser.migrate\nl1.vmentry\nrun\n")
    out = run(name, s)
    assert out.l1 == ((3, Delivered(1, Ev(EvType.EXT_INTR, 0x20))), (4, VmExit("INIT")))
    assert agreement.agrees(name, s)


# ------------------------------------------------------------------ SVM --


@pytest.mark.parametrize("name", PORTS)
def test_svm_init_in_l1_with_gif_set_resets_and_ends_the_scenario(name):
    """svm_apic_init_signal_blocked is false (GIF=1, L1's VMCB does not
    intercept INIT: init_vmcb never sets INTERCEPT_INIT), so
    kvm_apic_accept_events calls kvm_vcpu_reset."""
    s = scenario("vendor=svm", "init\nexception #UD\nrun\n")
    out = run(name, s)
    assert out.l1 == ((1, Reset(1)),)
    assert out.l2 == () and out.final is None
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_svm_init_in_l2_without_intercept_resets_in_l2(name):
    s = scenario("vendor=svm", "l1.vmentry\ninit\nexception #GP\nrun\n")
    out = run(name, s)
    assert out.l1 == ((2, Reset(2)),)
    assert out.final is None
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_svm_init_is_held_while_gif_is_clear(name):
    s = scenario("vendor=svm", "clgi\ninit\nrun\nexception #UD\n")
    out = run(name, s)
    assert not any(isinstance(o, Reset) for _, o in out.l1)
    assert out.final.init_pending is True
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_svm_init_held_at_vmrun_resets_in_l2(name):
    """VMRUN sets GIF; in 5.11 svm_set_gif makes no KVM_REQ_EVENT for an
    INIT, but nested_prepare_vmcb_save's kvm_set_rflags does, so the INIT is
    taken in L2 (a reset: L1 does not intercept it)."""
    s = scenario("vendor=svm", "clgi\ninit\nrun\nl1.vmentry\nrun\n")
    out = run(name, s)
    assert out.l1 == ((4, Reset(2)),)
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_svm_intercepted_init_in_l2_exits_and_stays_pending(name):
    """svm_check_nested_events' INIT rung: #VMEXIT(INIT) with no EXITINTINFO,
    the INIT stays in apic.pending_events, held by GIF=0 after the exit (and
    again exits on the next VMRUN)."""
    s = scenario("vendor=svm", "l1.intercept init=1\nl1.vmentry\ninit\nrun\nl1.vmentry\nrun\n")
    out = run(name, s)
    assert out.l1 == ((3, VmExit("INIT", None, None)), (5, VmExit("INIT", None, None)))
    assert out.final.level == 1 and out.final.init_pending is True
    assert agreement.agrees(name, s)


@pytest.mark.parametrize("name", PORTS)
def test_svm_intercepted_init_waits_for_the_reinjected_event(name):
    s = scenario("vendor=svm npt=on", "l1.intercept init=1\nl1.vmentry\nl0.mmu_fixup\nl2.vmcall\nclgi\ninit\n"
                                      "l1.vmentry inject=#GP(0x0)\nrun\n")
    out = run(name, s)
    assert out.l2 == ((6, Delivered(2, GP0)),)
    assert out.l1[-1] == (7, VmExit("INIT", None, None))
    assert any("-EBUSY" in n for n in notes(out, 6)), out.notes
    assert agreement.agrees(name, s)


def test_svm_stgi_takes_the_held_init_in_6_1():
    """6.1's svm_set_gif makes KVM_REQ_EVENT for a pending INIT (0bba8fc2),
    so the INIT held by GIF=0 resets the vCPU after STGI."""
    s = scenario("vendor=svm", "clgi\ninit\nrun\nstgi\nrun\n")
    assert run("upstream", s).l1 == ((4, Reset(1)),)
    assert agreement.agrees("upstream", s)


@pytest.mark.parametrize("name", PORTS_511_GIF)
def test_svm_stgi_leaves_the_held_init_pending_in_5_11(name):
    """Pinned divergence.  5.11's stgi_interception makes no request of its
    own and svm_set_gif(true) makes KVM_REQ_EVENT only for a pending SMI,
    NMI or interrupt, so kvm_apic_accept_events never runs again: the INIT
    stays latched (and would stay so until some other event).  The
    reference resets after STGI (APM 15.17); 6.1 fixed it (verdict
    fixed)."""
    s = scenario("vendor=svm", "clgi\ninit\nrun\nstgi\nrun\n")
    out = run(name, s)
    assert out.l1 == () and out.final.init_pending is True
    assert {"l1", "final.level"} <= diverging(s, name)
    report = compare(s, ["reference", "prepatch", "upstream"])
    l1 = next(d for d in report.divergences if d.field == "l1")
    assert l1.verdicts["prepatch->upstream"] == "fixed"


@pytest.mark.parametrize("name", PORTS)
def test_svm_seed_intercepted_init_then_stgi(name):
    """The seed: #VMEXIT(INIT) in every port; after STGI only 6.1 resets
    (the same svm_set_gif difference)."""
    s = read_scenario(SEEDS / "init-intercepted-svm.txt")
    out = run(name, s)
    assert out.l1[0] == (3, VmExit("INIT", None, None))
    if name in PORTS_511_GIF:
        assert len(out.l1) == 1 and out.final.init_pending is True
        assert "l1" in diverging(s, name)
    else:
        assert out.l1[1:] == ((5, Reset(1)),)
        assert agreement.agrees(name, s)


# ------------------------------------------------ a pending exception --


@pytest.mark.parametrize("name", PORTS)
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_init_drops_a_pending_exception(name, vendor):
    """Pinned divergence, in every port.  Userspace restores an exception
    L2 raised (pending, with KVM_CAP_EXCEPTION_PAYLOAD) and an INIT arrives:
    the reference delivers the #GP to L2 first (it belongs to the
    instruction already executed, INIT waits for the boundary), then exits.
    KVM's vmx/svm_check_nested_events test INIT first and only an *injected*
    event blocks it (kvm_event_needs_reinjection), so the INIT exit is taken
    at once and nested_vmx_vmexit / nested_svm_vmexit clear the exception
    queue (kvm_clear_exception_queue): the #GP is lost.  (The RFC resolves
    the pending exception in inject_pending_event, after kvm_vcpu_running's
    check_events already took the INIT; 6.1 keeps INIT above its exception
    rungs.)"""
    intercept = "l1.intercept init=1\n" if vendor == "svm" else ""
    s = scenario(f"vendor={vendor} caps=exception_payload",
                 f"{intercept}l1.vmentry\nuser.set_exception #GP ec=0x0\ninit\nrun\n")
    out = run(name, s)
    ref = run("reference", s)
    assert ref.l2 and ref.l2[0][1] == Delivered(2, GP0)
    assert out.l2 == ()
    assert [o for _, o in out.l1] == [VmExit("INIT", None, None)]
    assert "l2" in diverging(s, name)
