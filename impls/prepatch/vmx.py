"""Port of the event paths of arch/x86/kvm/vmx/vmx.c (read at 39485ed9, Dec
2020, the closest stored version to the RFC's base).

Module parameters as on a modern host: enable_vnmi=1, unrestricted guest,
no vm86 real mode (so kvm_inject_realmode_interrupt is never used),
enable_ept = the scenario's `ept`, allow_smaller_maxphyaddr=0, no VMware
backdoor, no guest debugging, no split-lock detection (guest_inject_ac is
always true).  The hardware VMCS is `impls.hw.cpu.Vmcs`; the guest-state area
of the loaded VMCS is the CPU's `LevelState` of the level it runs.
"""
from __future__ import annotations

from impls.arch import AC, DB, MC, NMI_VECTOR, PF, UD
from impls.arch.vmx import INTR_INFO_DELIVER_CODE, INTR_INFO_VALID
from impls.hw import cpu as hw
from impls.origin import glue, origin
from impls.prepatch.state import (
    EBUSY, GUEST_INTR_STATE_MOV_SS, GUEST_INTR_STATE_NMI, GUEST_INTR_STATE_STI, KVM_EXIT_FAIL_ENTRY,
    KVM_EXIT_SHUTDOWN, KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_SIMUL_EX, KVM_REQ_EVENT,
    KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI, PFERR_PRESENT_MASK, PFERR_RSVD_MASK, TREE,
)
from impls.prepatch.x86 import EMULTYPE_TRAP_UD, X86, kvm_exception_is_soft

VMX_C = "arch/x86/kvm/vmx/vmx.c"

INTR_TYPE_EXT_INTR = 0 << 8
INTR_TYPE_NMI_INTR = 2 << 8
INTR_TYPE_HARD_EXCEPTION = 3 << 8
INTR_TYPE_SOFT_INTR = 4 << 8
INTR_TYPE_PRIV_SW_EXCEPTION = 5 << 8
INTR_TYPE_SOFT_EXCEPTION = 6 << 8
INTR_INFO_INTR_TYPE_MASK = 0x700
INTR_INFO_VECTOR_MASK = 0xFF
VECTORING_INFO_VALID_MASK = INTR_INFO_VALID

#: Exit reasons for which a valid IDT-vectoring info is expected (vmx_handle_exit).
EXIT_REASON_PML_FULL = 62
EXIT_REASON_APIC_ACCESS = 44
EXIT_REASON_TASK_SWITCH = 9
_VECTORING_OK = frozenset({hw.EXIT_REASON_EXCEPTION_NMI, hw.EXIT_REASON_EPT_VIOLATION, EXIT_REASON_PML_FULL,
                           EXIT_REASON_APIC_ACCESS, EXIT_REASON_TASK_SWITCH})


@origin("arch/x86/kvm/vmx/vmcs.h", "is_exception_n", tree=TREE)
def is_exception_n(intr_info: int, vector: int) -> bool:
    return (intr_info & (INTR_INFO_INTR_TYPE_MASK | INTR_INFO_VECTOR_MASK | INTR_INFO_VALID)) == (
        INTR_TYPE_HARD_EXCEPTION | vector | INTR_INFO_VALID)


@origin("arch/x86/kvm/vmx/vmcs.h", "is_icebp", tree=TREE,
        read="torvalds/linux vmx.c 39485ed9 calls it; vmcs.h read in mjsmar/snpport-6.1.55 (is_intr_type)")
def is_icebp(intr_info: int) -> bool:
    """A valid privileged software exception: the #DB of INT1 / ICEBP."""
    return (intr_info & (INTR_INFO_INTR_TYPE_MASK | INTR_INFO_VALID)) == (
        INTR_TYPE_PRIV_SW_EXCEPTION | INTR_INFO_VALID)


@origin("arch/x86/kvm/vmx/vmcs.h", "is_nmi", tree=TREE)
def is_nmi(intr_info: int) -> bool:
    return (intr_info & (INTR_INFO_INTR_TYPE_MASK | INTR_INFO_VALID)) == (INTR_TYPE_NMI_INTR | INTR_INFO_VALID)


