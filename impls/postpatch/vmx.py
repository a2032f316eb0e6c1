"""What the RFC changes in arch/x86/kvm/vmx/vmx.c (patch 4/4).

Hunks:

* `vmx_update_emulated_instruction`: MTF becomes pending unless a
  non-#DB exception is *pending* (`pending_exception.valid`).  Not ported:
  L1 never enables MTF here (impls.hw.environment), and the pre-patch port
  has no such function either.
* `vmx_queue_exception` takes the vector and error code from the *injected*
  exception and warns if one is still pending, instead of delivering the
  payload (kvm_deliver_pending_exception does that when it commits).
* `handle_invalid_guest_state`: the emulation-required internal error looks
  at `pending_exception.valid`.  Not ported: with unrestricted guest the
  guest state is never invalid here (impls.hw.environment).
"""
from __future__ import annotations

from impls.arch.vmx import INTR_INFO_DELIVER_CODE, INTR_INFO_VALID
from impls.origin import origin
from impls.postpatch.state import PATCH4
from impls.prepatch.vmx import INTR_TYPE_HARD_EXCEPTION, INTR_TYPE_SOFT_EXCEPTION, VMX_C
from impls.prepatch.x86 import kvm_exception_is_soft


class VmxRfc:
    """vmx/vmx.c after the RFC, as methods of the vCPU."""

    @origin(VMX_C, "vmx_queue_exception", tree=PATCH4)
    def vmx_queue_exception(vcpu) -> None:
        i = vcpu.arch.injected_exception
        nr, has_error_code, error_code = i.nr, i.has_error_code, i.error_code
        intr_info = nr | INTR_INFO_VALID
        vcpu.warn_on_once(vcpu.arch.pending_exception.valid, "vmx_queue_exception: exception pending")
        vmcs = vcpu.vmcs()
        if has_error_code:
            vmcs.entry_error_code = error_code
            intr_info |= INTR_INFO_DELIVER_CODE
        vcpu.warn_on_once(vcpu.vmx.emulation_required, "vmx_queue_exception: emulation required")
        if kvm_exception_is_soft(nr):
            vmcs.entry_instruction_len = vcpu.arch.event_exit_inst_len
            intr_info |= INTR_TYPE_SOFT_EXCEPTION
        else:
            intr_info |= INTR_TYPE_HARD_EXCEPTION
        vmcs.entry_intr_info = intr_info
