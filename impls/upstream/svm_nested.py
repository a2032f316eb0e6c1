"""Port of the event paths of arch/x86/kvm/svm/nested.c as of Linux 6.1
(written at 7709aba8, re-read in 6.1.55, with 92e7d5c83aff) and the svm.h
helper nested_svm_simple_vmexit, where they differ from 5.11
(`impls.prepatch.svm_nested`).

Differs:

* `nested_svm_is_exception_vmexit` (nested_ops->is_exception_vmexit): L1's
  exception intercepts in the cached vmcb12 controls, error code ignored,
  `nested_svm_inject_exception_vmexit` turns `exception_vmexit` into the
  #VMEXIT (EXITINFO2 of a #PF from the payload, else CR2).
* `svm_check_nested_events`: exceptions are blocked only by a pending
  nested run; `exception_vmexit` exits, a pending exception for L2 is "no
  VM exit"; the NMI / INTR rungs use nested_svm_simple_vmexit.
* `nested_svm_triple_fault` (nested_ops->triple_fault): a SHUTDOWN #VMEXIT
  if L1 intercepts SHUTDOWN, clearing KVM_REQ_TRIPLE_FAULT itself; else
  nothing, and the request becomes KVM_EXIT_SHUTDOWN (92e7d5c83aff,
  6.1-rc7).
* `nested_svm_vmrun` no longer clears KVM's exception and interrupt queues,
  and remembers vmcb01's RFLAGS.TF; `nested_vmcb02_prepare_control` (5.11:
  nested_prepare_vmcb_control) marks an NMI or soft event L1 injects
  (`nmi_l1_to_l2`, `soft_int_injected`).
* `nested_svm_vmexit` queues #DB for L1 if L1 single-stepped its VMRUN.
* `nested_save_pending_event_to_vmcb12` is 5.11's
  nested_vmcb_save_pending_event under its new name (same body).
* The INIT rung of `svm_check_nested_events` exits through
  nested_svm_simple_vmexit (5.11: nested_svm_init); nested_exit_on_init is
  5.11's.

Reused unchanged: see impls.upstream.reused (recalc_intercepts,
nested_vmcb_checks -- no EVENTINJ check in either tree --, the exit
reflection helpers).
Not modelled: SMI, nested NPT (nested_svm_inject_npf_exit), the vmcb12
mapping failing.
"""
from __future__ import annotations

from impls.api import EntryFailed
from impls.arch import DB, PF
from impls.arch import svm as asvm
from impls.hw import cpu as hw
from impls.origin import origin
from impls.prepatch.svm import (
    SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_NMI, SVM_EVTINJ_TYPE_SOFT,
    SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR, SVM_EVTINJ_VEC_MASK, V_GIF_ENABLE_MASK, V_GIF_MASK,
)
from impls.prepatch.x86 import kvm_exception_is_soft
from impls.upstream.state import (
    DR7_GD, EBUSY, KVM_APIC_INIT, KVM_MP_STATE_RUNNABLE, KVM_REQ_EVENT, KVM_REQ_TRIPLE_FAULT, STABLE,
    SVM_EXIT_SHUTDOWN, TREE,
)

NESTED_C = "arch/x86/kvm/svm/nested.c"
SVM_H = "arch/x86/kvm/svm/svm.h"
SVM_C = "arch/x86/kvm/svm/svm.c"


def is_evtinj_soft(evtinj: int) -> bool:
    """EVENTINJ holds INTn, or INT3 / INTO as an exception (nested.c)."""
    if not evtinj & SVM_EVTINJ_VALID:
        return False
    type_ = evtinj & SVM_EVTINJ_TYPE_MASK
    if type_ == SVM_EVTINJ_TYPE_SOFT:
        return True
    return type_ == SVM_EVTINJ_TYPE_EXEPT and kvm_exception_is_soft(evtinj & SVM_EVTINJ_VEC_MASK)


def is_evtinj_nmi(evtinj: int) -> bool:
    return bool(evtinj & SVM_EVTINJ_VALID) and (evtinj & SVM_EVTINJ_TYPE_MASK) == SVM_EVTINJ_TYPE_NMI


