"""The reference model against the manuals: delivery, #DF, nesting, choices.

Each test states the expected observation and the rule it comes from.
"""

import pytest

from fuzz.text import parse_scenario
from impls.api import Allowed, Delivered, EntryFailed, Undefined, VmExit, load, matches
from impls.arch.events import Ev, EvType, exception, ext_intr


def run(text):
    return load("reference").run(parse_scenario(text))


def obs(out, level):
    return [o for _, o in (out.l1 if level == 1 else out.l2)]


def test_plain_exception_is_delivered_with_its_error_code():
    out = run("evdiff 1\nexception #GP ec=0x18\n")
    assert obs(out, 1) == [Delivered(1, exception(13, 0x18))]
    assert out.final.interrupts_enabled is False  # interrupt gate clears IF (SDM 6.12.1.2)


def test_contributory_twice_is_a_double_fault():
    out = run("evdiff 1\nl1.idt #GP\nexception #GP\n")
    # #DF pushes error code 0 and an undefined return address (SDM 6.15).
    assert obs(out, 1) == [Delivered(1, exception(8, 0), Undefined("SDM 6.15"))]


def test_pf_cr2_written_even_when_delivery_faults():
    out = run("evdiff 1\nl1.idt #PF\nexception #PF ec=0x2 cr2=0x4000\n")
    assert obs(out, 1) == [Delivered(1, exception(8, 0), Undefined("SDM 6.15"))]
    assert out.final.cr2 == 0x4000


def test_triple_fault_in_l1_is_a_shutdown_and_stops_the_vcpu():
    out = run("evdiff 1\nl1.stack #PF\nexception #UD\nnmi\nrun\n")
    assert out.shutdown == 1
    assert obs(out, 1) == []


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("events, field, value", [
    ("user.set_nmi\nmov_ss", "interrupt_shadow", False),  # no MOV-SS shadow
    ("cli\nuser.set_nmi\nsti", "interrupt_shadow", False),  # no STI shadow ...
    ("cli\nuser.set_nmi\nsti", "interrupts_enabled", False),  # ... and IF still 0
    ("user.set_irq 0x20\ncli", "interrupts_enabled", True),  # IF still 1
    ("user.set_nmi\niret", "nmi_blocked", True),  # NMIs still blocked
])
def test_an_instruction_whose_boundary_shuts_down_does_not_execute(vendor, events, field, value):
    """The NMI / interrupt in flight meets #PF pushing its frame, then #DF,
    then #PF again: a triple fault at the instruction's boundary (SDM 6.15).
    The vCPU is shut down, so the instruction never executes."""
    out = run(f"evdiff 1 vendor={vendor}\nl1.stack #PF\n{events}\n")
    assert out.shutdown == len(events.splitlines())
    assert getattr(out.final, field) is value


def test_real_mode_pushes_no_error_code():
    out = run("evdiff 1\nl1.mode real\nexception #GP ec=0x8\n")
    assert obs(out, 1) == [Delivered(1, Ev(EvType.HW_EXCEPTION, 13))]


def test_nmi_before_interrupt_and_nmi_blocking():
    out = run("evdiff 1\nirq 0x20\nnmi\nrun\nnmi\niret\n")
    # Table 6-2: NMI first; its interrupt gate clears IF, the IRQ waits.  The
    # second NMI waits for IRET (SDM 6.7.1).
    assert [str(o) for o in obs(out, 1)] == ["L1 handles NMI", "L1 handles NMI"]
    assert [s for s, _ in out.l1] == [2, 5]  # after IRET (step 4), at the next boundary
    assert out.final.irq_pending == (0x20,)


def test_sti_shadow_allows_both_nmi_timings():
    """SDM2 STI: NMIs may be blocked for one instruction after STI."""
    out = run("evdiff 1\ncli\nsti\nnmi\ncli\n")
    assert isinstance(out, Allowed)
    steps = sorted(o.l1[0][0] for o in out.outcomes)
    assert steps == [3, 4]


