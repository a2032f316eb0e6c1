"""Port of the event paths of arch/x86/kvm/svm/svm.c (read at 39485ed9, Dec
2020) and the svm.h helpers of that era.

5.11 has a single VMCB (`svm.vmcb`): while L2 runs it holds L2's guest state
and the merged intercepts, L1's control area waiting in `svm.nested.hsave`.
Host features as in impls.hw.environment: NRIPS, no vGIF (L0 intercepts
STGI/CLGI and keeps GIF in HF_GIF_MASK), no AVIC, no vNMI.  The hardware
VMCB is `impls.hw.cpu.Vmcb`; its save area is the CPU's `LevelState` of the
level it runs.
"""
from __future__ import annotations

from impls.arch import AC, DB, MC, PF, UD
from impls.hw import cpu as hw
from impls.origin import glue, origin
from impls.prepatch.state import (
    DR6_FIXED_1, DR6_RTM, EBUSY, HF_GIF_MASK, HF_IRET_MASK, HF_NMI_MASK, KVM_EXIT_FAIL_ENTRY,
    KVM_EXIT_SHUTDOWN, KVM_REQ_EVENT, KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI, TREE,
)
from impls.prepatch.x86 import EMULTYPE_TRAP_UD, kvm_exception_is_soft

SVM_C = "arch/x86/kvm/svm/svm.c"
SVM_H = "arch/x86/kvm/svm/svm.h"

SVM_EVTINJ_VALID = 1 << 31
SVM_EVTINJ_VALID_ERR = 1 << 11
SVM_EVTINJ_TYPE_MASK = 7 << 8
SVM_EVTINJ_VEC_MASK = 0xFF
SVM_EVTINJ_TYPE_INTR = 0 << 8
SVM_EVTINJ_TYPE_NMI = 2 << 8
SVM_EVTINJ_TYPE_EXEPT = 3 << 8
SVM_EVTINJ_TYPE_SOFT = 4 << 8
SVM_EXITINTINFO_VALID = SVM_EVTINJ_VALID

V_TPR_MASK = 0x0F
V_GIF_ENABLE_MASK = 1 << 25
V_GIF_MASK = 1 << 9

NESTED_EXIT_HOST, NESTED_EXIT_DONE, NESTED_EXIT_CONTINUE = 0, 1, 2


