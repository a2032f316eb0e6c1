"""What the RFC changes in arch/x86/kvm/svm/nested.c (patches 3/4 and 4/4).

Patch 3/4, "pending exception must be injected even with an injected
event": in `svm_check_nested_events`, only a pending nested run blocks the
exception rung (-EBUSY); an injected NMI / interrupt no longer does, so it
is either lost (the exception is not intercepted) or reported in
EXITINTINFO (it is).  Patch 4/4 then moves that rung, with the 3/4 test,
into the new `svm_deliver_nested_exception`; the final state is ported.

Patch 4/4 hunks, in the order of the diff:

* `nested_save_pending_event_to_vmcb12` (5.11's
  `nested_vmcb_save_pending_event`; the method keeps the pre-patch name its
  callers use) reports the *injected* exception in EXITINTINFO and clears
  `injected_exception.valid` (the VMX builder does not),
* `nested_exit_on_exception` and `nested_svm_inject_exception_vmexit` read
  the *pending* exception,
* `svm_check_nested_events` loses the exception rung: INIT, SMI, NMI, IRQ,
* new `svm_deliver_nested_exception`, wired as nested_ops->deliver_exception:
  1 without a pending exception, -EBUSY while a nested run is pending, 1 if
  L1 does not intercept the vector, else the exception #VMEXIT and 0.
"""
from __future__ import annotations

from impls.arch import DB, PF
from impls.hw import cpu as hw
from impls.origin import origin
from impls.postpatch.state import PATCH4
from impls.prepatch.state import EBUSY, KVM_APIC_INIT
from impls.prepatch.svm import SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_TYPE_NMI, \
    SVM_EVTINJ_TYPE_SOFT, SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR
from impls.prepatch.svm_nested import NESTED_C


class SvmNestedRfc:
    """svm/nested.c after the RFC, as methods of the vCPU."""

    @origin(NESTED_C, "nested_save_pending_event_to_vmcb12", tree=PATCH4)
    def nested_vmcb_save_pending_event(vcpu, vmcb12) -> None:
        """EXITINTINFO for L1 from the *injected* exception, else the
        injected NMI, else the injected interrupt.  The injected exception
        is consumed here."""
        a = vcpu.arch
        i = a.injected_exception
        exit_int_info = 0
        if i.valid:
            exit_int_info = i.nr | SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT
            if i.has_error_code:
                exit_int_info |= SVM_EVTINJ_VALID_ERR
                vmcb12.control.exit_int_info_err = i.error_code
            i.valid = False
        elif a.nmi_injected:
            exit_int_info = SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI
        elif a.interrupt.injected:
            exit_int_info = a.interrupt.nr | SVM_EVTINJ_VALID
            exit_int_info |= SVM_EVTINJ_TYPE_SOFT if a.interrupt.soft else SVM_EVTINJ_TYPE_INTR
        vmcb12.control.exit_int_info = exit_int_info

    @origin(NESTED_C, "nested_exit_on_exception", tree=PATCH4)
    def nested_exit_on_exception(vcpu) -> bool:
        return bool(vcpu.svm.nested.ctl.intercept_exceptions & (1 << vcpu.arch.pending_exception.nr))

    @origin(NESTED_C, "nested_svm_inject_exception_vmexit", tree=PATCH4)
    def nested_svm_inject_exception_vmexit(vcpu) -> None:
        p = vcpu.arch.pending_exception
        vmcb = vcpu.svm.vmcb
        nr = p.nr
        vmcb.exit_code = hw.SVM_EXIT_EXCP_BASE + nr
        if p.has_error_code:
            vmcb.exit_info_1 = p.error_code
        if nr == PF:
            if p.nested_apf:
                vmcb.exit_info_2 = vcpu.arch.apf_nested_apf_token
            elif p.has_payload:
                vmcb.exit_info_2 = p.payload
            else:
                vmcb.exit_info_2 = vcpu.guest().cr2
        elif nr == DB:
            vcpu.kvm_deliver_exception_payload()
        else:
            vcpu.warn_on_once(p.has_payload, "nested_svm_inject_exception_vmexit: payload")
        vcpu.rec.note(f"nested_svm_inject_exception_vmexit: pending vector {nr} to L1")
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "svm_check_nested_events", tree=PATCH4)
    def svm_check_nested_events(vcpu) -> int:
        """INIT, SMI, NMI, INTR (the exception rung moved to
        svm_deliver_nested_exception); every rung -EBUSY while an event must
        be re-injected or a nested run is pending.  The INIT rung is the
        base's."""
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

    @origin(NESTED_C, "svm_deliver_nested_exception", tree=PATCH4)
    def svm_deliver_nested_exception(vcpu) -> int:
        """nested_ops->deliver_exception: 0 = the exception #VMEXIT was
        done, 1 = no VM exit (nothing pending, or L1 does not intercept it),
        -EBUSY = a nested run is pending.  Only the pending exception is
        looked at: an injected one has begun delivery already, or came from
        L1's EVENTINJ, which intercepts do not apply to."""
        if not vcpu.arch.pending_exception.valid:
            return 1
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if not vcpu.nested_exit_on_exception():
            return 1
        vcpu.nested_svm_inject_exception_vmexit()
        return 0