@pytest.mark.parametrize("vendor, reason", [("vmx", "EXCEPTION_NMI"), ("svm", "EXCP #PF")])
def test_nested_fault_during_injection_exits_with_vectoring(vendor, reason):
    """SDM 26.5.1.2 / 27.2.3; APM 15.7.2 / 15.20."""
    out = run(f"evdiff 1 vendor={vendor}\nl1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry inject=intr(0x20)\n")
    assert obs(out, 1) == [VmExit(reason, exception(14, 2), ext_intr(0x20), 0xFFFFF000)]
    assert out.final.level == 1


def test_merged_double_fault_exit_vmx_has_no_vectoring():
    """SDM 27.2.3 exclusion 2."""
    out = run("evdiff 1\nl1.intercept exceptions=#DF\nl2.idt #GP\nl1.vmentry inject=#GP(0x0)\n")
    assert obs(out, 1) == [VmExit("EXCEPTION_NMI", exception(8, 0), None)]


def test_merged_double_fault_exit_svm_allows_both():
    """MANUALS open question 1: APM 15.7.3 leaves EXITINTINFO open."""
    out = run("evdiff 1 vendor=svm\nl1.intercept exceptions=#DF\nl2.idt #GP\nl1.vmentry inject=#GP(0x0)\n")
    assert isinstance(out, Allowed)
    vectorings = {o.l1[0][1].vectoring for o in out.outcomes}
    assert vectorings == {None, exception(13, 0)}


def test_triple_fault_in_l2():
    vmx = run("evdiff 1\nl2.stack #PF\nl1.vmentry inject=#DF(0x0)\n")
    # SDM 27.3.3: the RIP saved is what the #DF would have pushed: undefined.
    assert obs(vmx, 1) == [VmExit("TRIPLE_FAULT", ret=Undefined("SDM 6.15"))] and vmx.shutdown is None
    svm = run("evdiff 1 vendor=svm\nl2.stack #PF\nl1.vmentry inject=#DF(0x0)\n")
    assert matches(obs(svm, 1)[0], VmExit("SHUTDOWN", None, exception(14, 2)))  # EXITINTINFO undefined
    assert isinstance(obs(svm, 1)[0].vectoring, Undefined)
    off = run("evdiff 1 vendor=svm\nl1.intercept shutdown=0\nl2.stack #PF\nl1.vmentry inject=#DF(0x0)\n")
    assert off.shutdown == 2 and obs(off, 1) == []


def test_intercepted_exception_in_l2_does_not_write_cr2():
    out = run("evdiff 1\nl1.intercept exceptions=#PF\nl1.vmentry\nexception #PF ec=0x4 cr2=0x2000\n")
    assert obs(out, 1) == [VmExit("EXCEPTION_NMI", exception(14, 4), None, 0x2000)]
    assert load("reference").run(parse_scenario(
        "evdiff 1\nl1.vmentry\nexception #PF ec=0x4 cr2=0x2000\n")).final.cr2 == 0x2000


def test_pf_mask_match_selects_exits():
    text = "evdiff 1\nl1.intercept exceptions=#PF pf_mask=0x2 pf_match=0x2\nl1.vmentry\nexception #PF ec={}\n"
    assert obs(run(text.format("0x2")), 1)[0].reason == "EXCEPTION_NMI"
    assert obs(run(text.format("0x0")), 2) == [Delivered(2, exception(14, 0))]


def test_vmx_entry_checks_injected_interrupt_against_if():
    out = run("evdiff 1\nl1.vmentry\ncli\nl2.vmcall\nl1.vmentry inject=intr(0x20)\n")
    assert obs(out, 1)[-1] == EntryFailed("FAILED_ENTRY|INVALID_GUEST_STATE")
    svm = run("evdiff 1 vendor=svm\nl1.vmentry\ncli\nl2.vmcall\nl1.vmentry inject=intr(0x20)\n")
    assert obs(svm, 2) == [Delivered(2, ext_intr(0x20))]


