"""Port of the event paths of arch/x86/kvm/svm/nested.c (read at f2c7ef3b,
5.11-rc).  This tree has no svm_inject_page_fault_nested, no nested
triple_fault hook and builds EXITINTINFO in nested_vmcb_save_pending_event.
L1 sets in vmcb12 only what impls.hw.environment lists (no NPT for L2,
VMRUN and VMMCALL always intercepted, INIT, VINTR, V_INTR_MASKING and V_IRQ
when asked).
VMRUN and the emulated #VMEXIT load RFLAGS through kvm_set_rflags, which
makes KVM_REQ_EVENT (kept: it is what gets a pending INIT evaluated after
VMRUN sets GIF).
"""
from __future__ import annotations

from impls.api import EntryFailed, VmExit
from impls.arch import DB, PF, Ev, EvType
from impls.arch import svm as asvm
from impls.hw import cpu as hw
from impls.origin import glue, origin
from impls.prepatch.state import EBUSY, KVM_APIC_INIT, KVM_MP_STATE_RUNNABLE, KVM_REQ_EVENT, TREE
from impls.prepatch.svm import (
    NESTED_EXIT_CONTINUE, NESTED_EXIT_DONE, NESTED_EXIT_HOST, SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR,
    SVM_EVTINJ_TYPE_NMI, SVM_EVTINJ_TYPE_SOFT, SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR, V_GIF_ENABLE_MASK,
    V_GIF_MASK,
)

NESTED_C = "arch/x86/kvm/svm/nested.c"