class Vmx:
    """arch/x86/kvm/vmx/vmx.c, as methods of the vCPU."""

    # ---------------------------------------------------------- accessors --

    @glue("the simulated CPU's currently loaded VMCS (vmcs_read/vmcs_write's target)")
    def vmcs(vcpu) -> hw.Vmcs:
        """The currently loaded hardware VMCS."""
        return vcpu.vmx.loaded_vmcs.vmcs

    @glue("the simulated CPU's state of the level the loaded VMCS runs")
    def vmx_guest(vcpu):
        return vcpu.cpu.lv[vcpu.vmx.loaded_vmcs.vmcs.level]

    @origin(VMX_C, "vmx_get_interrupt_shadow", tree=TREE)
    def vmx_get_interrupt_shadow(vcpu) -> int:
        shadow = vcpu.guest().shadow
        if shadow == "sti":
            return KVM_X86_SHADOW_INT_STI
        if shadow == "movss":
            return KVM_X86_SHADOW_INT_MOV_SS
        return 0

    @origin(VMX_C, "vmx_set_interrupt_shadow", tree=TREE)
    def vmx_set_interrupt_shadow(vcpu, mask: int) -> None:
        lv = vcpu.guest()
        if mask & KVM_X86_SHADOW_INT_MOV_SS:
            lv.shadow = "movss"
        elif mask & KVM_X86_SHADOW_INT_STI:
            lv.shadow = "sti"
        else:
            lv.shadow = None

    @glue("vmcs_read32(GUEST_INTERRUPTIBILITY_INFO) on the simulated CPU's state")
    def vmx_interruptibility(vcpu) -> int:
        """GUEST_INTERRUPTIBILITY_INFO of the loaded VMCS."""
        lv = vcpu.guest()
        bits = {"sti": GUEST_INTR_STATE_STI, "movss": GUEST_INTR_STATE_MOV_SS}.get(lv.shadow, 0)
        return bits | (GUEST_INTR_STATE_NMI if lv.nmi_blocked else 0)

    @origin(VMX_C, "vmx_get_rflags", tree=TREE)
    def vmx_get_if(vcpu) -> bool:
        return vcpu.guest().rflags_if

    @origin(VMX_C, "skip_emulated_instruction", tree=TREE)
    def vmx_skip_emulated_instruction(vcpu) -> int:
        vcpu.guest().rip += 1
        vcpu.vmx_set_interrupt_shadow(0)
        return 1

    @origin(VMX_C, "update_exception_bitmap", tree=TREE)
    def update_exception_bitmap(vcpu) -> None:
        """L0's exception intercepts (#PF with shadow paging, #UD, #MC, #DB,
        #AC); in guest mode OR-ed with vmcs12's bitmap, the #PF mask/match
        then coming from prepare_vmcs02."""
        eb = (1 << PF) | (1 << UD) | (1 << MC) | (1 << DB) | (1 << AC)
        if not vcpu.vmx_need_pf_intercept():
            eb &= ~(1 << PF)
        vmcs = vcpu.vmcs()
        if vcpu.is_guest_mode():
            eb |= vcpu.vmx.nested.vmcs12.exception_bitmap
        else:
            mask = PFERR_PRESENT_MASK if (vcpu.enable_ept and eb & (1 << PF)) else 0
            vmcs.pf_mask = vmcs.pf_match = mask
        vmcs.exception_bitmap = eb

    @origin("arch/x86/kvm/vmx/vmx.h", "vmx_need_pf_intercept", tree=TREE)
    def vmx_need_pf_intercept(vcpu) -> bool:
        return not vcpu.enable_ept

    # ----------------------------------------------------------- injection --

    @origin(VMX_C, "vmx_queue_exception", tree=TREE)
    def vmx_queue_exception(vcpu) -> None:
        ex = vcpu.arch.exception
        nr, has_error_code, error_code = ex.nr, ex.has_error_code, ex.error_code
        intr_info = nr | INTR_INFO_VALID
        vcpu.kvm_deliver_exception_payload()
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

    @origin(VMX_C, "vmx_inject_irq", tree=TREE)
    def vmx_inject_irq(vcpu) -> None:
        irq = vcpu.arch.interrupt.nr
        intr = irq | INTR_INFO_VALID
        if vcpu.arch.interrupt.soft:
            intr |= INTR_TYPE_SOFT_INTR
            vcpu.vmcs().entry_instruction_len = vcpu.arch.event_exit_inst_len
        else:
            intr |= INTR_TYPE_EXT_INTR
        vcpu.vmcs().entry_intr_info = intr

    @origin(VMX_C, "vmx_inject_nmi", tree=TREE)
    def vmx_inject_nmi(vcpu) -> None:
        vcpu.vmx.loaded_vmcs.nmi_known_unmasked = False
        vcpu.vmcs().entry_intr_info = INTR_TYPE_NMI_INTR | INTR_INFO_VALID | NMI_VECTOR

    @origin(VMX_C, "vmx_get_nmi_mask", tree=TREE)
    def vmx_get_nmi_mask(vcpu) -> bool:
        lv = vcpu.vmx.loaded_vmcs
        if lv.nmi_known_unmasked:
            if vcpu.vmx_interruptibility() & GUEST_INTR_STATE_NMI:  # for people: the VMCS disagrees
                vcpu.rec.note("vmx_get_nmi_mask: nmi_known_unmasked, so NMIs are reported unmasked "
                              "[the VMCS has blocking by NMI]")
            return False
        masked = bool(vcpu.vmx_interruptibility() & GUEST_INTR_STATE_NMI)
        lv.nmi_known_unmasked = not masked
        return masked

    @origin(VMX_C, "vmx_set_nmi_mask", tree=TREE)
    def vmx_set_nmi_mask(vcpu, masked: bool) -> None:
        vcpu.vmx.loaded_vmcs.nmi_known_unmasked = not masked
        vcpu.guest().nmi_blocked = bool(masked)

    @origin(VMX_C, "vmx_nmi_blocked", tree=TREE)
    def vmx_nmi_blocked(vcpu) -> bool:
        if vcpu.is_guest_mode() and vcpu.nested_exit_on_nmi():
            return False
        return bool(vcpu.vmx_interruptibility()
                    & (GUEST_INTR_STATE_MOV_SS | GUEST_INTR_STATE_STI | GUEST_INTR_STATE_NMI))

    @origin(VMX_C, "vmx_nmi_allowed", tree=TREE)
    def vmx_nmi_allowed(vcpu, for_injection: bool) -> int:
        if vcpu.vmx.nested.nested_run_pending:
            return -EBUSY
        if for_injection and vcpu.is_guest_mode() and vcpu.nested_exit_on_nmi():
            return -EBUSY
        return int(not vcpu.vmx_nmi_blocked())

    @origin(VMX_C, "vmx_interrupt_blocked", tree=TREE)
    def vmx_interrupt_blocked(vcpu) -> bool:
        if vcpu.is_guest_mode() and vcpu.nested_exit_on_intr():
            return False
        return (not vcpu.vmx_get_if()) or bool(
            vcpu.vmx_interruptibility() & (GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS))

    @origin(VMX_C, "vmx_interrupt_allowed", tree=TREE)
    def vmx_interrupt_allowed(vcpu, for_injection: bool) -> int:
        if vcpu.vmx.nested.nested_run_pending:
            return -EBUSY
        if for_injection and vcpu.is_guest_mode() and vcpu.nested_exit_on_intr():
            return -EBUSY
        return int(not vcpu.vmx_interrupt_blocked())

    @origin(VMX_C, "enable_irq_window", tree=TREE)
    def vmx_enable_irq_window(vcpu) -> None:
        vcpu.vmcs().intr_window_exiting = True

    @origin(VMX_C, "enable_nmi_window", tree=TREE)
    def vmx_enable_nmi_window(vcpu) -> None:
        if vcpu.vmx_interruptibility() & GUEST_INTR_STATE_STI:
            vcpu.rec.note("vmx_enable_nmi_window: STI blocking: the interrupt window is asked for the NMI")
            vcpu.vmx_enable_irq_window()
            return
        vcpu.vmcs().nmi_window_exiting = True

    @origin(VMX_C, "vmx_apic_init_signal_blocked", tree=TREE)
    def vmx_apic_init_signal_blocked(vcpu) -> bool:
        """INIT is held in VMX root operation only; in non-root operation
        vmx_check_nested_events turns it into a VM exit."""
        return vcpu.vmx.nested.vmxon and not vcpu.is_guest_mode()

    @origin(VMX_C, "vmx_request_immediate_exit", tree=TREE)
    def vmx_request_immediate_exit(vcpu) -> None:
        vcpu.vmx.req_immediate_exit = True

    # ------------------------------------------------- after the hardware exit --

    @origin(VMX_C, "vmx_recover_nmi_blocking", tree=TREE)
    def vmx_recover_nmi_blocking(vcpu) -> None:
        """An exit during IRET (bit 12 of the exit interruption info) means
        IRET's NMI unblocking must be undone before re-executing it."""
        vmx = vcpu.vmx
        idtv_info_valid = bool(vmx.idt_vectoring_info & VECTORING_INFO_VALID_MASK)
        if vmx.loaded_vmcs.nmi_known_unmasked:
            return
        exit_intr_info = vcpu.vmcs().exit_intr_info
        unblock_nmi = bool(exit_intr_info & hw.INTR_INFO_UNBLOCK_NMI)
        vector = exit_intr_info & INTR_INFO_VECTOR_MASK
        if (exit_intr_info & INTR_INFO_VALID) and unblock_nmi and vector != 8 and not idtv_info_valid:
            vcpu.guest().nmi_blocked = True
        else:
            vmx.loaded_vmcs.nmi_known_unmasked = not (vcpu.vmx_interruptibility() & GUEST_INTR_STATE_NMI)

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
            if idt_vectoring_info & INTR_INFO_DELIVER_CODE:
                vcpu.kvm_requeue_exception_e(vector, error_code)
            else:
                vcpu.kvm_requeue_exception(vector)
        elif type_ in (INTR_TYPE_SOFT_INTR, INTR_TYPE_EXT_INTR):
            if type_ == INTR_TYPE_SOFT_INTR:
                a.event_exit_inst_len = instr_len
            vcpu.kvm_queue_interrupt(vector, type_ == INTR_TYPE_SOFT_INTR)
        elif type_ == INTR_TYPE_PRIV_SW_EXCEPTION:
            # No case for it in the switch: the guest executes ICEBP again.
            vcpu.rec.note(f"__vmx_complete_interrupts: privileged software exception {vector} in "
                          "IDT-vectoring is dropped, the instruction executes again")
        # OTHER_EVENT: dropped

    @origin(VMX_C, "vmx_complete_interrupts", tree=TREE)
    def vmx_complete_interrupts(vcpu) -> None:
        vmcs = vcpu.vmcs()
        vcpu._vmx_complete_interrupts(vcpu.vmx.idt_vectoring_info, vmcs.exit_instruction_len,
                                      vmcs.idt_vectoring_error_code)

    @origin(VMX_C, "vmx_cancel_injection", tree=TREE)
    def vmx_cancel_injection(vcpu) -> None:
        vmcs = vcpu.vmcs()
        vcpu._vmx_complete_interrupts(vmcs.entry_intr_info, vmcs.entry_instruction_len, vmcs.entry_error_code)
        vmcs.entry_intr_info = 0

    @origin(VMX_C, "vmx_vcpu_run", tree=TREE)
    def vmx_vcpu_run(vcpu) -> None:
        vmx = vcpu.vmx
        vmcs = vcpu.vmcs()
        vmcs.preemption_timer_zero = vmx.req_immediate_exit
        vcpu.cpu.vmx_run(vmcs)
        vmcs.preemption_timer_zero = False
        vmx.req_immediate_exit = False
        vmx.nested.nested_run_pending = False
        vmx.idt_vectoring_info = 0
        vmx.fail = vcpu.cpu.vmfail
        if vmx.fail:
            vmx.exit_reason = 0xDEAD
            return
        vmx.exit_reason = vmcs.exit_reason
        if vmx.exit_reason & hw.VMX_EXIT_REASONS_FAILED_VMENTRY:
            return
        vmx.idt_vectoring_info = vmcs.idt_vectoring_info
        vcpu.vmx_recover_nmi_blocking()
        vcpu.vmx_complete_interrupts()
        vcpu.vmx_handle_exit_irqoff()

    @origin(VMX_C, "vmx_handle_exit_irqoff", tree=TREE)
    def vmx_handle_exit_irqoff(vcpu) -> None:
        """A machine check in the guest is the host's (handle_exception_
        nmi_irqoff); the VMM turns it back into a guest #MC
        (impls.hw.environment)."""
        vmcs = vcpu.vmcs()
        if vcpu.vmx.exit_reason == hw.EXIT_REASON_EXCEPTION_NMI and is_exception_n(vmcs.exit_intr_info, MC):
            if not (vcpu.is_guest_mode() and vcpu.vmx.nested.vmcs12.exception_bitmap & (1 << MC)):
                vcpu.kvm_queue_exception(MC)  # KVM_X86_SET_MCE from the VMM

    @origin(VMX_C, "vmx_handle_exit", tree=TREE)
    def vmx_handle_exit(vcpu) -> int:
        vmx = vcpu.vmx
        exit_reason = vmx.exit_reason
        vectoring_info = vmx.idt_vectoring_info
        vcpu.warn_on_once(vmx.nested.nested_run_pending, "vmx_handle_exit: nested_run_pending")
        if vcpu.is_guest_mode():
            if vcpu.nested_vmx_reflect_vmexit():
                return 1
        if exit_reason & hw.VMX_EXIT_REASONS_FAILED_VMENTRY or vmx.fail:
            vcpu.run.exit_reason = KVM_EXIT_FAIL_ENTRY
            vcpu.run.data = (exit_reason,)
            return 0
        basic = exit_reason & 0xFFFF
        if vectoring_info & VECTORING_INFO_VALID_MASK and basic not in _VECTORING_OK:
            return vcpu.internal_error(KVM_INTERNAL_ERROR_DELIVERY_EV, vectoring_info, exit_reason)
        handler = {
            hw.EXIT_REASON_EXCEPTION_NMI: Vmx.handle_exception_nmi,
            hw.EXIT_REASON_EXTERNAL_INTERRUPT: Vmx.handle_external_interrupt,
            hw.EXIT_REASON_TRIPLE_FAULT: Vmx.handle_triple_fault,
            hw.EXIT_REASON_INTERRUPT_WINDOW: Vmx.handle_interrupt_window,
            hw.EXIT_REASON_NMI_WINDOW: Vmx.handle_nmi_window,
            hw.EXIT_REASON_VMLAUNCH: Vmx.handle_vmlaunch,
            hw.EXIT_REASON_VMRESUME: Vmx.handle_vmresume,
            hw.EXIT_REASON_EPT_VIOLATION: Vmx.handle_ept_violation,
            hw.EXIT_REASON_EPT_MISCONFIG: Vmx.handle_ept_misconfig,
            hw.EXIT_REASON_PREEMPTION_TIMER: Vmx.handle_preemption_timer,
            hw.EXIT_REASON_HLT: X86.kvm_emulate_halt,
        }.get(basic)
        if handler is None:
            return vcpu.internal_error(0, exit_reason)  # unexpected exit reason
        return getattr(vcpu, handler.__name__)()

    # ----------------------------------------------------------- handlers --

    @origin(VMX_C, "handle_exception_nmi", tree=TREE)
    def handle_exception_nmi(vcpu) -> int:
        vmcs = vcpu.vmcs()
        vect_info = vcpu.vmx.idt_vectoring_info
        intr_info = vmcs.exit_intr_info
        if is_exception_n(intr_info, MC) or is_nmi(intr_info):
            return 1
        if is_exception_n(intr_info, UD):
            return vcpu.handle_ud()
        error_code = vmcs.exit_intr_error_code if intr_info & INTR_INFO_DELIVER_CODE else 0
        if vect_info & VECTORING_INFO_VALID_MASK and not (
                is_exception_n(intr_info, PF) and not error_code & PFERR_RSVD_MASK):
            return vcpu.internal_error(KVM_INTERNAL_ERROR_SIMUL_EX, vect_info, intr_info, error_code)
        if is_exception_n(intr_info, PF):
            cr2 = vmcs.exit_qualification
            if vcpu.enable_ept:
                vcpu.warn_on_once(True, "handle_exception_nmi: #PF exit with EPT on")
                return 1
            return vcpu.kvm_handle_page_fault(error_code, cr2)
        ex_no = intr_info & INTR_INFO_VECTOR_MASK
        if ex_no == DB:
            # No guest debugging: an ICEBP exits on the instruction itself,
            # which KVM skips before queueing the trap-like #DB (a hardware
            # exception from here on).
            if is_icebp(intr_info):
                vcpu.warn_on_once(not vcpu.vmx_skip_emulated_instruction(),
                                  "handle_exception_nmi: skipping ICEBP failed")
                if vcpu.is_guest_mode():  # only L1 could tell the type (IDT-vectoring), for people
                    vcpu.rec.note("handle_exception_nmi: ICEBP skipped, its #DB queued as a hardware exception")
            vcpu.kvm_queue_exception_p(DB, vmcs.exit_qualification)
            return 1
        if ex_no == AC:
            vcpu.kvm_queue_exception_e(AC, error_code)  # guest_inject_ac()
            return 1
        vcpu.run.exit_reason = 1  # KVM_EXIT_EXCEPTION
        vcpu.run.data = (ex_no, error_code)
        return 0

    @origin(VMX_C, "handle_ud", tree=TREE)
    def handle_ud(vcpu) -> int:
        return vcpu.x86_emulate_instruction(EMULTYPE_TRAP_UD)

    @origin(VMX_C, "handle_external_interrupt", tree=TREE)
    def handle_external_interrupt(vcpu) -> int:
        return 1

    @origin(VMX_C, "handle_triple_fault", tree=TREE)
    def handle_triple_fault(vcpu) -> int:
        vcpu.run.exit_reason = KVM_EXIT_SHUTDOWN
        return 0

    @origin(VMX_C, "handle_interrupt_window", tree=TREE)
    def handle_interrupt_window(vcpu) -> int:
        vcpu.vmcs().intr_window_exiting = False
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 1

    @origin(VMX_C, "handle_nmi_window", tree=TREE)
    def handle_nmi_window(vcpu) -> int:
        vcpu.vmcs().nmi_window_exiting = False
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 1

    @origin(VMX_C, "handle_ept_violation", tree=TREE)
    def handle_ept_violation(vcpu) -> int:
        exit_qualification = vcpu.vmcs().exit_qualification
        if (not vcpu.vmx.idt_vectoring_info & VECTORING_INFO_VALID_MASK
                and exit_qualification & hw.INTR_INFO_UNBLOCK_NMI):
            vcpu.guest().nmi_blocked = True
        vcpu.arch.exit_qualification = exit_qualification
        return vcpu.kvm_mmu_page_fault(0, 0)

    @origin(VMX_C, "handle_ept_misconfig", tree=TREE)
    def handle_ept_misconfig(vcpu) -> int:
        return vcpu.kvm_mmu_page_fault(0, 0)  # MMIO: emulated

    @origin(VMX_C, "handle_preemption_timer", tree=TREE)
    def handle_preemption_timer(vcpu) -> int:
        return 1  # req_immediate_exit: nothing to do

    @origin(VMX_C, "handle_vmlaunch", tree=TREE)
    def handle_vmlaunch(vcpu) -> int:
        return vcpu.nested_vmx_run(True)

    @origin(VMX_C, "handle_vmresume", tree=TREE)
    def handle_vmresume(vcpu) -> int:
        return vcpu.nested_vmx_run(False)

    # ------------------------------------------------------------------ SMM --

    @origin(VMX_C, "vmx_smi_allowed", tree=TREE)
    def vmx_smi_allowed(vcpu, for_injection: bool) -> int:
        """Only a pending nested run (-EBUSY) or SMM itself holds an SMI: no
        interrupt shadow, no blocking by NMI."""
        if vcpu.vmx.nested.nested_run_pending:
            return -EBUSY
        return int(not vcpu.is_smm())

    @origin(VMX_C, "vmx_pre_enter_smm", tree=TREE)
    def vmx_pre_enter_smm(vcpu, smstate: dict) -> int:
        """In guest mode, leave it with the exit reason -1 (nothing is
        written into vmcs12, L1 sees nothing) and remember it, as well as
        VMXON, which SMM leaves off."""
        nested = vcpu.vmx.nested
        nested.smm_guest_mode = vcpu.is_guest_mode()
        if nested.smm_guest_mode:
            vcpu.nested_vmx_vmexit(-1, 0, 0)
        nested.smm_vmxon = nested.vmxon
        nested.vmxon = False
        # vmx_clear_hv_timer: no LAPIC timer (impls.hw.environment).
        return 0

    @origin(VMX_C, "vmx_pre_leave_smm", tree=TREE)
    def vmx_pre_leave_smm(vcpu, smstate: dict) -> int:
        """VMXON back on; if the SMI came in guest mode, re-enter it from
        vmcs12 (nested_vmx_enter_non_root_mode without a VM entry: no event
        injection, vmcs02's guest state kept)."""
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

    @origin(VMX_C, "enable_smi_window", tree=TREE)
    def vmx_enable_smi_window(vcpu) -> None:
        """Nothing: the SMI is held only in SMM, and RSM exits anyway."""