def test_nmi_exit_vmx_consumes_svm_keeps_pending():
    vmx = run("evdiff 1\nl1.intercept nmi=1\nl1.vmentry\nnmi\nrun\n")
    assert obs(vmx, 1) == [VmExit("EXCEPTION_NMI", Ev(EvType.NMI, 2))] and vmx.final.nmi_pending == 0
    svm = run("evdiff 1 vendor=svm\nl1.intercept nmi=1\nl1.vmentry\nnmi\nrun\n")
    assert obs(svm, 1) == [VmExit("NMI")] and svm.final.nmi_pending == 1


def test_l0_and_save_restore_events_are_invisible():
    base = "evdiff 1 vendor=svm\nl1.intercept exceptions=#PF\nl1.vmentry\nirq 0x20\n{}run\nexception #GP\n"
    plain = run(base.format(""))
    noisy = run(base.format("user.migrate\nl0.mmu_fixup\nl0.immediate_exit\nuser.migrate\n"))
    assert [o for _, o in plain.l2] == [o for _, o in noisy.l2]
    assert plain.final == noisy.final


def test_user_pending_exception_is_intercept_checked_injected_is_not():
    pending = run("evdiff 1 caps=exception_payload\nl1.intercept exceptions=#GP\nl1.vmentry\n"
                  "user.set_exception #GP\nrun\n")
    assert obs(pending, 1)[0].reason == "EXCEPTION_NMI"
    injected = run("evdiff 1\nl1.intercept exceptions=#GP\nl1.vmentry\nuser.set_exception #GP injected=1\nrun\n")
    assert obs(injected, 2) == [Delivered(2, exception(13, 0))]


def test_vmx_entry_control_checks_fail_with_vmfailvalid():
    """SDM 26.2.1.3: error code bits 31:16 must be 0 (the text says 31:15;
    hardware accepts bit 15: kvm-unit-tests 65d7e712); no error code with
    PE=0.  SDM2 VMLAUNCH: MOV-SS blocking gives VMfailValid(26)."""
    assert obs(run("evdiff 1\nl1.vmentry inject=#GP(0x8000)\n"), 2) == [Delivered(2, exception(13, 0x8000))]
    # L1 writes the whole 32-bit error-code field.
    assert obs(run("evdiff 1\nl1.vmentry inject=#GP(0x10000)\n"), 1) == [EntryFailed("VMfailValid(7)")]
    assert obs(run("evdiff 1\nl2.mode real\nl1.vmentry inject=#GP(0x0)\n"), 1) == [EntryFailed("VMfailValid(7)")]
    assert obs(run("evdiff 1\nmov_ss\nl1.vmentry\n"), 1) == [EntryFailed("VMfailValid(26)")]
    assert run("evdiff 1 vendor=svm\nmov_ss\nl1.vmentry\n").final.level == 2


def test_deliver_error_code_only_for_the_vectors_the_sdm_lists():
    """SDM 26.2.1.3 (059): the deliver-error-code bit is set exactly for #DF,
    #TS, #NP, #SS, #GP, #PF and #AC, so injecting #CP with an error code
    fails the entry.  APM 15.20 gives VMRUN no such check on EVENTINJ.EV:
    on SVM the #CP is delivered with its error code."""
    assert obs(run("evdiff 1 vendor=vmx\nl1.vmentry inject=#CP(0x0)\n"), 1) == [EntryFailed("VMfailValid(7)")]
    out = run("evdiff 1 vendor=svm\nl1.vmentry inject=#CP(0x0)\n")
    assert obs(out, 1) == [] and obs(out, 2) == [Delivered(2, exception(21, 0))]


def test_interrupt_in_flight_with_if_clear_is_not_set():
    """No CPU acknowledges an interrupt with IF=0 (SDM 6.8.1): userspace
    setting one in flight does nothing (impls.arch.possible)."""
    out = run("evdiff 1\ncli\nrun\nuser.set_irq 0x20\nrun\n")
    assert out.undefined_from is None and obs(out, 1) == [] and out.final.irq_pending == ()
    assert obs(run("evdiff 1\nuser.set_irq 0x20\nrun\n"), 1) == [Delivered(1, ext_intr(0x20))]


