"""What the April repost does differently in arch/x86/kvm/svm/nested.c,
relative to the February port (`impls.postpatch.svm_nested`).

* `nested_save_pending_event_to_vmcb12` does not clear the injected
  exception (February did; the VM exit clears the queue anyway),
* `nested_svm_inject_exception_vmexit` reads the payload slot,
* `svm_deliver_nested_exception_as_vmexit` (wired as
  nested_ops->deliver_exception_as_vmexit): -EBUSY while a nested run is
  pending, else the exception #VMEXIT if L1 intercepts the vector; always 0
  otherwise (the caller sees the exit as the pending exception gone),
* its 4/4 removes `svm_inject_page_fault_nested`, which the February base
  (5.11) does not have: nothing to do here.
"""
from __future__ import annotations

from impls.arch import DB, PF
from impls.hw import cpu as hw
from impls.origin import origin
from impls.postpatch.april.state import PATCH2, PATCH3
from impls.prepatch.state import EBUSY
from impls.prepatch.svm import SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_TYPE_NMI, \
    SVM_EVTINJ_TYPE_SOFT, SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR
from impls.prepatch.svm_nested import NESTED_C


class SvmNestedApril:
    @origin(NESTED_C, "nested_save_pending_event_to_vmcb12", tree=PATCH2)
    def nested_vmcb_save_pending_event(vcpu, vmcb12) -> None:
        a = vcpu.arch
        i = a.injected_exception
        exit_int_info = 0
        if i.valid:
            exit_int_info = i.nr | SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT
            if i.has_error_code:
                exit_int_info |= SVM_EVTINJ_VALID_ERR
                vmcb12.control.exit_int_info_err = i.error_code
        elif a.nmi_injected:
            exit_int_info = SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI
        elif a.interrupt.injected:
            exit_int_info = a.interrupt.nr | SVM_EVTINJ_VALID
            exit_int_info |= SVM_EVTINJ_TYPE_SOFT if a.interrupt.soft else SVM_EVTINJ_TYPE_INTR
        vmcb12.control.exit_int_info = exit_int_info

    @origin(NESTED_C, "nested_svm_inject_exception_vmexit", tree=PATCH2)
    def nested_svm_inject_exception_vmexit(vcpu) -> None:
        p = vcpu.arch.pending_exception
        pl = vcpu.arch.exception_payload
        vmcb = vcpu.svm.vmcb
        nr = p.nr
        vmcb.exit_code = hw.SVM_EXIT_EXCP_BASE + nr
        if p.has_error_code:
            vmcb.exit_info_1 = p.error_code
        if nr == PF:
            if pl.nested_apf:
                vmcb.exit_info_2 = vcpu.arch.apf_nested_apf_token
            elif pl.valid:
                vmcb.exit_info_2 = pl.value
            else:
                vmcb.exit_info_2 = vcpu.guest().cr2
        elif nr == DB:
            vcpu.kvm_deliver_exception_payload()
        else:
            vcpu.warn_on_once(pl.valid, "nested_svm_inject_exception_vmexit: payload")
        vcpu.rec.note(f"nested_svm_inject_exception_vmexit: pending vector {nr} to L1")
        vcpu.nested_svm_vmexit()

    @origin(NESTED_C, "svm_deliver_nested_exception_as_vmexit", tree=PATCH3)
    def svm_deliver_nested_exception_as_vmexit(vcpu) -> int:
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if vcpu.nested_exit_on_exception():
            vcpu.nested_svm_inject_exception_vmexit()
        return 0