class SvmNested:
    """arch/x86/kvm/svm/nested.c, as methods of the vCPU."""

    @origin(NESTED_C, "recalc_intercepts", tree=TREE)
    def recalc_intercepts(vcpu) -> None:
        """vmcb02's intercepts: L0's (hsave) OR L1's, minus VMMCALL (and VINTR
        if L1 uses V_INTR_MASKING)."""
        if not vcpu.is_guest_mode():
            return
        c = vcpu.svm.vmcb
        h = vcpu.svm.nested.hsave
        g = vcpu.svm.nested.ctl
        intercepts = set(h.intercepts)
        if g.int_ctl & hw.V_INTR_MASKING_MASK:
            intercepts.discard(hw.INTERCEPT_VINTR)
        intercepts.discard(hw.INTERCEPT_VMMCALL)
        c.intercepts = intercepts | g.intercepts
        c.intercept_exceptions = h.intercept_exceptions | g.intercept_exceptions

    @origin(NESTED_C, "nested_exit_on_exception", tree=TREE)
    def nested_exit_on_exception(vcpu) -> bool:
        return bool(vcpu.svm.nested.ctl.intercept_exceptions & (1 << vcpu.arch.exception.nr))

    @origin("arch/x86/kvm/svm/svm.c", "sync_nested_vmcb_control", tree=TREE)
    def sync_nested_vmcb_control(vcpu) -> None:
        svm = vcpu.svm
        ctl = svm.nested.ctl
        ctl.event_inj = svm.vmcb.event_inj
        ctl.event_inj_err = svm.vmcb.event_inj_err
        mask = hw.V_IRQ_MASK | 0x0F
        if not ctl.int_ctl & hw.V_INTR_MASKING_MASK and vcpu.svm_is_intercept(hw.INTERCEPT_VINTR):
            mask &= ~hw.V_IRQ_MASK
        ctl.int_ctl = (ctl.int_ctl & ~mask) | (svm.vmcb.int_ctl & mask)

    # -------------------------------------------------------------- VMRUN --

    @origin(NESTED_C, "nested_vmcb_checks", tree=TREE)
    def nested_vmcb_checks(vcpu, vmcb12) -> bool:
        """The control checks of this tree (EVENTINJ is not checked)."""
        return hw.INTERCEPT_VMRUN in vmcb12.control.intercepts

    @origin(NESTED_C, "nested_svm_vmrun", tree=TREE)
    def nested_svm_vmrun(vcpu) -> int:
        svm = vcpu.svm
        vmcb12 = svm.nested.vmcb12
        ret = vcpu.kvm_skip_emulated_instruction()
        if not vcpu.nested_vmcb_checks(vmcb12):
            vmcb12.control.exit_code = hw.SVM_EXIT_ERR
            vmcb12.control.exit_info_1 = vmcb12.control.exit_info_2 = 0
            vcpu.rec.observe(1, EntryFailed(asvm.exit_name(hw.SVM_EXIT_ERR)))
            return ret
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()
        svm.nested.hsave_rflags_if = vcpu.cpu.lv[1].rflags_if  # hsave->save.rflags
        svm.nested.hsave.copy_control_from(svm.vmcb)
        svm.nested.nested_run_pending = True
        vcpu.enter_svm_guest_mode(vmcb12)
        return ret

    @origin(NESTED_C, "enter_svm_guest_mode", tree=TREE)
    def enter_svm_guest_mode(vcpu, vmcb12) -> int:
        vcpu.svm.nested.ctl.copy_control_from(vmcb12.control)  # load_nested_vmcb_control
        vcpu.nested_prepare_vmcb_save(vmcb12)
        vcpu.nested_prepare_vmcb_control()
        vcpu.svm_set_gif(True)
        return 0

    @origin(NESTED_C, "nested_prepare_vmcb_save", tree=TREE)
    def nested_prepare_vmcb_save(vcpu, vmcb12) -> None:
        """L2's save area lives in the simulated CPU; what matters here is
        that loading vmcb12's RFLAGS goes through kvm_set_rflags, which makes
        KVM_REQ_EVENT: every VMRUN evaluates events on the next entry."""
        vcpu.kvm_make_request(KVM_REQ_EVENT)  # kvm_set_rflags(vmcb12 RFLAGS)

    @origin(NESTED_C, "nested_prepare_vmcb_control", tree=TREE)
    def nested_prepare_vmcb_control(vcpu) -> None:
        """L1's EVENTINJ goes into the VMCB as is: KVM's queues never see
        it unless its delivery is interrupted."""
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
        # vmcb12's next_rip is not copied (5.19's 00f08d99dd7b does): an
        # injected INTn / INT3 / INTO pushes the VMCB's own next_rip, that of
        # L1's VMRUN intercept.
        inj = asvm.decode(ctl.event_inj)
        if inj is not None and inj.type in (EvType.SOFT_INT, EvType.SOFT_EXCEPTION) and vmcb.next_rip != ctl.next_rip:
            vcpu.rec.note("nested_prepare_vmcb_control: L1's next_rip is not copied: the injected soft "
                          "event pushes the VMCB's stale next_rip")
        vcpu.enter_guest_mode()
        vmcb.level = 2  # the VMCB now holds L2's save area (nested_prepare_vmcb_save)
        vcpu.recalc_intercepts()

    # ------------------------------------------------------------ #VMEXIT --

    @origin(NESTED_C, "nested_vmcb_save_pending_event", tree=TREE)
    def nested_vmcb_save_pending_event(vcpu, vmcb12) -> None:
        """EXITINTINFO for L1, rebuilt from KVM's *injected* state."""
        a = vcpu.arch
        exit_int_info = 0
        if a.exception.injected:
            exit_int_info = a.exception.nr | SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT
            if a.exception.has_error_code:
                exit_int_info |= SVM_EVTINJ_VALID_ERR
                vmcb12.control.exit_int_info_err = a.exception.error_code
        elif a.nmi_injected:
            exit_int_info = SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI
        elif a.interrupt.injected:
            exit_int_info = a.interrupt.nr | SVM_EVTINJ_VALID
            exit_int_info |= SVM_EVTINJ_TYPE_SOFT if a.interrupt.soft else SVM_EVTINJ_TYPE_INTR
        vmcb12.control.exit_int_info = exit_int_info

    @origin(NESTED_C, "nested_svm_vmexit", tree=TREE)
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
            vcpu.nested_vmcb_save_pending_event(vmcb12)
        # svm->nrips_enabled: L1 sees NRIPS (KVM advertises it to every L1)
        c12.next_rip = vmcb.next_rip
        c12.int_ctl = svm.nested.ctl.int_ctl  # V_IRQ as the CPU left it (sync_nested_vmcb_control)
        c12.event_inj = svm.nested.ctl.event_inj
        c12.event_inj_err = svm.nested.ctl.event_inj_err
        vmcb.copy_control_from(svm.nested.hsave)  # back to L1's control area
        vmcb.level = 1
        vcpu.svm_set_gif(False)
        vcpu.cpu.lv[1].rflags_if = svm.nested.hsave_rflags_if  # L1's RFLAGS from hsave (SMM may have changed them)
        vcpu.kvm_make_request(KVM_REQ_EVENT)  # kvm_set_rflags(hsave RFLAGS)
        vmcb.exit_int_info = 0
        vcpu.arch.nmi_injected = False
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()
        vcpu.record_nested_svm_vmexit()
        return 0

    @glue("records what L1 reads in vmcb12 after an emulated #VMEXIT, as the outcome's observation")
    def record_nested_svm_vmexit(vcpu) -> None:
        """What L1 reads in vmcb12 after the #VMEXIT KVM emulated.  An NMI in
        EXITINTINFO carries no vector (APM 15.20: ignored for NMIs).  The
        #VMEXIT of svm_pre_enter_smm is never seen: RSM re-enters L2 before
        L1 runs, and the next #VMEXIT rewrites every field it wrote."""
        if getattr(vcpu, "smm_vmexit", False):
            vcpu.rec.note(f"nested_svm_vmexit for SMM: vmcb12 exit code {vcpu.svm.nested.vmcb12.control.exit_code:#x},"
                          " not seen by L1")
            return
        c12 = vcpu.svm.nested.vmcb12.control
        code = c12.exit_code
        if code == hw.SVM_EXIT_ERR:
            vcpu.rec.observe(1, EntryFailed(asvm.exit_name(code)))
            return
        info = address = None
        if hw.SVM_EXIT_EXCP_BASE <= code < hw.SVM_EXIT_EXCP_BASE + 32:
            vector = code - hw.SVM_EXIT_EXCP_BASE
            info = asvm.exception_exit_info(vector, c12.exit_info_1)
            if vector == PF:
                address = c12.exit_info_2
        vectoring = asvm.decode(c12.exit_int_info, c12.exit_int_info_err)
        if vectoring is not None and vectoring.type is EvType.NMI:
            vectoring = Ev(EvType.NMI, 2)
        # nRIP as L1 reads it (NRIPS), relative to L2's RIP (`VmExit.length`);
        # none for VMMCALL, whose length the language does not record.  The
        # guest RIP saved is L2's RIP, which only completing an instruction
        # moves: +0.
        length = None
        if c12.next_rip and code != hw.SVM_EXIT_VMMCALL:
            length = c12.next_rip - vcpu.cpu.lv[2].rip
        vcpu.rec.observe(1, VmExit(asvm.exit_name(code), info, vectoring, address, length=length))

    @origin(NESTED_C, "nested_svm_exit_special", tree=TREE)
    def nested_svm_exit_special(vcpu) -> int:
        svm = vcpu.svm
        exit_code = svm.vmcb.exit_code
        if exit_code in (hw.SVM_EXIT_INTR, hw.SVM_EXIT_NMI, hw.SVM_EXIT_NPF):
            return NESTED_EXIT_HOST
        if hw.SVM_EXIT_EXCP_BASE <= exit_code < hw.SVM_EXIT_EXCP_BASE + 32:
            excp_bits = 1 << (exit_code - hw.SVM_EXIT_EXCP_BASE)
            if svm.nested.hsave.intercept_exceptions & excp_bits:
                return NESTED_EXIT_HOST
            if exit_code == hw.SVM_EXIT_EXCP_BASE + PF and vcpu.arch.apf_host_apf_flags:
                return NESTED_EXIT_HOST
        return NESTED_EXIT_CONTINUE

    @origin(NESTED_C, "nested_svm_intercept", tree=TREE)
    def nested_svm_intercept(vcpu) -> int:
        exit_code = vcpu.svm.vmcb.exit_code
        if hw.SVM_EXIT_EXCP_BASE <= exit_code < hw.SVM_EXIT_EXCP_BASE + 32:
            return NESTED_EXIT_DONE
        if exit_code == hw.SVM_EXIT_ERR:
            return NESTED_EXIT_DONE
        if exit_code in vcpu.svm.nested.ctl.intercepts:
            return NESTED_EXIT_DONE
        return NESTED_EXIT_HOST

    @origin(NESTED_C, "nested_svm_exit_handled", tree=TREE)
    def nested_svm_exit_handled(vcpu) -> int:
        vmexit = vcpu.nested_svm_intercept()
        if vmexit == NESTED_EXIT_DONE:
            vcpu.nested_svm_vmexit()
        return vmexit

    # ------------------------------------------------------- nested events --

    @origin(NESTED_C, "nested_svm_inject_exception_vmexit", tree=TREE)
    def nested_svm_inject_exception_vmexit(vcpu) -> None:
        ex = vcpu.arch.exception
        vmcb = vcpu.svm.vmcb
        nr = ex.nr
        vmcb.exit_code = hw.SVM_EXIT_EXCP_BASE + nr
        if ex.has_error_code:
            vmcb.exit_info_1 = ex.error_code
        if nr == PF:
            if ex.nested_apf:
                vmcb.exit_info_2 = vcpu.arch.apf_nested_apf_token
            elif ex.has_payload:
                vmcb.exit_info_2 = ex.payload
            else:
                vmcb.exit_info_2 = vcpu.guest().cr2
        elif nr == DB:
            vcpu.kvm_deliver_exception_payload()
        else:
            vcpu.warn_on_once(ex.has_payload, "nested_svm_inject_exception_vmexit: payload")
        vcpu.rec.note(f"nested_svm_inject_exception_vmexit: pending vector {nr} to L1")
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "nested_svm_smi", tree=TREE)
    def nested_svm_smi(vcpu) -> None:
        """#VMEXIT(SMI).  The SMI stays pending, held by the GIF=0 the exit
        leaves."""
        vmcb = vcpu.svm.vmcb
        vmcb.exit_code = hw.SVM_EXIT_SMI
        vmcb.exit_info_1 = vmcb.exit_info_2 = 0
        vcpu.rec.note("nested_svm_smi: SMI intercepted by L1: #VMEXIT(SMI), SMI left pending")
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "nested_svm_nmi", tree=TREE)
    def nested_svm_nmi(vcpu) -> None:
        vmcb = vcpu.svm.vmcb
        vmcb.exit_code = hw.SVM_EXIT_NMI
        vmcb.exit_info_1 = vmcb.exit_info_2 = 0
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "nested_svm_intr", tree=TREE)
    def nested_svm_intr(vcpu) -> None:
        vmcb = vcpu.svm.vmcb
        vmcb.exit_code = hw.SVM_EXIT_INTR
        vmcb.exit_info_1 = vmcb.exit_info_2 = 0
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "nested_exit_on_init", tree=TREE)
    def nested_exit_on_init(vcpu) -> bool:
        return hw.INTERCEPT_INIT in vcpu.svm.nested.ctl.intercepts

    @origin(NESTED_C, "nested_svm_init", tree=TREE)
    def nested_svm_init(vcpu) -> None:
        """#VMEXIT(INIT).  The INIT stays in apic.pending_events, held by
        the GIF=0 the exit leaves."""
        vmcb = vcpu.svm.vmcb
        vmcb.exit_code = hw.SVM_EXIT_INIT
        vmcb.exit_info_1 = vmcb.exit_info_2 = 0
        vcpu.rec.note("nested_svm_init: INIT intercepted by L1: #VMEXIT(INIT), INIT left pending")
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "svm_check_nested_events", tree=TREE)
    def svm_check_nested_events(vcpu) -> int:
        """INIT, exception, SMI, NMI, INTR; every rung -EBUSY while an event
        must be re-injected or a nested run is pending.  An INIT L1 does not
        intercept ends the ladder (0) without looking at the other rungs."""
        a = vcpu.arch
        block_nested_events = vcpu.kvm_event_needs_reinjection() or vcpu.svm.nested.nested_run_pending
        if vcpu.apic.pending_events & (1 << KVM_APIC_INIT):
            if block_nested_events:
                vcpu.rec.note("svm_check_nested_events: INIT pending, event in flight: -EBUSY")
                return -EBUSY
            if not vcpu.nested_exit_on_init():
                return 0
            vcpu.nested_svm_init()
            return 0
        if a.exception.pending:
            if block_nested_events:
                return -EBUSY
            if not vcpu.nested_exit_on_exception():
                return 0
            vcpu.nested_svm_inject_exception_vmexit()
            return 0
        if a.smi_pending and not vcpu.svm_smi_blocked():
            if block_nested_events:
                vcpu.rec.note("svm_check_nested_events: SMI pending, nested run or event in flight: -EBUSY")
                return -EBUSY
            if not vcpu.svm_nested_exit_on_smi():
                return 0
            vcpu.nested_svm_smi()
            return 0
        if a.nmi_pending and not vcpu.svm_nmi_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.svm_nested_exit_on_nmi():
                return 0
            vcpu.nested_svm_nmi()
            return 0
        if vcpu.kvm_cpu_has_interrupt() and not vcpu.svm_interrupt_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.svm_nested_exit_on_intr():
                return 0
            vcpu.nested_svm_intr()
            return 0
        return 0

    @glue("the NULL hv_timer_pending hook of svm_nested_ops, as a callable")
    def svm_hv_timer_pending(vcpu) -> bool:
        return False  # svm_nested_ops has no hv_timer_pending


_ = (SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR, NESTED_EXIT_HOST, NESTED_EXIT_CONTINUE)