def test_user_pending_exception_beside_an_interrupt_in_flight_faults_its_delivery():
    """Table 6-5: the exception was raised while the interrupt was being
    delivered; benign first: serial, the interrupt is not delivered.  In L2
    the exit to L1 carries the interrupt as IDT-vectoring info."""
    out = run("evdiff 1 caps=exception_payload\nuser.set_irq 0x20\nuser.set_exception #GP\nrun\n")
    assert obs(out, 1) == [Delivered(1, exception(13, 0))]
    nested = run("evdiff 1 caps=exception_payload\nl1.intercept exceptions=#GP\nl1.vmentry\n"
                 "user.set_irq 0x20\nuser.set_exception #GP\nrun\n")
    assert obs(nested, 1) == [VmExit("EXCEPTION_NMI", exception(13, 0), ext_intr(0x20))]


def test_two_events_in_flight_leave_the_architecture():
    out = run("evdiff 1\nuser.set_irq 0x20\nuser.set_nmi injected=1\nrun\n")
    assert out.undefined_from == 1


# ------------------------------------------------------------------ INIT --


def test_vmx_init_is_held_in_root_operation_and_exits_from_l2():
    """SDM 23.8: blocked in VMX root operation; SDM 25.2: an exit (reason 3)
    at the first boundary in L2, after the injected event's delivery."""
    out = run("evdiff 1 vendor=vmx\ninit\nrun\nl1.vmentry inject=#GP(0x0)\nrun\n")
    assert [s for s, _ in out.l1] == [3]
    assert obs(out, 1) == [VmExit("INIT")]
    assert obs(out, 2) == [Delivered(2, exception(13, 0))]
    assert out.final.init_pending is False


def test_vmx_init_held_in_l1_is_in_the_final_state():
    out = run("evdiff 1 vendor=vmx\ninit\nexception #UD\n")
    assert obs(out, 1) == [Delivered(1, Ev(EvType.HW_EXCEPTION, 6))]
    assert out.final.init_pending is True


def test_init_comes_before_nmi_and_clears_no_other_event():
    """Table 6-2: INIT (tier 3) before NMI (tier 5); SDM 25.2: the INIT exit
    leaves the NMI pending, taken in L1 after the exit."""
    out = run("evdiff 1 vendor=vmx\nl1.vmentry\nnmi\ninit\nrun\n")
    assert [str(o) for o in obs(out, 1)] == ["EXIT INIT", "L1 handles NMI"]


def test_svm_init_without_intercept_resets_and_ends_the_scenario():
    out = run("evdiff 1 vendor=svm\nl1.vmentry\ninit\nexception #GP\nrun\n")
    assert [str(o) for o in obs(out, 1)] == ["INIT resets the vCPU (L2 running)"]
    assert obs(out, 2) == []  # the #GP after the reset is not followed
    assert out.final is None


def test_svm_init_is_held_by_gif_and_stays_pending_after_its_intercept():
    """APM 15.17: GIF=0 holds INIT; APM 15.13: an intercepted INIT stays
    pending, so STGI in L1 lets it reset the vCPU."""
    out = run("evdiff 1 vendor=svm\nclgi\ninit\nrun\nl1.intercept init=1\nl1.vmentry\nrun\nstgi\n")
    assert [(s, str(o)) for s, o in out.l1] == [(5, "EXIT INIT"), (7, "INIT resets the vCPU (L1 running)")]


# ------------------------------------------------------------------- SMI --


def test_smi_is_taken_before_nmi_and_returns_to_the_same_level():
    """Table 6-2: SMI (tier 3) before NMI (tier 5); RSM returns to L2 under
    VMX's default treatment (SDM 34.14), so the NMI is then L2's."""
    out = run("evdiff 1 vendor=vmx\nl1.vmentry\nnmi\nsmi\nrun\n")
    assert [str(o) for o in obs(out, 1)] == ["SMI handled in SMM (L2 running)"]
    assert [str(o) for o in obs(out, 2)] == ["L2 handles NMI"]
    assert out.final.smi_pending is False


