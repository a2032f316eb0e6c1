"""Port of the event paths of arch/x86/kvm/vmx/vmx.c as of Linux 6.18 (read at
the v6.18 release: clywm520/6.18.y 947ac181), where they differ from the
6.1 port (`impls.upstream.vmx`).

Differs: `__vmx_complete_interrupts` re-queues an exception through the
6.18 kvm_requeue_exception (vector, has_error_code, error_code), which
replaced kvm_requeue_exception / kvm_requeue_exception_e.

Reused unchanged (compared with the 6.1.55 stable tree): vmx_inject_exception,
vmx_inject_irq, vmx_inject_nmi, the NMI-mask and shadow accessors,
vmx_nmi_blocked / vmx_interrupt_blocked (now through
__vmx_interrupt_blocked, same test) and their _allowed hooks,
vmx_smi_allowed, the window hooks, vmx_recover_nmi_blocking,
vmx_complete_interrupts, vmx_cancel_injection, vmx_enter_smm /
vmx_leave_smm, vmx_apic_init_signal_blocked, vmx_handle_exit and the exit
handlers (handle_exception_nmi's new #NM payload and #VE warning concern
vectors the scenario does not raise).  vmx_vcpu_run takes the immediate
exit as a run flag instead of the request_immediate_exit hook, with the
same effect (`impls.current.state`), and vmx/main.c's vt_* wrappers pass
straight to these for a VM that is not a TDX guest.
"""
from __future__ import annotations

from impls.origin import origin
from impls.prepatch.vmx import (
    INTR_INFO_INTR_TYPE_MASK, INTR_INFO_VECTOR_MASK, INTR_TYPE_EXT_INTR, INTR_TYPE_HARD_EXCEPTION,
    INTR_TYPE_NMI_INTR, INTR_TYPE_PRIV_SW_EXCEPTION, INTR_TYPE_SOFT_EXCEPTION, INTR_TYPE_SOFT_INTR,
    VECTORING_INFO_VALID_MASK,
)
from impls.arch.vmx import INTR_INFO_DELIVER_CODE
from impls.current.state import KVM_REQ_EVENT, TREE

VMX_C = "arch/x86/kvm/vmx/vmx.c"


class Vmx618:
    """arch/x86/kvm/vmx/vmx.c of 6.18, as methods of the vCPU."""

    @origin(VMX_C, "__vmx_complete_interrupts", tree=TREE)
    def _vmx_complete_interrupts(vcpu, idt_vectoring_info: int, instr_len: int, error_code: int) -> None:
        """Turn the event the CPU was delivering back into KVM's queues, after
        dropping whatever KVM had queued (pending exceptions included); a
        soft event keeps its instruction length for the re-injection."""
        a = vcpu.arch
        a.nmi_injected = False
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()
        if not idt_vectoring_info & VECTORING_INFO_VALID_MASK:
            return
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        vector = idt_vectoring_info & INTR_INFO_VECTOR_MASK
        type_ = idt_vectoring_info & INTR_INFO_INTR_TYPE_MASK
        if type_ == INTR_TYPE_NMI_INTR:
            a.nmi_injected = True
            vcpu.vmx_set_nmi_mask(False)
        elif type_ in (INTR_TYPE_SOFT_EXCEPTION, INTR_TYPE_HARD_EXCEPTION):
            if type_ == INTR_TYPE_SOFT_EXCEPTION:
                a.event_exit_inst_len = instr_len
            has_error_code = bool(idt_vectoring_info & INTR_INFO_DELIVER_CODE)
            vcpu.kvm_requeue_exception(vector, has_error_code, error_code if has_error_code else 0)
        elif type_ in (INTR_TYPE_SOFT_INTR, INTR_TYPE_EXT_INTR):
            if type_ == INTR_TYPE_SOFT_INTR:
                a.event_exit_inst_len = instr_len
            vcpu.kvm_queue_interrupt(vector, type_ == INTR_TYPE_SOFT_INTR)
        elif type_ == INTR_TYPE_PRIV_SW_EXCEPTION:
            # Still no case for it in 6.18: the guest executes ICEBP again.
            vcpu.rec.note(f"__vmx_complete_interrupts: privileged software exception {vector} in "
                          "IDT-vectoring is dropped, the instruction executes again")
        # OTHER_EVENT: dropped