is_evtinj_soft = origin(NESTED_C, "is_evtinj_soft", tree=TREE, read=STABLE)(is_evtinj_soft)
is_evtinj_nmi = origin(NESTED_C, "is_evtinj_nmi", tree=TREE, read=STABLE)(is_evtinj_nmi)


class SvmNested61:
    """arch/x86/kvm/svm/nested.c of 6.1, as methods of the vCPU."""

    @origin(SVM_C, "svm_get_rflags", tree=TREE, read=STABLE)
    def svm_get_rflags_tf(vcpu) -> bool:
        """RFLAGS.TF as KVM reports it: the single-step KVM set for an NMI
        window is hidden unless the guest had TF itself."""
        svm = vcpu.svm
        tf = vcpu.guest().tf
        if svm.nmi_singlestep and not svm.nmi_singlestep_guest_rflags_tf:
            tf = False
        return tf

    # -------------------------------------------------------------- VMRUN --

    @origin(NESTED_C, "nested_svm_vmrun", tree=TREE, read=STABLE)
    def nested_svm_vmrun(vcpu) -> int:
        """VMRUN: checks, then L1's state into vmcb01 (here: IF and TF of
        its RFLAGS), nested_run_pending, enter guest mode.  KVM's queues are
        left alone (5.11 cleared them)."""
        svm = vcpu.svm
        vmcb12 = svm.nested.vmcb12
        ret = vcpu.kvm_skip_emulated_instruction()
        if not vcpu.nested_vmcb_checks(vmcb12):
            vmcb12.control.exit_code = hw.SVM_EXIT_ERR
            vmcb12.control.exit_info_1 = vmcb12.control.exit_info_2 = 0
            vcpu.rec.observe(1, EntryFailed(asvm.exit_name(hw.SVM_EXIT_ERR)))
            return ret
        svm.nested.hsave_rflags_if = vcpu.cpu.lv[1].rflags_if  # vmcb01->save.rflags
        svm.nested.hsave_rflags_tf = vcpu.svm_get_rflags_tf()
        svm.nested.hsave.copy_control_from(svm.vmcb)
        svm.nested.nested_run_pending = True
        vcpu.enter_svm_guest_mode(vmcb12)
        return ret

    @origin(NESTED_C, "enter_svm_guest_mode", tree=TREE, read=STABLE)
    def enter_svm_guest_mode(vcpu, vmcb12) -> int:
        vcpu.svm.nested.ctl.copy_control_from(vmcb12.control)  # nested_copy_vmcb_control_to_cache
        vcpu.nested_vmcb02_prepare_control()
        vcpu.svm_set_gif(True)
        return 0

    @origin(NESTED_C, "nested_vmcb02_prepare_control", tree=TREE, read=STABLE)
    def nested_vmcb02_prepare_control(vcpu) -> None:
        """L1's EVENTINJ and next_rip go into vmcb02 as they are; an NMI or a
        soft event there is remembered, with its RIP and next RIP, for its
        possible re-injection."""
        svm = vcpu.svm
        vmcb = svm.vmcb
        ctl = svm.nested.ctl
        mask = hw.V_INTR_MASKING_MASK | V_GIF_ENABLE_MASK | V_GIF_MASK
        vmcb.int_ctl = (ctl.int_ctl & ~mask) | (svm.nested.hsave.int_ctl & mask)
        vmcb.int_vector = ctl.int_vector
        # int_state (INTERRUPT_SHADOW) is copied from vmcb12 as is: L2's
        # shadow lives in the simulated CPU, where L1 wrote it (impls.l1).
        vmcb.event_inj = ctl.event_inj
        vmcb.event_inj_err = ctl.event_inj_err
        # next_rip is what an injected soft event pushes: vmcb12's as it is
        # (svm->nrips_enabled, as in nested_svm_vmexit).
        vmcb.next_rip = ctl.next_rip
        svm.nmi_l1_to_l2 = is_evtinj_nmi(vmcb.event_inj)
        if is_evtinj_soft(vmcb.event_inj):
            vmcb12_rip = vcpu.cpu.lv[2].rip  # vmcb12->save.rip
            svm.soft_int_injected = True
            svm.soft_int_csbase = 0  # vmcb12->save.cs.base
            svm.soft_int_old_rip = vmcb12_rip
            svm.soft_int_next_rip = ctl.next_rip
        vcpu.enter_guest_mode()
        vmcb.level = 2  # vmcb02 runs L2
        vcpu.recalc_intercepts()
        # nested_vmcb02_prepare_save: kvm_set_rflags(vmcb12's RFLAGS), which
        # makes KVM_REQ_EVENT.
        vcpu.kvm_make_request(KVM_REQ_EVENT)

    # ------------------------------------------------------------ #VMEXIT --

    @origin(NESTED_C, "nested_save_pending_event_to_vmcb12", tree=TREE, read=STABLE)
    def nested_save_pending_event_to_vmcb12(vcpu, vmcb12) -> None:
        """EXITINTINFO for L1 from KVM's *injected* state (INT3 / INTO as
        exceptions); a pending exception is dropped."""
        a = vcpu.arch
        exit_int_info = 0
        if a.exception.injected:
            exit_int_info = a.exception.vector | SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT
            if a.exception.has_error_code:
                exit_int_info |= SVM_EVTINJ_VALID_ERR
                vmcb12.control.exit_int_info_err = a.exception.error_code
        elif a.nmi_injected:
            exit_int_info = SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI
        elif a.interrupt.injected:
            exit_int_info = a.interrupt.nr | SVM_EVTINJ_VALID
            exit_int_info |= SVM_EVTINJ_TYPE_SOFT if a.interrupt.soft else SVM_EVTINJ_TYPE_INTR
        vmcb12.control.exit_int_info = exit_int_info

    @origin(NESTED_C, "nested_svm_vmexit", tree=TREE, read=STABLE)
    def nested_svm_vmexit(vcpu) -> int:
        svm = vcpu.svm
        vmcb = svm.vmcb
        vmcb12 = svm.nested.vmcb12
        vcpu.leave_guest_mode()
        vcpu.warn_on_once(svm.nested.nested_run_pending, "nested_svm_vmexit: nested_run_pending")
        vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE  # in case L2 halted
        c12 = vmcb12.control
        c12.exit_code = vmcb.exit_code
        c12.exit_info_1 = vmcb.exit_info_1
        c12.exit_info_2 = vmcb.exit_info_2
        if c12.exit_code != hw.SVM_EXIT_ERR:
            vcpu.nested_save_pending_event_to_vmcb12(vmcb12)
        # svm->nrips_enabled: L1 sees NRIPS (KVM advertises it to every L1)
        c12.next_rip = vmcb.next_rip
        c12.int_ctl = svm.nested.ctl.int_ctl  # V_IRQ as the CPU left it (sync_nested_vmcb_control)
        c12.event_inj = svm.nested.ctl.event_inj
        c12.event_inj_err = svm.nested.ctl.event_inj_err
        vmcb.copy_control_from(svm.nested.hsave)  # svm_switch_vmcb(vmcb01)
        vmcb.level = 1
        vcpu.svm_set_gif(False)
        vmcb.exit_int_info = 0
        vcpu.kvm_make_request(KVM_REQ_EVENT)  # kvm_set_rflags(vmcb01's RFLAGS)
        # Drop what svm_complete_interrupts picked up for L2.
        vcpu.arch.nmi_injected = False
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()
        vcpu.record_nested_svm_vmexit()
        if svm.nested.hsave_rflags_tf:
            vcpu.kvm_queue_exception(DB)
        return 0

    @origin(SVM_H, "nested_svm_simple_vmexit", tree=TREE, read=STABLE)
    def nested_svm_simple_vmexit(vcpu, exit_code: int) -> int:
        vmcb = vcpu.svm.vmcb
        vmcb.exit_code = exit_code
        vmcb.exit_info_1 = vmcb.exit_info_2 = 0
        return vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "nested_svm_triple_fault", tree=TREE, read=f"{STABLE}; 92e7d5c83aff (6.1-rc7) as posted")
    def nested_svm_triple_fault(vcpu) -> None:
        """A SHUTDOWN #VMEXIT only if L1 intercepts SHUTDOWN in vmcb12, and
        then the request is cleared here; otherwise nothing: the request
        stays, and vcpu_enter_guest turns it into KVM_EXIT_SHUTDOWN
        (92e7d5c83aff, 6.1-rc7)."""
        if hw.INTERCEPT_SHUTDOWN not in vcpu.svm.nested.ctl.intercepts:  # vmcb12_is_intercept
            vcpu.rec.note("nested_svm_triple_fault: L1 does not intercept SHUTDOWN: request left set")
            return
        vcpu.kvm_clear_request(KVM_REQ_TRIPLE_FAULT)
        vcpu.nested_svm_simple_vmexit(SVM_EXIT_SHUTDOWN)

    # ------------------------------------------------------- nested events --

    @origin(NESTED_C, "nested_svm_is_exception_vmexit", tree=TREE, read=STABLE)
    def nested_svm_is_exception_vmexit(vcpu, vector: int, error_code: int) -> bool:
        return bool(vcpu.svm.nested.ctl.intercept_exceptions & (1 << vector))

    @origin(NESTED_C, "nested_svm_inject_exception_vmexit", tree=TREE, read=STABLE)
    def nested_svm_inject_exception_vmexit(vcpu) -> None:
        ex = vcpu.arch.exception_vmexit
        vmcb = vcpu.svm.vmcb
        vmcb.exit_code = hw.SVM_EXIT_EXCP_BASE + ex.vector
        if ex.has_error_code:
            vmcb.exit_info_1 = ex.error_code  # else EXITINFO1 keeps what the last exit left
        if ex.vector == PF:
            vmcb.exit_info_2 = ex.payload if ex.has_payload else vcpu.guest().cr2
        elif ex.vector == DB:
            vcpu.kvm_deliver_exception_payload(ex)
            if vcpu.arch.dr7 & DR7_GD:
                vcpu.arch.dr7 &= ~DR7_GD
        else:
            vcpu.warn_on_once(ex.has_payload, "nested_svm_inject_exception_vmexit: payload")
        vcpu.rec.note(f"nested_svm_inject_exception_vmexit: exception_vmexit vector {ex.vector} to L1")
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "svm_check_nested_events", tree=TREE, read=STABLE)
    def svm_check_nested_events(vcpu) -> int:
        """INIT, exception VM exit, exception for L2, SMI, NMI, INTR.  Only a
        pending nested run blocks exceptions; re-injection blocks the rest,
        INIT included.  An INIT L1 does not intercept ends the ladder (0)."""
        a = vcpu.arch
        block_nested_exceptions = vcpu.svm.nested.nested_run_pending
        block_nested_events = block_nested_exceptions or vcpu.kvm_event_needs_reinjection()
        if vcpu.apic.pending_events & (1 << KVM_APIC_INIT):
            if block_nested_events:
                vcpu.rec.note("svm_check_nested_events: INIT pending, event in flight: -EBUSY")
                return -EBUSY
            if not vcpu.nested_exit_on_init():
                return 0
            vcpu.rec.note("svm_check_nested_events: INIT intercepted by L1: #VMEXIT(INIT), INIT left pending")
            vcpu.nested_svm_simple_vmexit(hw.SVM_EXIT_INIT)
            return 0
        if a.exception_vmexit.pending:
            if block_nested_exceptions:
                return -EBUSY
            vcpu.nested_svm_inject_exception_vmexit()
            return 0
        if a.exception.pending:
            if block_nested_exceptions:
                return -EBUSY
            return 0
        if a.smi_pending and not vcpu.svm_smi_blocked():
            if block_nested_events:
                vcpu.rec.note("svm_check_nested_events: SMI pending, nested run or event in flight: -EBUSY")
                return -EBUSY
            if not vcpu.svm_nested_exit_on_smi():
                return 0
            vcpu.rec.note("svm_check_nested_events: SMI intercepted by L1: #VMEXIT(SMI), SMI left pending")
            vcpu.nested_svm_simple_vmexit(hw.SVM_EXIT_SMI)
            return 0
        if a.nmi_pending and not vcpu.svm_nmi_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.svm_nested_exit_on_nmi():
                return 0
            vcpu.nested_svm_simple_vmexit(hw.SVM_EXIT_NMI)
            return 0
        if vcpu.kvm_cpu_has_interrupt() and not vcpu.svm_interrupt_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.svm_nested_exit_on_intr():
                return 0
            vcpu.nested_svm_simple_vmexit(hw.SVM_EXIT_INTR)
            return 0
        return 0


_ = (SVM_EVTINJ_TYPE_INTR,)
