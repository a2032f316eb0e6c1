"""Port of the event paths of arch/x86/kvm/svm/nested.c as of Linux 6.18 (read
at the v6.18 release: clywm520/6.18.y 947ac181), where they differ from
the 6.1 port (`impls.upstream.svm_nested`).

Differs:

* `nested_svm_triple_fault` exits to L1 with SHUTDOWN only if vmcb12
  intercepts SHUTDOWN, and then clears KVM_REQ_TRIPLE_FAULT itself; else
  the request stays and vcpu_enter_guest shuts the VM down
  (92e7d5c83aff, in v6.1 already).
* `recalc_intercepts`: with V_INTR_MASKING, L0's VINTR intercept is dropped
  for L2 only while L1's saved RFLAGS.IF is 0 (6.1: always), so an
  interrupt window KVM opens for L1 while L2 runs now exits.
* `nested_svm_vmexit`: KVM_REQ_EVENT when L1 does not intercept
  interrupts (so that KVM re-opens an interrupt window for L1 in vmcb01),
  and the vNMI state carried between vmcb02 and vmcb01 (vNMI is off here).
  The port also restores L1's RFLAGS from vmcb01 (kvm_set_rflags), as 6.1
  did and the 6.1 port does not: TF is the value nested_svm_vmrun saved
  (KVM's own NMI single-step hidden, svm_get_rflags), plus TF again if
  KVM still single-steps (svm_set_rflags).  Without it a single-step KVM
  set on L1 for an NMI window just before VMRUN outlives the #VMEXIT when
  the injection into L2 cancelled it (disable_nmi_singlestep clears TF of
  the VMCB that runs, vmcb02): L1 then takes a #DB after every
  instruction.
* `nested_sync_control_from_vmcb02` (the port's sync_nested_vmcb_control):
  vmcb02's V_IRQ is not copied back to vmcb12 while L0 (and not L1)
  intercepts VINTR (6.1: only without V_INTR_MASKING).

Reused unchanged in behaviour (compared with the 6.1.55 stable tree):
svm_check_nested_events, nested_svm_is_exception_vmexit,
nested_svm_inject_exception_vmexit, nested_save_pending_event_to_vmcb12,
nested_svm_simple_vmexit, nested_svm_vmrun, enter_svm_guest_mode,
nested_vmcb02_prepare_control (vNMI branches off: see `impls.current.svm`),
nested_svm_exit_special / nested_svm_intercept / nested_svm_exit_handled
(Hyper-V's L2 TLB flush aside), nested_exit_on_init.
__nested_vmcb_check_controls refuses V_NMI_ENABLE without the NMI
intercept: L1 never sets V_NMI_ENABLE here.
"""
from __future__ import annotations

from impls.arch import DB
from impls.hw import cpu as hw
from impls.origin import origin
from impls.prepatch.svm import V_TPR_MASK
from impls.current.state import (
    KVM_MP_STATE_RUNNABLE, KVM_REQ_EVENT, KVM_REQ_TRIPLE_FAULT, SVM_EXIT_SHUTDOWN, TREE,
)

NESTED_C = "arch/x86/kvm/svm/nested.c"


class SvmNested618:
    """arch/x86/kvm/svm/nested.c of 6.18, as methods of the vCPU."""

    @origin(NESTED_C, "recalc_intercepts", tree=TREE)
    def recalc_intercepts(vcpu) -> None:
        """vmcb02's intercepts: L0's (vmcb01) OR L1's, minus VMMCALL, and
        minus VINTR if L1 uses V_INTR_MASKING and its saved IF is 0 (the
        CR8 write intercept, also dropped, is not modelled)."""
        if not vcpu.is_guest_mode():
            return
        c = vcpu.svm.vmcb
        h = vcpu.svm.nested.hsave
        g = vcpu.svm.nested.ctl
        intercepts = set(h.intercepts)
        if g.int_ctl & hw.V_INTR_MASKING_MASK and not vcpu.svm.nested.hsave_rflags_if:
            intercepts.discard(hw.INTERCEPT_VINTR)
        intercepts.discard(hw.INTERCEPT_VMMCALL)  # no Hyper-V L2 TLB flush
        c.intercepts = intercepts | g.intercepts
        c.intercept_exceptions = h.intercept_exceptions | g.intercept_exceptions

    @origin(NESTED_C, "nested_sync_control_from_vmcb02", tree=TREE)
    def sync_nested_vmcb_control(vcpu) -> None:
        """After an exit from L2: EVENTINJ and the CPU-written int_ctl bits
        (V_IRQ, V_TPR) back into the cached vmcb12 controls, except V_IRQ
        while L0 usurps it for an interrupt window (it intercepts VINTR and
        L1 does not)."""
        svm = vcpu.svm
        ctl = svm.nested.ctl
        ctl.event_inj = svm.vmcb.event_inj
        ctl.event_inj_err = svm.vmcb.event_inj_err
        mask = hw.V_IRQ_MASK | V_TPR_MASK
        if vcpu.svm_is_intercept(hw.INTERCEPT_VINTR) and hw.INTERCEPT_VINTR not in ctl.intercepts:
            mask &= ~hw.V_IRQ_MASK
        ctl.int_ctl = (ctl.int_ctl & ~mask) | (svm.vmcb.int_ctl & mask)

    @origin(NESTED_C, "nested_svm_triple_fault", tree=TREE)
    def nested_svm_triple_fault(vcpu) -> None:
        """A triple fault in L2 is L1's only if it intercepts SHUTDOWN: then
        the request is consumed and L1 gets the #VMEXIT.  Else the request
        stays, and vcpu_enter_guest takes KVM_EXIT_SHUTDOWN."""
        if hw.INTERCEPT_SHUTDOWN not in vcpu.svm.nested.ctl.intercepts:
            vcpu.rec.note("nested_svm_triple_fault: L1 does not intercept SHUTDOWN: the request stays")
            return
        vcpu.kvm_clear_request(KVM_REQ_TRIPLE_FAULT)
        vcpu.nested_svm_simple_vmexit(SVM_EXIT_SHUTDOWN)

    @origin(NESTED_C, "nested_svm_vmexit", tree=TREE)
    def nested_svm_vmexit(vcpu) -> int:
        """The #VMEXIT to L1: vmcb12 gets the exit and EXITINTINFO, vmcb01
        runs again with GIF=0 and L1's RFLAGS, KVM drops what it held for
        L2, and queues #DB if L1 single-stepped its VMRUN."""
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
        if not vcpu.svm_nested_exit_on_intr():
            vcpu.kvm_make_request(KVM_REQ_EVENT)
        # vnmi: off (impls.current.state)
        vcpu.svm_set_gif(False)
        vmcb.exit_int_info = 0
        # kvm_set_rflags(vmcb01's save.rflags): svm_set_rflags keeps TF while
        # KVM single-steps; KVM_REQ_EVENT.
        lv1 = vcpu.cpu.lv[1]
        lv1.rflags_if = svm.nested.hsave_rflags_if
        lv1.tf = svm.nested.hsave_rflags_tf or svm.nmi_singlestep
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        # Drop what svm_complete_interrupts picked up for L2.
        vcpu.arch.nmi_injected = False
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()
        vcpu.record_nested_svm_vmexit()
        if svm.nested.hsave_rflags_tf:
            vcpu.kvm_queue_exception(DB)
        return 0
