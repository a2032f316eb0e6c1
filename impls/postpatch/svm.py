"""What the RFC changes in arch/x86/kvm/svm/svm.c (patch 4/4).

One hunk: `svm_queue_exception` takes the vector and error code from the
*injected* exception, and instead of delivering the payload (now done when
kvm_deliver_pending_exception commits the exception) it warns if an
exception is still pending.  The #BP-without-NRIPS path and the EVENTINJ
writes are unchanged (the host has NRIPS: impls.hw.environment).
"""
from __future__ import annotations

from impls.origin import origin
from impls.postpatch.state import PATCH4
from impls.prepatch.svm import SVM_C, SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_VALID, SVM_EVTINJ_VALID_ERR
from impls.prepatch.x86 import kvm_exception_is_soft


class SvmRfc:
    """svm/svm.c after the RFC, as methods of the vCPU."""

    @origin(SVM_C, "svm_queue_exception", tree=PATCH4)
    def svm_queue_exception(vcpu) -> None:
        i = vcpu.arch.injected_exception
        nr, has_error_code, error_code = i.nr, i.has_error_code, i.error_code
        vcpu.warn_on_once(vcpu.arch.pending_exception.valid, "svm_queue_exception: exception pending")
        vmcb = vcpu.svm.vmcb
        if kvm_exception_is_soft(nr):  # as 5.11's (impls.prepatch.svm)
            vcpu.rec.note(f"svm_queue_exception: soft exception {nr} injected without writing next_rip: "
                          "the CPU pushes the VMCB's stale one")
        vmcb.event_inj = nr | SVM_EVTINJ_VALID | (SVM_EVTINJ_VALID_ERR if has_error_code else 0) \
            | SVM_EVTINJ_TYPE_EXEPT
        vmcb.event_inj_err = error_code
