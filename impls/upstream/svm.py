"""Port of the event paths of arch/x86/kvm/svm/svm.c as of Linux 6.1 (written
at d4963e31, re-read in 6.1.55: the same), where they differ from 5.11
(`impls.prepatch.svm`).

6.1 has vmcb01 / vmcb02 (5.13) where 5.11 has one VMCB and a copy of L1's
control area in `hsave`; the port keeps the 5.11 layout of
`impls.prepatch.svm` (vmcb01's control area is `svm.nested.hsave` while L2
runs): every field the event paths read or write has the same value in
both layouts.

Differs:

* The kvm_x86_ops hooks are inject_exception / inject_irq / inject_nmi.
  `svm_inject_exception` delivers the payload of the exception it is handed
  and, for INT3 / INTO, fixes up the soft-interrupt RIP first
  (`svm_update_soft_interrupt_rip`: skip the instruction to learn its next
  RIP, `_svm_skip_emulated_instruction`, put RIP back and hand the CPU
  next_rip); `svm_inject_irq` handles soft interrupts; `svm_inject_nmi` leaves L0's NMI masking alone for an NMI L1
  injected into L2 (`nmi_l1_to_l2`).
* `svm_nmi_allowed` / `svm_interrupt_allowed` test "blocked" *before* the
  -EBUSY for an event L1 intercepts (5.11: after).
* `svm_complete_interrupts` re-queues INT3 / INTO as exceptions (5.11 dropped
  them for re-execution) and INTn as soft interrupts (5.11 dropped them),
  never re-injects #VC, and carries `nmi_l1_to_l2` over to the re-injection;
  for a soft event KVM injected, `svm_complete_soft_interrupt` gives the VMCB
  its next_rip back (the exit zeroed it, APM 15.7.1).
* `svm_clear_vintr` restores L1's V_INTR_VECTOR with its V_IRQ while L2
  runs (5.11 left KVM's dummy vector 0 there).
* `svm_set_gif` also makes KVM_REQ_EVENT for a pending INIT or SIPI
  (0bba8fc2), and `svm_apic_init_signal_blocked` is GIF=0 only (db25eb87:
  5.11 also held INIT while the current VMCB intercepted it).

Reused unchanged (host features as in `impls.prepatch.svm`): see
impls.upstream.reused, which also says what differs there unmodelled
(shutdown_interception now resets the vCPU: KVM_EXIT_SHUTDOWN either way;
db_interception's payload only reaches DR6, which nothing observes).
"""
from __future__ import annotations

from impls.origin import origin
from impls.prepatch.svm import (
    SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_NMI, SVM_EVTINJ_TYPE_SOFT,
    SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR, SVM_EVTINJ_VEC_MASK, SVM_EXITINTINFO_VALID,
)
from impls.hw import cpu as hw
from impls.prepatch.x86 import kvm_exception_is_soft
from impls.upstream.state import EBUSY, HF_GIF_MASK, HF_IRET_MASK, HF_NMI_MASK, KVM_REQ_EVENT, TREE, X86_TRAP_VC
from impls.upstream.state import STABLE

SVM_C = "arch/x86/kvm/svm/svm.c"
EIO = 5
#: svm.c's `nrips` module parameter, and the CPU's X86_FEATURE_NRIPS: the
#: host has NRIPS (impls.hw.environment) and KVM uses it.
NRIPS = True
SVM_EXIT_SW = 0xF0000000  # uapi svm.h: an exit KVM makes up