def test_svm_smi_held_by_gif_then_taken_after_stgi():
    out = run("evdiff 1 vendor=svm\nclgi\nsmi\nrun\nstgi\n")
    assert [(s, str(o)) for s, o in out.l1] == [(4, "SMI handled in SMM (L1 running)")]


def test_svm_intercepted_smi_exits_and_may_stay_pending():
    """APM 15.13 keeps an intercepted INTR, NMI or INIT pending; for SMI it
    is not found, so both finals are allowed."""
    out = run("evdiff 1 vendor=svm\nl1.intercept smi=1\nl1.vmentry\nsmi\nrun\n")
    assert isinstance(out, Allowed)
    assert {tuple(str(o) for _, o in x.l1) for x in out.outcomes} == {("EXIT SMI",)}
    assert {x.final.smi_pending for x in out.outcomes} == {True, False}


def test_smi_and_init_together_are_taken_in_either_order():
    out = run("evdiff 1 vendor=vmx\nl1.vmentry\nsmi\ninit\nrun\n")
    assert isinstance(out, Allowed)
    assert {tuple(str(o) for _, o in x.l1) for x in out.outcomes} == {
        ("SMI handled in SMM (L2 running)", "EXIT INIT"), ("EXIT INIT", "SMI handled in SMM (L1 running)")}


def test_svm_eventinj_error_code_in_real_mode_is_left_open():
    """SDM 20.1.4's "no error code in real mode" is Intel's; the APM (15.20)
    says nothing of EVENTINJ's error code when L2 is in real mode, so the
    EXITINTINFO of an exit during that delivery may hold it or not."""
    out = run("evdiff 1 vendor=svm npt=on\nl2.stack #PF\nl2.mode real\nl1.intercept exceptions=#SS\n"
              "l1.vmentry inject=#GP(0x0)\n")
    assert isinstance(out, Allowed)
    vectorings = {o.l1[0][1].vectoring for o in out.outcomes}
    assert vectorings == {exception(13, None), exception(13, 0)}
    vmx = run("evdiff 1 vendor=vmx ept=on\nl2.stack #PF\nl2.mode real\nl1.intercept exceptions=#SS\n"
              "l1.vmentry inject=#GP\n")
    assert not isinstance(vmx, Allowed) or len({o.l1 for o in vmx.outcomes}) == 1


def test_vmrun_that_fails_with_vmexit_invalid_clears_gif():
    """APM 15.5.1: illegal event injection is illegal guest state, so VMRUN
    takes a #VMEXIT with VMEXIT_INVALID; APM 15.6: every #VMEXIT clears
    GIF.  The interrupt is held until L1 executes STGI."""
    text = "evdiff 1 vendor=svm\nl2.mode long\nl1.vmentry inject=#BR\nirq 0x21\n"
    out = run(text)
    assert obs(out, 1) == [EntryFailed("VMEXIT_INVALID")]
    assert out.final.irq_pending == (0x21,) and out.final.interrupts_enabled
    out = run(text + "stgi\n")
    assert obs(out, 1)[1:] == [Delivered(1, ext_intr(0x21))]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_a_pf_userspace_leaves_pending_exits_with_cr2_as_its_address(vendor):
    """A #PF exit always reports an address (SDM 27.2.1 exit qualification,
    APM 15.12 EXITINFO2).  For a #PF userspace set pending without a payload
    it is the address CR2 holds (KVM's ABI: no payload, CR2 written)."""
    out = run(f"evdiff 1 vendor={vendor} caps=exception_payload\nl1.intercept exceptions=#PF\nl1.vmentry\n"
              "user.set_exception #PF\n")
    (exit_,) = obs(out, 1)
    assert exit_.address == 0
