"""Port of the event paths of arch/x86/kvm/svm/svm.c and svm.h as of Linux
6.18 (read at the v6.18 release: clywm520/6.18.y 947ac181), where they
differ from the 6.1 port (`impls.upstream.svm`).

Differs:

* `svm_complete_interrupts` re-queues an exception through the 6.18
  kvm_requeue_exception (vector, has_error_code, error_code).
* `svm_set_vintr` gives up when the VINTR intercept did not stick:
  recalc_intercepts drops it for L2 while L1's saved RFLAGS.IF is 0 (see
  `impls.current.svm_nested`), and then no V_IRQ is faked.
* AMD vNMI (6.4): `is_vnmi_enabled`, and the kvm_x86_ops hooks
  `svm_is_vnmi_pending` / `svm_set_vnmi_pending` that process_nmi and
  KVM_GET_VCPU_EVENTS consult.  vNMI is off here (`state.VNMI_ENABLED`),
  so the hooks answer "no virtual NMI" and every vNMI branch of
  svm_inject_nmi, svm_get_nmi_mask / svm_set_nmi_mask,
  svm_enable_nmi_window, nested_svm_vmexit and
  nested_vmcb02_prepare_control takes its 6.1 side.

Reused unchanged in behaviour (compared with the 6.1.55 stable tree):
svm_inject_exception, svm_inject_irq, svm_update_soft_interrupt_rip,
svm_complete_soft_interrupt, svm_nmi_allowed, svm_interrupt_allowed,
svm_smi_allowed, svm_interrupt_blocked, svm_set_gif,
svm_apic_init_signal_blocked, svm_enter_smm / svm_leave_smm (the vmcb12
save area is cached too), the exit handlers.  With vNMI off, the NMI
functions (svm_inject_nmi, svm_get_nmi_mask, svm_set_nmi_mask,
svm_nmi_blocked, svm_enable_nmi_window, iret_interception and the IRET
test in svm_complete_interrupts) keep 6.1's behaviour with the hflags
bits renamed to svm->nmi_masked and svm->awaiting_iret_completion
(`impls.current.state`).  shutdown_interception leaves SMM before
resetting the vCPU, which ends the scenario either way.  svm_vcpu_run
takes the immediate exit as a run flag (same effect).
"""
from __future__ import annotations

from impls.hw import cpu as hw
from impls.origin import origin
from impls.prepatch.svm import (
    SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_NMI, SVM_EVTINJ_TYPE_SOFT,
    SVM_EVTINJ_VALID_ERR, SVM_EVTINJ_VEC_MASK, SVM_EXITINTINFO_VALID,
)
from impls.current.state import (
    HF_IRET_MASK, HF_NMI_MASK, KVM_REQ_EVENT, TREE, V_NMI_ENABLE_MASK, V_NMI_PENDING_MASK, VNMI_ENABLED, X86_TRAP_VC,
)

SVM_C = "arch/x86/kvm/svm/svm.c"
SVM_H = "arch/x86/kvm/svm/svm.h"


class Svm618:
    """arch/x86/kvm/svm/svm.c of 6.18, as methods of the vCPU."""

    # ------------------------------------------------------------------ vNMI --

    @origin(SVM_H, "is_vnmi_enabled", tree=TREE)
    def is_vnmi_enabled(vcpu) -> bool:
        """V_NMI_ENABLE in vmcb01 (get_vnmi_vmcb_l1: none without the
        `vnmi` parameter or while L2 runs)."""
        if not VNMI_ENABLED or vcpu.is_guest_mode():
            return False
        return bool(vcpu.svm.vmcb.int_ctl & V_NMI_ENABLE_MASK)

    @origin(SVM_C, "svm_is_vnmi_pending", tree=TREE)
    def svm_is_vnmi_pending(vcpu) -> bool:
        if not vcpu.is_vnmi_enabled():
            return False
        return bool(vcpu.svm.vmcb.int_ctl & V_NMI_PENDING_MASK)

    @origin(SVM_C, "svm_set_vnmi_pending", tree=TREE)
    def svm_set_vnmi_pending(vcpu) -> bool:
        """Hand an NMI to the CPU's vNMI slot if there is room (that counts
        as its injection)."""
        if not vcpu.is_vnmi_enabled():
            return False
        vmcb = vcpu.svm.vmcb
        if vmcb.int_ctl & V_NMI_PENDING_MASK:
            return False
        vmcb.int_ctl |= V_NMI_PENDING_MASK
        return True

    # ---------------------------------------------------------------- VINTR --

    @origin(SVM_C, "svm_set_vintr", tree=TREE)
    def svm_set_vintr(vcpu) -> None:
        """Intercept VINTR and fake a V_IRQ so that the CPU exits when the
        guest can take an interrupt; nothing more if recalc_intercepts
        dropped the intercept for L2 (L1's saved IF is 0, so no interrupt
        for L1 can be taken while L2 runs)."""
        vcpu.svm_set_intercept(hw.INTERCEPT_VINTR)
        if not vcpu.svm_is_intercept(hw.INTERCEPT_VINTR):
            vcpu.rec.note("svm_set_vintr: VINTR not intercepted for L2 (L1's IF=0): no window")
            return
        vmcb = vcpu.svm.vmcb
        vmcb.int_vector = 0
        vmcb.int_ctl &= ~hw.V_INTR_PRIO_MASK
        vmcb.int_ctl |= hw.V_IRQ_MASK | 0xF << hw.V_INTR_PRIO_SHIFT

    # ------------------------------------------------- after the hardware exit --

    @origin(SVM_C, "svm_complete_interrupts", tree=TREE)
    def svm_complete_interrupts(vcpu) -> None:
        svm = vcpu.svm
        a = vcpu.arch
        exitintinfo = svm.vmcb.exit_int_info
        nmi_l1_to_l2 = svm.nmi_l1_to_l2
        soft_int_injected = svm.soft_int_injected
        svm.nmi_l1_to_l2 = False
        svm.soft_int_injected = False
        # awaiting_iret_completion and nmi_masked are hflags bits here.
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
            has_error_code = bool(exitintinfo & SVM_EVTINJ_VALID_ERR)
            vcpu.kvm_requeue_exception(vector, has_error_code,
                                       svm.vmcb.exit_int_info_err if has_error_code else 0)
        elif type_ == SVM_EVTINJ_TYPE_INTR:
            vcpu.kvm_queue_interrupt(vector, False)
        elif type_ == SVM_EVTINJ_TYPE_SOFT:
            vcpu.kvm_queue_interrupt(vector, True)
