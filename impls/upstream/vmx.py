"""Port of the event paths of arch/x86/kvm/vmx/vmx.c as of Linux 6.1 (written
at 7709aba8, re-read in 6.1.55: the same), where they differ from 5.11
(`impls.prepatch.vmx`).

Differs: the kvm_x86_ops hooks are called inject_exception / inject_irq /
inject_nmi (5.11: queue_exception / set_irq / set_nmi),
`vmx_inject_exception` delivers the payload of the exception it is handed
and keeps only bits 15:0 of the error code; `vmx_inject_irq` takes
`reinjected` (for tracing only).

Reused unchanged (module parameters as in `impls.prepatch.vmx`): see
impls.upstream.reused (the NMI and interrupt blocking and window hooks,
the complete_interrupts family -- its queue clearing is the 6.1
kvm_clear_exception_queue through the override --, vmx_vcpu_run,
vmx_handle_exit and the exit handlers).
"""
from __future__ import annotations

from impls.arch.vmx import INTR_INFO_DELIVER_CODE, INTR_INFO_VALID
from impls.origin import origin
from impls.prepatch.vmx import (
    INTR_TYPE_EXT_INTR, INTR_TYPE_HARD_EXCEPTION, INTR_TYPE_SOFT_EXCEPTION, INTR_TYPE_SOFT_INTR,
)
from impls.prepatch.x86 import kvm_exception_is_soft
from impls.upstream.state import STABLE, TREE

VMX_C = "arch/x86/kvm/vmx/vmx.c"


class Vmx61:
    """arch/x86/kvm/vmx/vmx.c of 6.1, as methods of the vCPU."""

    @origin(VMX_C, "vmx_inject_exception", tree=TREE, read=STABLE)
    def vmx_inject_exception(vcpu) -> None:
        ex = vcpu.arch.exception
        intr_info = ex.vector | INTR_INFO_VALID
        vcpu.kvm_deliver_exception_payload(ex)
        vmcs = vcpu.vmcs()
        if ex.has_error_code:
            vmcs.entry_error_code = ex.error_code & 0xFFFF
            intr_info |= INTR_INFO_DELIVER_CODE
        # vm86 real mode (kvm_inject_realmode_interrupt): never, unrestricted guest.
        vcpu.warn_on_once(vcpu.vmx.emulation_required, "vmx_inject_exception: emulation required")
        if kvm_exception_is_soft(ex.vector):
            vmcs.entry_instruction_len = vcpu.arch.event_exit_inst_len
            intr_info |= INTR_TYPE_SOFT_EXCEPTION
        else:
            intr_info |= INTR_TYPE_HARD_EXCEPTION
        vmcs.entry_intr_info = intr_info
        # vmx_clear_hlt: no activity states.

    @origin(VMX_C, "vmx_inject_irq", tree=TREE, read=STABLE)
    def vmx_inject_irq(vcpu, reinjected: bool) -> None:
        irq = vcpu.arch.interrupt.nr
        intr = irq | INTR_INFO_VALID
        if vcpu.arch.interrupt.soft:
            intr |= INTR_TYPE_SOFT_INTR
            vcpu.vmcs().entry_instruction_len = vcpu.arch.event_exit_inst_len
        else:
            intr |= INTR_TYPE_EXT_INTR
        vcpu.vmcs().entry_intr_info = intr

    # ------------------------------------------------------------------ SMM --

    @origin(VMX_C, "vmx_enter_smm", tree=TREE, read=STABLE)
    def vmx_enter_smm(vcpu, smstate: dict) -> int:
        """5.11's vmx_pre_enter_smm, renamed: leave guest mode with exit
        reason -1 (nothing for L1), remember it and VMXON."""
        nested = vcpu.vmx.nested
        nested.smm_guest_mode = vcpu.is_guest_mode()
        if nested.smm_guest_mode:
            vcpu.nested_vmx_vmexit(-1, 0, 0)
        nested.smm_vmxon = nested.vmxon
        nested.vmxon = False
        return 0

    @origin(VMX_C, "vmx_leave_smm", tree=TREE, read=STABLE)
    def vmx_leave_smm(vcpu, smstate: dict) -> int:
        """5.11's vmx_pre_leave_smm, renamed, plus KVM_REQ_EVENT for a
        pending MTF (not modelled: L1 uses no MTF)."""
        nested = vcpu.vmx.nested
        if nested.smm_vmxon:
            nested.vmxon = True
            nested.smm_vmxon = False
        if nested.smm_guest_mode:
            ret = vcpu.nested_vmx_enter_non_root_mode(False)
            if ret:
                return ret
            nested.smm_guest_mode = False
        return 0