class Svm:
    """arch/x86/kvm/svm/svm.c, as methods of the vCPU."""

    @glue("the simulated CPU's state of the level the current VMCB runs")
    def svm_guest(vcpu):
        return vcpu.cpu.lv[vcpu.svm.vmcb.level]

    # ------------------------------------------------------------ svm.h --

    @origin(SVM_H, "get_host_vmcb", tree=TREE)
    def get_host_vmcb(vcpu) -> hw.Vmcb:
        return vcpu.svm.nested.hsave if vcpu.is_guest_mode() else vcpu.svm.vmcb

    @origin(SVM_H, "svm_set_intercept", tree=TREE)
    def svm_set_intercept(vcpu, bit: int) -> None:
        vcpu.get_host_vmcb().intercepts.add(bit)
        vcpu.recalc_intercepts()

    @origin(SVM_H, "svm_clr_intercept", tree=TREE)
    def svm_clr_intercept(vcpu, bit: int) -> None:
        vcpu.get_host_vmcb().intercepts.discard(bit)
        vcpu.recalc_intercepts()

    @origin(SVM_H, "svm_is_intercept", tree=TREE)
    def svm_is_intercept(vcpu, bit: int) -> bool:
        return bit in vcpu.svm.vmcb.intercepts

    @origin(SVM_H, "gif_set", tree=TREE)
    def gif_set(vcpu) -> bool:
        return bool(vcpu.arch.hflags & HF_GIF_MASK)

    @origin(SVM_H, "nested_exit_on_nmi", tree=TREE)
    def svm_nested_exit_on_nmi(vcpu) -> bool:
        return hw.INTERCEPT_NMI in vcpu.svm.nested.ctl.intercepts

    @origin(SVM_H, "nested_exit_on_smi", tree=TREE)
    def svm_nested_exit_on_smi(vcpu) -> bool:
        return hw.INTERCEPT_SMI in vcpu.svm.nested.ctl.intercepts

    @origin(SVM_H, "nested_exit_on_intr", tree=TREE)
    def svm_nested_exit_on_intr(vcpu) -> bool:
        return hw.INTERCEPT_INTR in vcpu.svm.nested.ctl.intercepts

    # ----------------------------------------------------------- accessors --

    @origin(SVM_C, "svm_get_interrupt_shadow", tree=TREE)
    def svm_get_interrupt_shadow(vcpu) -> int:
        return (KVM_X86_SHADOW_INT_STI | KVM_X86_SHADOW_INT_MOV_SS) if vcpu.guest().shadow else 0

    @origin(SVM_C, "svm_set_interrupt_shadow", tree=TREE)
    def svm_set_interrupt_shadow(vcpu, mask: int) -> None:
        lv = vcpu.guest()
        if mask == 0:
            lv.shadow = None
        elif not lv.shadow:
            lv.shadow = "movss" if mask & KVM_X86_SHADOW_INT_MOV_SS else "sti"

    @origin(SVM_C, "svm_get_rflags", tree=TREE)
    def svm_get_if(vcpu) -> bool:
        return vcpu.guest().rflags_if

    @origin(SVM_C, "skip_emulated_instruction", tree=TREE)
    def svm_skip_emulated_instruction(vcpu) -> int:
        vcpu.guest().rip += 1  # RIP = next_rip (NRIPS)
        vcpu.svm_set_interrupt_shadow(0)
        return 1

    @origin(SVM_C, "svm_get_nmi_mask", tree=TREE)
    def svm_get_nmi_mask(vcpu) -> bool:
        return bool(vcpu.arch.hflags & HF_NMI_MASK)

    @origin(SVM_C, "svm_set_nmi_mask", tree=TREE)
    def svm_set_nmi_mask(vcpu, masked: bool) -> None:
        if masked:
            vcpu.arch.hflags |= HF_NMI_MASK
            vcpu.svm_set_intercept(hw.INTERCEPT_IRET)
        else:
            vcpu.arch.hflags &= ~HF_NMI_MASK
            vcpu.svm_clr_intercept(hw.INTERCEPT_IRET)

    # ----------------------------------------------------------- injection --

    @origin(SVM_C, "svm_queue_exception", tree=TREE)
    def svm_queue_exception(vcpu) -> None:
        ex = vcpu.arch.exception
        nr, has_error_code, error_code = ex.nr, ex.has_error_code, ex.error_code
        vcpu.kvm_deliver_exception_payload()
        vmcb = vcpu.svm.vmcb
        if kvm_exception_is_soft(nr):
            # The int3_rip path is for hosts without NRIPS; with NRIPS nothing
            # writes next_rip (5.19's 3741aec4c38f does).
            vcpu.rec.note(f"svm_queue_exception: soft exception {nr} injected without writing next_rip: "
                          "the CPU pushes the VMCB's stale one")
        vmcb.event_inj = nr | SVM_EVTINJ_VALID | (SVM_EVTINJ_VALID_ERR if has_error_code else 0) \
            | SVM_EVTINJ_TYPE_EXEPT
        vmcb.event_inj_err = error_code

    @origin(SVM_C, "svm_set_irq", tree=TREE)
    def svm_set_irq(vcpu) -> None:
        vcpu.bug_on(not vcpu.gif_set(), "svm_set_irq: GIF clear")
        vcpu.svm.vmcb.event_inj = vcpu.arch.interrupt.nr | SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_INTR

    @origin(SVM_C, "svm_inject_nmi", tree=TREE)
    def svm_inject_nmi(vcpu) -> None:
        vcpu.svm.vmcb.event_inj = SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_NMI
        vcpu.arch.hflags |= HF_NMI_MASK
        vcpu.svm_set_intercept(hw.INTERCEPT_IRET)

    @origin(SVM_C, "svm_nmi_blocked", tree=TREE)
    def svm_nmi_blocked(vcpu) -> bool:
        if not vcpu.gif_set():
            return True
        if vcpu.is_guest_mode() and vcpu.svm_nested_exit_on_nmi():
            return False
        return bool(vcpu.guest().shadow) or bool(vcpu.arch.hflags & HF_NMI_MASK)

    @origin(SVM_C, "svm_nmi_allowed", tree=TREE)
    def svm_nmi_allowed(vcpu, for_injection: bool) -> int:
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if for_injection and vcpu.is_guest_mode() and vcpu.svm_nested_exit_on_nmi():
            return -EBUSY
        return int(not vcpu.svm_nmi_blocked())

    @origin(SVM_C, "svm_interrupt_blocked", tree=TREE)
    def svm_interrupt_blocked(vcpu) -> bool:
        if not vcpu.gif_set():
            return True
        if vcpu.is_guest_mode():
            if vcpu.svm.nested.ctl.int_ctl & hw.V_INTR_MASKING_MASK:
                if_flag = vcpu.svm.nested.hsave_rflags_if
            else:
                if_flag = vcpu.svm_get_if()
            if not if_flag:
                return True
            if vcpu.svm_nested_exit_on_intr():
                return False
        elif not vcpu.svm_get_if():
            return True
        return bool(vcpu.guest().shadow)

    @origin(SVM_C, "svm_interrupt_allowed", tree=TREE)
    def svm_interrupt_allowed(vcpu, for_injection: bool) -> int:
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if for_injection and vcpu.is_guest_mode() and vcpu.svm_nested_exit_on_intr():
            vcpu.rec.note("svm_interrupt_allowed: L1 intercepts the interrupt: -EBUSY")
            return -EBUSY
        return int(not vcpu.svm_interrupt_blocked())

    @origin(SVM_C, "svm_set_vintr", tree=TREE)
    def svm_set_vintr(vcpu) -> None:
        """A dummy V_IRQ (vector 0, priority 0Fh) under the VINTR intercept:
        only the exit matters, the interrupt goes in through EVENTINJ.  The
        intercept may not reach vmcb02 (recalc_intercepts drops it when L1
        uses V_INTR_MASKING); V_IRQ is set all the same."""
        vcpu.svm_set_intercept(hw.INTERCEPT_VINTR)
        vmcb = vcpu.svm.vmcb
        vmcb.int_vector = 0
        vmcb.int_ctl &= ~hw.V_INTR_PRIO_MASK
        vmcb.int_ctl |= hw.V_IRQ_MASK | 0xF << hw.V_INTR_PRIO_SHIFT
        if not vcpu.svm_is_intercept(hw.INTERCEPT_VINTR):
            vcpu.rec.note("svm_set_vintr: VINTR not intercepted in vmcb02 (L1 uses V_INTR_MASKING): "
                          "the dummy V_IRQ is armed for L2")

    @origin(SVM_C, "svm_clear_vintr", tree=TREE)
    def svm_clear_vintr(vcpu) -> None:
        vcpu.svm_clr_intercept(hw.INTERCEPT_VINTR)
        keep = V_TPR_MASK | V_GIF_ENABLE_MASK | V_GIF_MASK | hw.V_INTR_MASKING_MASK
        vmcb = vcpu.svm.vmcb
        vmcb.int_ctl &= keep
        if vcpu.is_guest_mode():
            vcpu.svm.nested.hsave.int_ctl &= keep
            vmcb.int_ctl |= vcpu.svm.nested.ctl.int_ctl & ~keep
            if vmcb.int_ctl & hw.V_IRQ_MASK and vmcb.int_vector != vcpu.svm.nested.ctl.int_vector:
                vcpu.rec.note("svm_clear_vintr: L1's V_IRQ back in vmcb02 with the vector svm_set_vintr wrote "
                              "(int_vector not restored)")

    @origin(SVM_C, "enable_irq_window", tree=TREE)
    def svm_enable_irq_window(vcpu) -> None:
        if vcpu.gif_set():
            vcpu.svm_set_vintr()

    @origin(SVM_C, "enable_nmi_window", tree=TREE)
    def svm_enable_nmi_window(vcpu) -> None:
        """Wait for the IRET exit, for STGI, or single-step the guest over
        whatever holds the NMI (IRET, an injection, a shadow)."""
        svm = vcpu.svm
        if (vcpu.arch.hflags & (HF_NMI_MASK | HF_IRET_MASK)) == HF_NMI_MASK:
            return
        if not vcpu.gif_set():
            return
        svm.nmi_singlestep_guest_rflags_tf = vcpu.guest().tf
        svm.nmi_singlestep = True
        vcpu.guest().tf = True

    @origin(SVM_C, "disable_nmi_singlestep", tree=TREE)
    def disable_nmi_singlestep(vcpu) -> None:
        vcpu.svm.nmi_singlestep = False
        if not vcpu.svm.nmi_singlestep_guest_rflags_tf:
            vcpu.guest().tf = False

    @origin(SVM_C, "svm_set_gif", tree=TREE)
    def svm_set_gif(vcpu, value: bool) -> None:
        if value:
            if vcpu.svm_is_intercept(hw.INTERCEPT_VINTR):
                vcpu.svm_clear_vintr()
            vcpu.arch.hflags |= HF_GIF_MASK
            if vcpu.arch.smi_pending or vcpu.arch.nmi_pending or vcpu.kvm_cpu_has_injectable_intr():
                vcpu.kvm_make_request(KVM_REQ_EVENT)
        else:
            vcpu.arch.hflags &= ~HF_GIF_MASK
            vcpu.svm_clear_vintr()

    @origin(SVM_C, "svm_apic_init_signal_blocked", tree=TREE)
    def svm_apic_init_signal_blocked(vcpu) -> bool:
        """INIT is held while GIF=0, and while the current VMCB intercepts
        INIT: in guest mode that is the merged vmcb02 (L0 never intercepts
        INIT), so L1's INIT intercept holds it for svm_check_nested_events."""
        return not vcpu.gif_set() or vcpu.svm_is_intercept(hw.INTERCEPT_INIT)

    @origin(SVM_C, "svm_request_immediate_exit", tree=TREE)
    def svm_request_immediate_exit(vcpu) -> None:
        vcpu.svm.vmcb.pending_intr = True  # smp_send_reschedule(): a self-IPI

    # ------------------------------------------------- after the hardware exit --

    @origin(SVM_C, "svm_complete_interrupts", tree=TREE)
    def svm_complete_interrupts(vcpu) -> None:
        svm = vcpu.svm
        a = vcpu.arch
        exitintinfo = svm.vmcb.exit_int_info
        svm.int3_injected = 0
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
        if type_ == SVM_EVTINJ_TYPE_NMI:
            a.nmi_injected = True
        elif type_ == SVM_EVTINJ_TYPE_EXEPT:
            if kvm_exception_is_soft(vector):
                # Not re-injected: the guest executes INT3 / INTO again (the
                # int3_injected RIP rewind is for hosts without NRIPS).
                vcpu.rec.note(f"svm_complete_interrupts: soft exception {vector} in EXITINTINFO is dropped, "
                              "the instruction executes again")
            elif exitintinfo & SVM_EVTINJ_VALID_ERR:
                vcpu.kvm_requeue_exception_e(vector, svm.vmcb.exit_int_info_err)
            else:
                vcpu.kvm_requeue_exception(vector)
        elif type_ == SVM_EVTINJ_TYPE_INTR:
            vcpu.kvm_queue_interrupt(vector, False)
        elif type_ == SVM_EVTINJ_TYPE_SOFT:
            # No case for it in the switch: the guest executes INTn again.
            vcpu.rec.note(f"svm_complete_interrupts: INTn {vector} in EXITINTINFO is dropped, "
                          "the instruction executes again")
        # reserved types: dropped

    @origin(SVM_C, "svm_cancel_injection", tree=TREE)
    def svm_cancel_injection(vcpu) -> None:
        vmcb = vcpu.svm.vmcb
        vmcb.exit_int_info = vmcb.event_inj
        vmcb.exit_int_info_err = vmcb.event_inj_err
        vmcb.event_inj = 0
        vcpu.svm_complete_interrupts()

    @origin(SVM_C, "svm_vcpu_run", tree=TREE)
    def svm_vcpu_run(vcpu) -> None:
        svm = vcpu.svm
        if svm.nmi_singlestep and svm.vmcb.event_inj:
            vcpu.disable_nmi_singlestep()
            svm.vmcb.pending_intr = True  # smp_send_reschedule()
        vcpu.cpu.svm_run(svm.vmcb)
        svm.vmcb.pending_intr = False
        svm.next_rip = 0
        if vcpu.is_guest_mode():
            vcpu.sync_nested_vmcb_control()
            svm.nested.nested_run_pending = False
        vcpu.svm_complete_interrupts()
        if svm.vmcb.exit_code == hw.SVM_EXIT_EXCP_BASE + MC:
            # The host's MCE, re-injected by the VMM (impls.hw.environment),
            # after the exit's EXITINTINFO was re-queued, as on VMX; an #MC
            # that L1 intercepts is reflected to it instead.
            if not (vcpu.is_guest_mode() and vcpu.svm.nested.ctl.intercept_exceptions & (1 << MC)):
                vcpu.kvm_queue_exception(MC)

    @origin(SVM_C, "handle_exit", tree=TREE)
    def svm_handle_exit(vcpu) -> int:
        vmcb = vcpu.svm.vmcb
        exit_code = vmcb.exit_code
        if vcpu.is_guest_mode():
            vmexit = vcpu.nested_svm_exit_special()
            if vmexit == NESTED_EXIT_CONTINUE:
                vmexit = vcpu.nested_svm_exit_handled()
            if vmexit == NESTED_EXIT_DONE:
                return 1
        if exit_code == hw.SVM_EXIT_ERR:
            vcpu.run.exit_reason = KVM_EXIT_FAIL_ENTRY
            vcpu.run.data = (exit_code,)
            return 0
        handler = {
            hw.SVM_EXIT_EXCP_BASE + PF: Svm.pf_interception,
            hw.SVM_EXIT_EXCP_BASE + DB: Svm.db_interception,
            hw.SVM_EXIT_EXCP_BASE + UD: Svm.ud_interception,
            hw.SVM_EXIT_EXCP_BASE + AC: Svm.ac_interception,
            hw.SVM_EXIT_EXCP_BASE + MC: Svm.mc_interception,
            hw.SVM_EXIT_INTR: Svm.intr_interception,
            hw.SVM_EXIT_NMI: Svm.nmi_interception,
            hw.SVM_EXIT_VINTR: Svm.interrupt_window_interception,
            hw.SVM_EXIT_IRET: Svm.iret_interception,
            hw.SVM_EXIT_SHUTDOWN: Svm.shutdown_interception,
            hw.SVM_EXIT_HLT: Svm.halt_interception,
            hw.SVM_EXIT_VMRUN: Svm.vmrun_interception,
            hw.SVM_EXIT_STGI: Svm.stgi_interception,
            hw.SVM_EXIT_CLGI: Svm.clgi_interception,
            hw.SVM_EXIT_NPF: Svm.npf_interception,
            hw.SVM_EXIT_RSM: Svm.rsm_interception,
        }.get(exit_code)
        if handler is None:
            return vcpu.internal_error(0, exit_code)  # unexpected exit reason
        return getattr(vcpu, handler.__name__)()

    # ----------------------------------------------------------- handlers --

    @origin(SVM_C, "pf_interception", tree=TREE)
    def pf_interception(vcpu) -> int:
        vmcb = vcpu.svm.vmcb
        return vcpu.kvm_handle_page_fault(vmcb.exit_info_1, vmcb.exit_info_2)

    @origin(SVM_C, "npf_interception", tree=TREE)
    def npf_interception(vcpu) -> int:
        vmcb = vcpu.svm.vmcb
        return vcpu.kvm_mmu_page_fault(vmcb.exit_info_2, vmcb.exit_info_1)

    @origin(SVM_C, "db_interception", tree=TREE)
    def db_interception(vcpu) -> int:
        svm = vcpu.svm
        if not svm.nmi_singlestep:
            payload = (vcpu.arch.dr6 ^ DR6_RTM) & ~DR6_FIXED_1
            vcpu.kvm_queue_exception_p(DB, payload)
            return 1
        vcpu.disable_nmi_singlestep()
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 1

    @origin(SVM_C, "ud_interception", tree=TREE)
    def ud_interception(vcpu) -> int:
        return vcpu.x86_emulate_instruction(EMULTYPE_TRAP_UD)  # handle_ud

    @origin(SVM_C, "ac_interception", tree=TREE)
    def ac_interception(vcpu) -> int:
        vcpu.kvm_queue_exception_e(AC, 0)
        return 1

    @origin(SVM_C, "mc_interception", tree=TREE)
    def mc_interception(vcpu) -> int:
        return 1

    @origin(SVM_C, "intr_interception", tree=TREE)
    def intr_interception(vcpu) -> int:
        return 1

    @origin(SVM_C, "nmi_interception", tree=TREE)
    def nmi_interception(vcpu) -> int:
        return 1

    @origin(SVM_C, "interrupt_window_interception", tree=TREE)
    def interrupt_window_interception(vcpu) -> int:
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        vcpu.svm_clear_vintr()
        return 1

    @origin(SVM_C, "iret_interception", tree=TREE)
    def iret_interception(vcpu) -> int:
        vcpu.svm_clr_intercept(hw.INTERCEPT_IRET)
        vcpu.arch.hflags |= HF_IRET_MASK
        vcpu.svm.nmi_iret_rip = vcpu.guest().rip
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 1

    @origin(SVM_C, "halt_interception", tree=TREE)
    def halt_interception(vcpu) -> int:
        return vcpu.kvm_emulate_halt()

    @origin(SVM_C, "shutdown_interception", tree=TREE)
    def shutdown_interception(vcpu) -> int:
        """The VMCB is wiped and re-initialised (init_vmcb: hflags = 0,
        leaving guest mode implicitly); the VM goes to userspace."""
        vcpu.arch.hflags = HF_GIF_MASK
        vcpu.svm.vmcb.level = 1
        vcpu.run.exit_reason = KVM_EXIT_SHUTDOWN
        return 0

    @origin(SVM_C, "vmrun_interception", tree=TREE)
    def vmrun_interception(vcpu) -> int:
        return vcpu.nested_svm_vmrun()

    @origin(SVM_C, "stgi_interception", tree=TREE)
    def stgi_interception(vcpu) -> int:
        """Skip STGI and set GIF; KVM_REQ_EVENT comes only from svm_set_gif
        (an SMI, NMI or interrupt pending -- not an INIT, in 5.11)."""
        ret = vcpu.kvm_skip_emulated_instruction()
        vcpu.svm_set_gif(True)
        return ret

    @origin(SVM_C, "clgi_interception", tree=TREE)
    def clgi_interception(vcpu) -> int:
        ret = vcpu.kvm_skip_emulated_instruction()
        vcpu.svm_set_gif(False)
        return ret

    @origin(SVM_C, "rsm_interception", tree=TREE)
    def rsm_interception(vcpu) -> int:
        """kvm_emulate_instruction_from_buffer with RSM's two bytes."""
        return vcpu.x86_emulate_instruction(0)

    # ------------------------------------------------------------------ SMM --

    @origin(SVM_C, "svm_smi_blocked", tree=TREE)
    def svm_smi_blocked(vcpu) -> bool:
        """GIF=0 holds an SMI (APM 15.22.2), and so does SMM."""
        if not vcpu.gif_set():
            return True
        return vcpu.is_smm()

    @origin(SVM_C, "svm_smi_allowed", tree=TREE)
    def svm_smi_allowed(vcpu, for_injection: bool) -> int:
        """-EBUSY while a nested run is pending, and in L2 when L1
        intercepts SMIs (svm_check_nested_events must exit first)."""
        if vcpu.svm.nested.nested_run_pending:
            return -EBUSY
        if for_injection and vcpu.is_guest_mode() and vcpu.svm_nested_exit_on_smi():
            return -EBUSY
        return int(not vcpu.svm_smi_blocked())

    @origin(SVM_C, "svm_pre_enter_smm", tree=TREE)
    def svm_pre_enter_smm(vcpu, smstate: dict) -> int:
        """In guest mode: note "SVM guest" and the vmcb12 address in the
        state-save area, then nested_svm_vmexit with whatever exit code the
        VMCB holds from the last exit (L1 never sees it: see
        record_nested_svm_vmexit)."""
        if vcpu.is_guest_mode():
            smstate["svm_guest"] = 1  # 0x7ed8
            smstate["svm_guest_vmcb_gpa"] = vcpu.svm.nested.vmcb12_gpa  # 0x7ee0
            vcpu.smm_vmexit = True
            try:
                ret = vcpu.nested_svm_vmexit()
            finally:
                vcpu.smm_vmexit = False
            if ret:
                return ret
        return 0

    @origin(SVM_C, "svm_pre_leave_smm", tree=TREE)
    def svm_pre_leave_smm(vcpu, smstate: dict) -> int:
        """If the SMI came in guest mode (the guest has long mode and SVM,
        EFER.SVME was set): map vmcb12 and enter_svm_guest_mode from it --
        not nested_svm_vmrun, so no nested run is pending, hsave is not
        saved again and the event L1 injected is not re-checked."""
        if smstate.get("svm_guest"):
            return vcpu.enter_svm_guest_mode(vcpu.svm.nested.vmcb12)
        return 0

    @origin(SVM_C, "enable_smi_window", tree=TREE)
    def svm_enable_smi_window(vcpu) -> None:
        """GIF=0: STGI will exit (no vGIF to intercept it with), else SMM,
        which RSM leaves with an exit: nothing to do."""