class Svm61:
    """arch/x86/kvm/svm/svm.c of 6.1, as methods of the vCPU."""

    # ----------------------------------------------------------- injection --

    @origin(SVM_C, "__svm_skip_emulated_instruction", tree=TREE, read=STABLE)
    def _svm_skip_emulated_instruction(vcpu, commit_side_effects: bool) -> int:
        """Move RIP past the instruction: to the nRIP the last #VMEXIT saved
        where it saved one, else past what the emulator decodes at RIP
        (EMULTYPE_SKIP: `LevelState.instruction_length`, an INT n / INT3 /
        INTO there or a plain instruction).  Committing side effects also
        ends the interrupt shadow (RFLAGS.RF is not modelled)."""
        svm = vcpu.svm
        if NRIPS and svm.vmcb.next_rip != 0:
            svm.next_rip = svm.vmcb.next_rip
        lv = vcpu.guest()
        if not svm.next_rip:
            lv.rip += lv.instruction_length()  # kvm_emulate_instruction(EMULTYPE_SKIP)
        else:
            lv.rip = svm.next_rip
        if commit_side_effects:
            vcpu.svm_set_interrupt_shadow(0)
        return 1

    @origin(SVM_C, "svm_skip_emulated_instruction", tree=TREE, read=STABLE)
    def svm_skip_emulated_instruction(vcpu) -> int:
        return vcpu._svm_skip_emulated_instruction(True)

    @origin(SVM_C, "svm_update_soft_interrupt_rip", tree=TREE, read=STABLE)
    def svm_update_soft_interrupt_rip(vcpu) -> int:
        """Before injecting a soft event KVM skips the instruction to learn
        its next RIP (without side effects: the host has NRIPS), records old
        and next RIP for a re-injection (soft_int_injected), puts RIP back
        and hands the next RIP to the CPU as next_rip, the return address
        the injection pushes."""
        svm = vcpu.svm
        lv = vcpu.guest()
        old_rip = lv.rip
        if not vcpu._svm_skip_emulated_instruction(not NRIPS):
            return -EIO
        rip = lv.rip
        svm.soft_int_injected = True
        svm.soft_int_csbase = 0  # vmcb->save.cs.base
        svm.soft_int_old_rip = old_rip
        svm.soft_int_next_rip = rip
        if NRIPS:
            lv.rip = old_rip
        svm.vmcb.next_rip = rip  # static_cpu_has(X86_FEATURE_NRIPS)
        return 0

    @origin(SVM_C, "svm_inject_exception", tree=TREE, read=STABLE)
    def svm_inject_exception(vcpu) -> None:
        ex = vcpu.arch.exception
        vcpu.kvm_deliver_exception_payload(ex)
        if kvm_exception_is_soft(ex.vector) and vcpu.svm_update_soft_interrupt_rip():
            return
        vmcb = vcpu.svm.vmcb
        vmcb.event_inj = ex.vector | SVM_EVTINJ_VALID | (SVM_EVTINJ_VALID_ERR if ex.has_error_code else 0) \
            | SVM_EVTINJ_TYPE_EXEPT
        vmcb.event_inj_err = ex.error_code

    @origin(SVM_C, "svm_inject_nmi", tree=TREE, read=STABLE)
    def svm_inject_nmi(vcpu) -> None:
        svm = vcpu.svm
        svm.vmcb.event_inj = SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI
        if svm.nmi_l1_to_l2:
            return
        vcpu.arch.hflags |= HF_NMI_MASK
        vcpu.svm_set_intercept(hw.INTERCEPT_IRET)

    @origin(SVM_C, "svm_inject_irq", tree=TREE, read=STABLE)
    def svm_inject_irq(vcpu, reinjected: bool) -> None:
        if vcpu.arch.interrupt.soft:
            if vcpu.svm_update_soft_interrupt_rip():
                return
            type_ = SVM_EVTINJ_TYPE_SOFT
        else:
            type_ = SVM_EVTINJ_TYPE_INTR
        vcpu.svm.vmcb.event_inj = vcpu.arch.interrupt.nr | SVM_EVTINJ_VALID | type_

    @origin(SVM_C, "svm_nmi_allowed", tree=TREE, read=STABLE)
    def svm_nmi_allowed(vcpu, for_injection: bool) -> int:
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if vcpu.svm_nmi_blocked():
            return 0
        if for_injection and vcpu.is_guest_mode() and vcpu.svm_nested_exit_on_nmi():
            return -EBUSY
        return 1

    @origin(SVM_C, "svm_interrupt_allowed", tree=TREE, read=STABLE)
    def svm_interrupt_allowed(vcpu, for_injection: bool) -> int:
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if vcpu.svm_interrupt_blocked():
            return 0
        if for_injection and vcpu.is_guest_mode() and vcpu.svm_nested_exit_on_intr():
            return -EBUSY
        return 1

    # ----------------------------------------------------------------- GIF --

    @origin(SVM_C, "svm_set_gif", tree=TREE, read=STABLE)
    def svm_set_gif(vcpu, value: bool) -> None:
        """As 5.11's, and setting GIF also makes KVM_REQ_EVENT for a pending
        INIT or SIPI (0bba8fc2, 6.1), which GIF=0 held."""
        if value:
            if vcpu.svm_is_intercept(hw.INTERCEPT_VINTR):
                vcpu.svm_clear_vintr()
            vcpu.arch.hflags |= HF_GIF_MASK
            if vcpu.arch.smi_pending or vcpu.arch.nmi_pending or vcpu.kvm_cpu_has_injectable_intr() \
                    or vcpu.kvm_apic_has_pending_init_or_sipi():
                vcpu.kvm_make_request(KVM_REQ_EVENT)
        else:
            vcpu.arch.hflags &= ~HF_GIF_MASK
            vcpu.svm_clear_vintr()

    @origin(SVM_C, "svm_clear_vintr", tree=TREE, read=STABLE)
    def svm_clear_vintr(vcpu) -> None:
        """Drop KVM's dummy V_IRQ (the V_IRQ / priority / V_IGN_TPR bits);
        while L2 runs, put back L1's from vmcb12, and now also L1's
        V_INTR_VECTOR, which svm_set_vintr overwrote with 0 (5.11 left it
        0)."""
        vcpu.svm_clr_intercept(hw.INTERCEPT_VINTR)
        bits = hw.V_IRQ_MASK | hw.V_INTR_PRIO_MASK | hw.V_IGN_TPR_MASK  # V_IRQ_INJECTION_BITS_MASK
        vmcb = vcpu.svm.vmcb
        vmcb.int_ctl &= ~bits
        if vcpu.is_guest_mode():
            vcpu.svm.nested.hsave.int_ctl &= ~bits
            ctl = vcpu.svm.nested.ctl
            vcpu.warn_on_once((vmcb.int_ctl & hw.V_TPR_MASK) != (ctl.int_ctl & hw.V_TPR_MASK),
                              "svm_clear_vintr: V_TPR differs from vmcb12's")
            vmcb.int_ctl |= ctl.int_ctl & bits
            vmcb.int_vector = ctl.int_vector

    @origin(SVM_C, "svm_apic_init_signal_blocked", tree=TREE, read=STABLE)
    def svm_apic_init_signal_blocked(vcpu) -> bool:
        """Only GIF=0 holds INIT (db25eb87, 6.1): L1's INIT intercept is
        svm_check_nested_events' business, which kvm_apic_accept_events
        consults first."""
        return not vcpu.gif_set()

    # ------------------------------------------------- after the hardware exit --

    @origin(SVM_C, "svm_complete_soft_interrupt", tree=TREE, read=STABLE)
    def svm_complete_soft_interrupt(vcpu, vector: int, type_: int) -> None:
        """The exit zeroed next_rip (APM 15.7.1): with NRIPS, a soft event
        KVM injected and is about to re-inject gets the next_rip recorded at
        its injection back, if RIP is still on its instruction; without
        NRIPS, RIP is unwound instead."""
        svm = vcpu.svm
        is_exception = type_ == SVM_EVTINJ_TYPE_EXEPT
        is_soft = type_ == SVM_EVTINJ_TYPE_SOFT
        rip = vcpu.guest().rip
        if NRIPS and (is_soft or (is_exception and kvm_exception_is_soft(vector))) \
                and rip == svm.soft_int_old_rip + svm.soft_int_csbase:  # kvm_is_linear_rip
            svm.vmcb.next_rip = svm.soft_int_next_rip
        elif not NRIPS and (is_soft or is_exception) and rip == svm.soft_int_next_rip + svm.soft_int_csbase:
            vcpu.guest().rip = svm.soft_int_old_rip

    @origin(SVM_C, "svm_complete_interrupts", tree=TREE, read=STABLE)
    def svm_complete_interrupts(vcpu) -> None:
        svm = vcpu.svm
        a = vcpu.arch
        exitintinfo = svm.vmcb.exit_int_info
        nmi_l1_to_l2 = svm.nmi_l1_to_l2
        soft_int_injected = svm.soft_int_injected
        svm.nmi_l1_to_l2 = False
        svm.soft_int_injected = False
        if a.hflags & HF_IRET_MASK and vcpu.guest().rip != svm.nmi_iret_rip:
            a.hflags &= ~(HF_NMI_MASK | HF_IRET_MASK)
            vcpu.kvm_make_request(KVM_REQ_EVENT)
        a.nmi_injected = False
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()
        if not exitintinfo & SVM_EXITINTINFO_VALID:
            return
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        vector = exitintinfo & SVM_EVTINJ_VEC_MASK
        type_ = exitintinfo & SVM_EVTINJ_TYPE_MASK
        if soft_int_injected:
            vcpu.svm_complete_soft_interrupt(vector, type_)
        if type_ == SVM_EVTINJ_TYPE_NMI:
            a.nmi_injected = True
            svm.nmi_l1_to_l2 = nmi_l1_to_l2
        elif type_ == SVM_EVTINJ_TYPE_EXEPT:
            if vector == X86_TRAP_VC:
                return
            if exitintinfo & SVM_EVTINJ_VALID_ERR:
                vcpu.kvm_requeue_exception_e(vector, svm.vmcb.exit_int_info_err)
            else:
                vcpu.kvm_requeue_exception(vector)
        elif type_ == SVM_EVTINJ_TYPE_INTR:
            vcpu.kvm_queue_interrupt(vector, False)
        elif type_ == SVM_EVTINJ_TYPE_SOFT:
            vcpu.kvm_queue_interrupt(vector, True)

    # ------------------------------------------------------------------ SMM --

    @origin(SVM_C, "svm_smi_allowed", tree=TREE, read=STABLE)
    def svm_smi_allowed(vcpu, for_injection: bool) -> int:
        """6.1 asks svm_smi_blocked before L1's SMI intercept: a blocked SMI
        is 0 (wait), not -EBUSY, even in L2 with the intercept."""
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if vcpu.svm_smi_blocked():
            return 0
        if for_injection and vcpu.is_guest_mode() and vcpu.svm_nested_exit_on_smi():
            return -EBUSY
        return 1

    @origin(SVM_C, "svm_enter_smm", tree=TREE, read=STABLE)
    def svm_enter_smm(vcpu, smstate: dict) -> int:
        """In guest mode: "SVM guest" and the vmcb12 address into the
        state-save area, a #VMEXIT with exit code SVM_EXIT_SW that L1
        never sees (see record_nested_svm_vmexit), then vmcb01's save area
        (L1's state, which SMM is about to use) copied to L1's host-save
        area (svm_copy_vmrun_state)."""
        if not vcpu.is_guest_mode():
            return 0
        svm = vcpu.svm
        smstate["svm_guest"] = 1  # 0x7ed8
        smstate["svm_guest_vmcb_gpa"] = svm.nested.vmcb12_gpa  # 0x7ee0
        vcpu.smm_vmexit = True
        try:
            ret = vcpu.nested_svm_simple_vmexit(SVM_EXIT_SW)
        finally:
            vcpu.smm_vmexit = False
        if ret:
            return ret
        lv1 = vcpu.cpu.lv[1]
        vcpu.smm_hsave_area = {"rflags_if": lv1.rflags_if, "rflags_tf": lv1.tf}
        return 0

    @origin(SVM_C, "svm_leave_smm", tree=TREE, read=STABLE)
    def svm_leave_smm(vcpu, smstate: dict) -> int:
        """If the SMI came in guest mode: vmcb01's save area back from the
        host-save area, enter_svm_guest_mode from vmcb12 (not from VMRUN),
        and then nested_run_pending = 1, as if L1 had just executed VMRUN."""
        if not smstate.get("svm_guest"):
            return 0
        area = vcpu.smm_hsave_area
        lv1 = vcpu.cpu.lv[1]
        lv1.rflags_if, lv1.tf = area["rflags_if"], area["rflags_tf"]
        ret = vcpu.enter_svm_guest_mode(vcpu.svm.nested.vmcb12)
        if ret:
            return ret
        vcpu.svm.nested.nested_run_pending = True
        return ret
