"""Port of the event paths of arch/x86/kvm/vmx/nested.c (read at d51e1d3f,
5.11-rc) and the nested.h helpers.

L1 is a hypervisor that sets, in vmcs12, only what impls.hw.environment
lists: so there is no MTF, no preemption timer, no posted interrupts, no
acknowledge-interrupt-on-exit, no EPT12, no shadow VMCS or eVMCS.  The rungs
of vmx_check_nested_events for those stay, in KVM's order, as comments.
INIT and SIPI (this tree has bf0cd88c, wait-for-SIPI and the SIPI exit) have
their rungs; a SIPI is never sent (the vCPU is the BSP).
"""
from __future__ import annotations

from impls.api import EntryFailed, VmExit
from impls.arch import DB, NMI_VECTOR, PF, Mode
from impls.arch import vmx as avmx
from impls.arch.vmx import INTR_INFO_DELIVER_CODE, INTR_INFO_VALID
from impls.hw import cpu as hw
from impls.origin import glue, origin
from impls.prepatch.state import (
    CPU_BASED_HLT_EXITING, CPU_BASED_INTR_WINDOW_EXITING, CPU_BASED_MONITOR_TRAP_FLAG, CPU_BASED_NMI_WINDOW_EXITING,
    DR6_FIXED_1, DR6_RTM, EBUSY, GUEST_ACTIVITY_ACTIVE, GUEST_ACTIVITY_HLT, GUEST_ACTIVITY_WAIT_SIPI, KVM_APIC_INIT,
    KVM_APIC_SIPI, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_REQ_EVENT,
    KVM_X86_SHADOW_INT_MOV_SS, PIN_BASED_EXT_INTR_MASK, PIN_BASED_NMI_EXITING, PIN_BASED_VIRTUAL_NMIS, TREE,
    X86Exception,
)
from impls.prepatch.vmx import (
    INTR_INFO_INTR_TYPE_MASK, INTR_INFO_VECTOR_MASK, INTR_TYPE_EXT_INTR, INTR_TYPE_HARD_EXCEPTION,
    INTR_TYPE_NMI_INTR, INTR_TYPE_PRIV_SW_EXCEPTION, INTR_TYPE_SOFT_EXCEPTION, INTR_TYPE_SOFT_INTR,
    VECTORING_INFO_VALID_MASK, is_nmi,
)
from impls.prepatch.x86 import kvm_exception_is_soft

@glue("for a diagnostic note, no kernel code: the check nested_vmx_run does not make")
def _hlt_state_refuses(info: int) -> bool:
    """Whether the HLT activity state refuses this injection
    (`avmx.hlt_state_accepts`, SDM 26.3.1.5).  KVM enters anyway;
    nested_vmx_run notes it, else the campaign names this one missing check
    by the shapes of whatever L2 does next."""
    ev = avmx.decode(info)
    return ev is not None and not avmx.hlt_state_accepts(ev)


NESTED_C = "arch/x86/kvm/vmx/nested.c"
NESTED_H = "arch/x86/kvm/vmx/nested.h"

VMXERR_VMLAUNCH_NONCLEAR_VMCS = 4
VMXERR_VMRESUME_NONLAUNCHED_VMCS = 5
VMXERR_ENTRY_INVALID_CONTROL_FIELD = 7
VMXERR_ENTRY_EVENTS_BLOCKED_BY_MOV_SS = 26

EXIT_REASON_INIT_SIGNAL = 3
EXIT_REASON_SIPI_SIGNAL = 4

INTR_TYPE_RESERVED = 1 << 8
INTR_TYPE_PRIV_SW_EXCEPTION = 5 << 8
INTR_TYPE_OTHER_EVENT = 7 << 8
#: IA32_VMX_MISC bit 30: VM entry may inject a software event with length 0.
VMX_MISC_ZERO_LEN_INS = 1 << 30
#: The IA32_VMX_MISC KVM reports to L1 (nested_vmx_setup_ctls_msrs): the
#: host's SAVE_EFER_LMA bit, VMWRITE to read-only fields, the emulated
#: preemption-timer rate, activity states HLT and wait-for-SIPI -- never
#: ZERO_LEN_INS.
NESTED_MISC_LOW = (1 << 29) | 5 | (1 << 6) | (1 << 8)
INTR_INFO_RESVD_BITS_MASK = 0x7FFFF000  # bits 30:12
EXIT_REASON_MONITOR_TRAP_FLAG = 37
_X86_EXCEPTION_HAS_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17})


class VmxNested:
    """arch/x86/kvm/vmx/nested.c, as methods of the vCPU."""

    @origin(NESTED_H, "nested_exit_on_nmi", tree=TREE)
    def nested_exit_on_nmi(vcpu) -> bool:
        return bool(vcpu.vmx.nested.vmcs12.pin_based_vm_exec_control & PIN_BASED_NMI_EXITING)

    @origin(NESTED_H, "nested_exit_on_intr", tree=TREE)
    def nested_exit_on_intr(vcpu) -> bool:
        return bool(vcpu.vmx.nested.vmcs12.pin_based_vm_exec_control & PIN_BASED_EXT_INTR_MASK)

    @origin(NESTED_C, "nested_vmx_is_page_fault_vmexit", tree=TREE)
    def nested_vmx_is_page_fault_vmexit(vcpu, error_code: int) -> bool:
        vmcs12 = vcpu.vmx.nested.vmcs12
        bit = bool(vmcs12.exception_bitmap & (1 << PF))
        inequality = (error_code & 0xFFFF & vmcs12.page_fault_error_code_mask) != \
            vmcs12.page_fault_error_code_match
        return inequality ^ bit

    @origin(NESTED_C, "vmx_inject_page_fault_nested", tree=TREE)
    def vmx_inject_page_fault_nested(vcpu, fault: X86Exception) -> None:
        """The MMU's inject_page_fault hook in L2 with shadow paging: a #PF
        L1 intercepts becomes a nested VM exit at once (unless a nested run
        is pending); otherwise it is queued for L2."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        vcpu.warn_on_once(not vcpu.is_guest_mode(), "vmx_inject_page_fault_nested: not in guest mode")
        if vcpu.nested_vmx_is_page_fault_vmexit(fault.error_code) and not vcpu.vmx.nested.nested_run_pending:
            vmcs12.vm_exit_intr_error_code = fault.error_code
            vcpu.rec.note("vmx_inject_page_fault_nested: #PF intercepted by L1: nested VM exit")
            vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXCEPTION_NMI,
                                   PF | INTR_TYPE_HARD_EXCEPTION | INTR_INFO_DELIVER_CODE | INTR_INFO_VALID,
                                   fault.address)
        else:
            vcpu.kvm_inject_page_fault(fault)

    # ------------------------------------------------------------- VM entry --

    @origin(NESTED_C, "nested_vmx_failValid", tree=TREE)
    def nested_vmx_failValid(vcpu, vm_instruction_error: int) -> int:
        """VMfailValid: L1's VMLAUNCH/VMRESUME fails (RFLAGS.ZF, the
        VM-instruction error field); L1 reads it as a failed entry."""
        vcpu.rec.observe(1, EntryFailed(f"VMfailValid({vm_instruction_error})"))
        return 1

    @origin(NESTED_C, "nested_vmx_fail", tree=TREE)
    def nested_vmx_fail(vcpu, vm_instruction_error: int) -> int:
        vcpu.nested_vmx_failValid(vm_instruction_error)
        return vcpu.kvm_skip_emulated_instruction()

    @origin(NESTED_H, "nested_cpu_supports_monitor_trap_flag", tree=TREE)
    def nested_cpu_supports_monitor_trap_flag(vcpu) -> bool:
        """KVM offers L1 the monitor trap flag when the host has it, as the
        simulated CPU does (impls.hw.environment)."""
        return True

    @origin(NESTED_C, "nested_check_vm_entry_controls", tree=TREE)
    def nested_check_vm_entry_controls(vcpu) -> bool:
        """The checks on vmcs12's event-injection fields (True = valid), in
        KVM's order: type, vector, deliver-error-code bit, error-code bits
        31:16, reserved bits, instruction length."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        info = vmcs12.vm_entry_intr_info_field
        if not info & INTR_INFO_VALID:
            return True
        vector = info & INTR_INFO_VECTOR_MASK
        intr_type = info & INTR_INFO_INTR_TYPE_MASK
        has_error_code = bool(info & INTR_INFO_DELIVER_CODE)
        # L1 runs L2 with unrestricted guest: protected mode is L2's CR0.PE.
        prot_mode = vcpu.cpu.lv[2].desc.mode is not Mode.REAL
        if intr_type == INTR_TYPE_RESERVED or (
                intr_type == INTR_TYPE_OTHER_EVENT and not vcpu.nested_cpu_supports_monitor_trap_flag()):
            return False
        if (intr_type == INTR_TYPE_NMI_INTR and vector != NMI_VECTOR) or (
                intr_type == INTR_TYPE_HARD_EXCEPTION and vector > 31) or (
                intr_type == INTR_TYPE_OTHER_EVENT and vector != 0):
            return False
        should_have_error_code = (intr_type == INTR_TYPE_HARD_EXCEPTION and prot_mode
                                  and vector in _X86_EXCEPTION_HAS_ERROR_CODE)
        if has_error_code != should_have_error_code:
            return False
        if has_error_code and vmcs12.vm_entry_exception_error_code & 0xFFFF0000:  # GENMASK(31, 16) since 5.4
            return False
        if info & INTR_INFO_RESVD_BITS_MASK:
            return False
        if intr_type in (INTR_TYPE_SOFT_EXCEPTION, INTR_TYPE_SOFT_INTR, INTR_TYPE_PRIV_SW_EXCEPTION):
            length = vmcs12.vm_entry_instruction_len
            if length > 15 or (length == 0 and not vcpu.nested_cpu_has_zero_length_injection()):
                return False
        return True

    @origin(NESTED_H, "nested_cpu_has_zero_length_injection", tree=TREE)
    def nested_cpu_has_zero_length_injection(vcpu) -> bool:
        """IA32_VMX_MISC[30] as KVM reports it to L1: never set
        (nested_vmx_setup_ctls_msrs keeps only the host's SAVE_EFER_LMA bit
        and adds bits of its own; read in 5.11, 6.1.55 and v6.18, where
        vmx_restore_vmx_misc lets userspace set no bit KVM lacks)."""
        return bool(NESTED_MISC_LOW & VMX_MISC_ZERO_LEN_INS)

    @origin(NESTED_C, "nested_vmx_check_nmi_controls", tree=TREE)
    def nested_vmx_check_nmi_controls(vcpu) -> bool:
        """Virtual NMIs need NMI exiting, NMI-window exiting needs virtual
        NMIs (True = valid)."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        pin = vmcs12.pin_based_vm_exec_control
        if not pin & PIN_BASED_NMI_EXITING and pin & PIN_BASED_VIRTUAL_NMIS:
            return False
        if not pin & PIN_BASED_VIRTUAL_NMIS and vmcs12.cpu_based_vm_exec_control & CPU_BASED_NMI_WINDOW_EXITING:
            return False
        return True

    @origin(NESTED_C, "nested_check_vm_execution_controls", tree=TREE)
    def nested_check_vm_execution_controls(vcpu) -> bool:
        """Of the execution-control checks only the NMI ones can fail here:
        L1 sets no other control outside what KVM allows (impls.hw.environment)."""
        return vcpu.nested_vmx_check_nmi_controls()

    @origin(NESTED_C, "nested_vmx_check_controls", tree=TREE)
    def nested_vmx_check_controls(vcpu) -> bool:
        """Execution, exit (nothing L1 sets can fail them) and entry controls
        (True = valid)."""
        return vcpu.nested_check_vm_execution_controls() and vcpu.nested_check_vm_entry_controls()

    @origin(NESTED_C, "nested_vmx_run", tree=TREE)
    def nested_vmx_run(vcpu, launch: bool) -> int:
        """VMLAUNCH / VMRESUME executed by L1."""
        vmx = vcpu.vmx
        vmcs12 = vmx.nested.vmcs12
        interrupt_shadow = vcpu.vmx_get_interrupt_shadow()
        if interrupt_shadow & KVM_X86_SHADOW_INT_MOV_SS:
            return vcpu.nested_vmx_fail(VMXERR_ENTRY_EVENTS_BLOCKED_BY_MOV_SS)
        if vmcs12.launch_state == launch:
            return vcpu.nested_vmx_fail(VMXERR_VMLAUNCH_NONCLEAR_VMCS if launch
                                        else VMXERR_VMRESUME_NONLAUNCHED_VMCS)
        if not vcpu.nested_vmx_check_controls():
            return vcpu.nested_vmx_fail(VMXERR_ENTRY_INVALID_CONTROL_FIELD)
        vmx.nested.nested_run_pending = True
        vcpu.nested_vmx_enter_non_root_mode(True)
        if vmcs12.guest_activity_state == GUEST_ACTIVITY_HLT:
            # Entering a halted L2 that neither the injection nor an NMI- or
            # interrupt-window exit would wake: halt the vCPU.  Nothing
            # checks which events may be injected in the HLT state (SDM
            # 26.3.1.5); an injection just runs L2.
            if _hlt_state_refuses(vmcs12.vm_entry_intr_info_field):
                vcpu.rec.note("nested_vmx_run: vmcs12 activity state HLT with an injected event of a type that "
                              "state does not accept: not refused, L2 runs")
            if not vmcs12.vm_entry_intr_info_field & INTR_INFO_VALID \
                    and not vmcs12.cpu_based_vm_exec_control & CPU_BASED_NMI_WINDOW_EXITING \
                    and not (vmcs12.cpu_based_vm_exec_control & CPU_BASED_INTR_WINDOW_EXITING
                             and vcpu.cpu.lv[2].rflags_if):
                vmx.nested.nested_run_pending = False
                vcpu.rec.note("nested_vmx_run: vmcs12 activity state HLT: the vCPU halts (kvm_vcpu_halt)")
                return vcpu.kvm_vcpu_halt()
        elif vmcs12.guest_activity_state == GUEST_ACTIVITY_WAIT_SIPI:
            vmx.nested.nested_run_pending = False
            vcpu.arch.mp_state = KVM_MP_STATE_INIT_RECEIVED
        return 1

    @origin(NESTED_C, "nested_vmx_enter_non_root_mode", tree=TREE)
    def nested_vmx_enter_non_root_mode(vcpu, from_vmentry: bool) -> int:
        vmx = vcpu.vmx
        vmcs01 = vmx.vmcs01.vmcs
        evaluate_pending_interrupts = vmcs01.intr_window_exiting or vmcs01.nmi_window_exiting
        vmx.loaded_vmcs = vmx.vmcs02  # vmx_switch_vmcs
        vcpu.prepare_vmcs02_early()
        vcpu.enter_guest_mode()
        vcpu.prepare_vmcs02()
        if evaluate_pending_interrupts:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 0

    @origin(NESTED_C, "prepare_vmcs02_early", tree=TREE)
    def prepare_vmcs02_early(vcpu) -> None:
        """vmcs02's window controls are L1's only; L1's injected event goes
        straight into vmcs02's entry fields, invisible to KVM's queues."""
        vmx = vcpu.vmx
        vmcs12 = vmx.nested.vmcs12
        vmcs02 = vmx.vmcs02.vmcs
        vmcs02.intr_window_exiting = bool(vmcs12.cpu_based_vm_exec_control & CPU_BASED_INTR_WINDOW_EXITING)
        vmcs02.nmi_window_exiting = bool(vmcs12.cpu_based_vm_exec_control & CPU_BASED_NMI_WINDOW_EXITING)
        if vmx.nested.nested_run_pending:
            vmcs02.entry_intr_info = vmcs12.vm_entry_intr_info_field
            vmcs02.entry_error_code = vmcs12.vm_entry_exception_error_code
            vmcs02.entry_instruction_len = vmcs12.vm_entry_instruction_len
            # GUEST_INTERRUPTIBILITY_INFO from vmcs12: L2's state in the CPU.
            vmx.vmcs02.nmi_known_unmasked = not vcpu.cpu.lv[2].nmi_blocked
        else:
            vmcs02.entry_intr_info = 0

    @origin(NESTED_C, "prepare_vmcs02", tree=TREE)
    def prepare_vmcs02(vcpu) -> None:
        """Exception bitmap L0|L1, #PF mask/match (prepare_vmcs02_rare), and
        the nested #PF injector with shadow paging."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        vmcs02 = vcpu.vmx.vmcs02.vmcs
        if vcpu.vmx_need_pf_intercept():
            vmcs02.pf_mask = vmcs02.pf_match = 0
        else:
            vmcs02.pf_mask = vmcs12.page_fault_error_code_mask
            vmcs02.pf_match = vmcs12.page_fault_error_code_match
        vcpu.update_exception_bitmap()
        if not vcpu.enable_ept:
            vcpu.walk_mmu_inject_page_fault = "vmx_inject_page_fault_nested"

    # -------------------------------------------------------------- VM exit --

    @origin(NESTED_C, "sync_vmcs02_to_vmcs12", tree=TREE)
    def sync_vmcs02_to_vmcs12(vcpu) -> None:
        """vmcs02's guest state into vmcs12 at a VM exit.  The simulated CPU
        holds L2's registers and interruptibility as vmcs12 would
        (impls.hw.environment), so what is left is the activity state, from
        mp_state: HLT if the vCPU is halted, wait-for-SIPI if it waits for
        one, else active."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        mp_state = vcpu.arch.mp_state
        if mp_state == KVM_MP_STATE_HALTED:
            vmcs12.guest_activity_state = GUEST_ACTIVITY_HLT
        elif mp_state == KVM_MP_STATE_INIT_RECEIVED:
            vmcs12.guest_activity_state = GUEST_ACTIVITY_WAIT_SIPI
        else:
            vmcs12.guest_activity_state = GUEST_ACTIVITY_ACTIVE

    @origin(NESTED_C, "vmcs12_save_pending_event", tree=TREE)
    def vmcs12_save_pending_event(vcpu) -> None:
        """IDT-vectoring info for L1, rebuilt from KVM's *injected* state:
        an exception, else an NMI, else an interrupt."""
        a = vcpu.arch
        vmcs12 = vcpu.vmx.nested.vmcs12
        if a.exception.injected:
            nr = a.exception.nr
            idt_vectoring = nr | VECTORING_INFO_VALID_MASK
            if kvm_exception_is_soft(nr):
                vmcs12.vm_exit_instruction_len = a.event_exit_inst_len
                idt_vectoring |= INTR_TYPE_SOFT_EXCEPTION
            else:
                idt_vectoring |= INTR_TYPE_HARD_EXCEPTION
            if a.exception.has_error_code:
                idt_vectoring |= INTR_INFO_DELIVER_CODE
                vmcs12.idt_vectoring_error_code = a.exception.error_code
            vmcs12.idt_vectoring_info_field = idt_vectoring
        elif a.nmi_injected:
            vmcs12.idt_vectoring_info_field = INTR_TYPE_NMI_INTR | INTR_INFO_VALID | NMI_VECTOR
        elif a.interrupt.injected:
            nr = a.interrupt.nr
            idt_vectoring = nr | VECTORING_INFO_VALID_MASK
            if a.interrupt.soft:
                idt_vectoring |= INTR_TYPE_SOFT_INTR
                vmcs12.vm_entry_instruction_len = a.event_exit_inst_len
            else:
                idt_vectoring |= INTR_TYPE_EXT_INTR
            vmcs12.idt_vectoring_info_field = idt_vectoring

    @origin(NESTED_C, "prepare_vmcs12", tree=TREE)
    def prepare_vmcs12(vcpu, vm_exit_reason: int, exit_intr_info: int, exit_qualification: int) -> None:
        vmcs12 = vcpu.vmx.nested.vmcs12
        vmcs12.vm_exit_reason = vm_exit_reason
        vmcs12.exit_qualification = exit_qualification
        vmcs12.vm_exit_intr_info = exit_intr_info
        vmcs12.idt_vectoring_info_field = 0
        vmcs12.vm_exit_instruction_len = vcpu.vmcs().exit_instruction_len  # vmcs02's (VMX_INSTRUCTION_INFO: not modelled)
        if not vm_exit_reason & hw.VMX_EXIT_REASONS_FAILED_VMENTRY:
            vmcs12.launch_state = 1
            vmcs12.vm_entry_intr_info_field &= ~INTR_INFO_VALID
            vcpu.vmcs12_save_pending_event()
        vcpu.arch.nmi_injected = False
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()

    @origin(NESTED_C, "load_vmcs12_host_state", tree=TREE)
    def load_vmcs12_host_state(vcpu) -> None:
        """L1 resumes with its host state: RFLAGS fixed bits only (IF=0), no
        interrupt shadow; the plain #PF injector again."""
        vcpu.guest().rflags_if = False
        vcpu.vmx_set_interrupt_shadow(0)
        if not vcpu.enable_ept:
            vcpu.walk_mmu_inject_page_fault = "kvm_inject_page_fault"

    @origin(NESTED_C, "nested_vmx_vmexit", tree=TREE)
    def nested_vmx_vmexit(vcpu, vm_exit_reason: int, exit_intr_info: int, exit_qualification: int) -> None:
        vmx = vcpu.vmx
        vcpu.warn_on_once(vmx.nested.nested_run_pending, "nested_vmx_vmexit: nested_run_pending")
        vcpu.leave_guest_mode()
        if not vmx.fail:
            vcpu.sync_vmcs02_to_vmcs12()
            if vm_exit_reason != -1:
                vcpu.prepare_vmcs12(vm_exit_reason, exit_intr_info, exit_qualification)
        vmx.loaded_vmcs = vmx.vmcs01  # vmx_switch_vmcs
        vcpu.update_exception_bitmap()
        vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE  # in case L2 halted
        if not vmx.fail:
            vcpu.load_vmcs12_host_state()
            if vm_exit_reason != -1:
                vcpu.record_nested_vmexit()
            pending = ("NMI" if vcpu.arch.nmi_pending or vcpu.arch.nmi_queued else
                       "interrupt" if vcpu.apic.irr or vcpu.pending_external_vector != -1 else None)
            if pending and not vcpu.kvm_test_request(KVM_REQ_EVENT):  # for people: its window was vmcs02's
                vcpu.rec.note("nested_vmx_vmexit: an event is still pending at the exit to L1 and nothing "
                              f"requests KVM_REQ_EVENT [{pending}]")
            return
        vcpu.nested_vmx_failValid(VMXERR_ENTRY_INVALID_CONTROL_FIELD)
        vmx.fail = False

    @glue("records what L1 reads in vmcs12 after an emulated VM exit, as the outcome's observation")
    def record_nested_vmexit(vcpu) -> None:
        """What L1 reads in vmcs12 after the exit KVM emulated."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        reason = vmcs12.vm_exit_reason
        if reason & hw.VMX_EXIT_REASONS_FAILED_VMENTRY:
            vcpu.rec.observe(1, EntryFailed(avmx.reason_name(reason)))
            return
        info = avmx.decode(vmcs12.vm_exit_intr_info & ~hw.INTR_INFO_UNBLOCK_NMI, vmcs12.vm_exit_intr_error_code)
        vectoring = avmx.decode(vmcs12.idt_vectoring_info_field, vmcs12.idt_vectoring_error_code)
        address = None
        if reason == hw.EXIT_REASON_EXCEPTION_NMI and info is not None and info.vector == PF \
                and info.type == 3:
            address = vmcs12.exit_qualification
        # The VM-exit instruction length, where the SDM defines it for a
        # software event (SDM 27.2.4; `VmExit.length`).  The guest RIP saved
        # is L2's RIP, which only completing an instruction moves: +0.
        soft = any(e is not None and e.type in avmx.INSTRUCTION_TYPES for e in (info, vectoring))
        length = vmcs12.vm_exit_instruction_len if soft else None
        vcpu.rec.observe(1, VmExit(avmx.reason_name(reason), info, vectoring, address,
                                   vmcs12.guest_activity_state == GUEST_ACTIVITY_HLT, length=length))

    @origin(NESTED_C, "nested_vmx_l0_wants_exit", tree=TREE)
    def nested_vmx_l0_wants_exit(vcpu, exit_reason: int) -> bool:
        basic = exit_reason & 0xFFFF
        if basic == hw.EXIT_REASON_EXCEPTION_NMI:
            intr_info = vcpu.vmcs().exit_intr_info
            if is_nmi(intr_info):
                return True
            if is_exception(intr_info, PF):
                return bool(vcpu.arch.apf_host_apf_flags) or not vcpu.enable_ept
            return False
        return basic in (hw.EXIT_REASON_EXTERNAL_INTERRUPT, hw.EXIT_REASON_EPT_VIOLATION,
                         hw.EXIT_REASON_EPT_MISCONFIG, hw.EXIT_REASON_PREEMPTION_TIMER)

    @origin(NESTED_C, "nested_vmx_l1_wants_exit", tree=TREE)
    def nested_vmx_l1_wants_exit(vcpu, exit_reason: int) -> bool:
        vmcs12 = vcpu.vmx.nested.vmcs12
        basic = exit_reason & 0xFFFF
        if basic == hw.EXIT_REASON_EXCEPTION_NMI:
            intr_info = vcpu.vmcs().exit_intr_info
            if is_nmi(intr_info) or is_exception(intr_info, PF):
                return True
            return bool(vmcs12.exception_bitmap & (1 << (intr_info & INTR_INFO_VECTOR_MASK)))
        if basic == hw.EXIT_REASON_EXTERNAL_INTERRUPT:
            return vcpu.nested_exit_on_intr()
        if basic == hw.EXIT_REASON_INTERRUPT_WINDOW:
            return bool(vmcs12.cpu_based_vm_exec_control & CPU_BASED_INTR_WINDOW_EXITING)
        if basic == hw.EXIT_REASON_NMI_WINDOW:
            return bool(vmcs12.cpu_based_vm_exec_control & CPU_BASED_NMI_WINDOW_EXITING)
        if basic == EXIT_REASON_MONITOR_TRAP_FLAG:
            return vcpu.nested_vmx_exit_handled_mtf()
        if basic == hw.EXIT_REASON_HLT:
            return bool(vmcs12.cpu_based_vm_exec_control & CPU_BASED_HLT_EXITING)
        # TRIPLE_FAULT, VMCALL, INVALID_STATE, ...: always L1's.
        return True

    @origin(NESTED_C, "nested_vmx_exit_handled_mtf", tree=TREE)
    def nested_vmx_exit_handled_mtf(vcpu) -> bool:
        """An MTF exit is L1's if L1 set the monitor trap flag or injected
        type 7 vector 0 (a pending MTF VM exit), vmcs12's entry field still
        holding exactly that."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        if vmcs12.cpu_based_vm_exec_control & CPU_BASED_MONITOR_TRAP_FLAG:
            return True
        return vmcs12.vm_entry_intr_info_field == INTR_INFO_VALID | INTR_TYPE_OTHER_EVENT

    @origin(NESTED_C, "nested_vmx_reflect_vmexit", tree=TREE)
    def nested_vmx_reflect_vmexit(vcpu) -> bool:
        vmx = vcpu.vmx
        exit_reason = vmx.exit_reason
        vcpu.warn_on_once(vmx.nested.nested_run_pending, "nested_vmx_reflect_vmexit: nested_run_pending")
        vmcs = vcpu.vmcs()
        if vmx.fail:
            exit_intr_info = exit_qual = 0
        else:
            if vcpu.nested_vmx_l0_wants_exit(exit_reason):
                return False
            if not vcpu.nested_vmx_l1_wants_exit(exit_reason):
                return False
            exit_intr_info = vmcs.exit_intr_info
            if (exit_intr_info & (INTR_INFO_VALID | INTR_INFO_DELIVER_CODE)) == (
                    INTR_INFO_VALID | INTR_INFO_DELIVER_CODE):
                vmx.nested.vmcs12.vm_exit_intr_error_code = vmcs.exit_intr_error_code
            exit_qual = vmcs.exit_qualification
        vcpu.nested_vmx_vmexit(exit_reason, exit_intr_info, exit_qual)
        return True

    # ------------------------------------------------------- nested events --

    @origin(NESTED_C, "nested_vmx_check_exception", tree=TREE)
    def nested_vmx_check_exception(vcpu) -> tuple[bool, int]:
        """Whether L1 wants the pending exception, and the exit
        qualification it gets."""
        ex = vcpu.arch.exception
        nr = ex.nr
        if nr == PF:
            if ex.nested_apf:
                return True, vcpu.arch.apf_nested_apf_token
            if vcpu.nested_vmx_is_page_fault_vmexit(ex.error_code):
                return True, ex.payload if ex.has_payload else vcpu.guest().cr2
            return False, 0
        if vcpu.vmx.nested.vmcs12.exception_bitmap & (1 << nr):
            if nr == DB:
                payload = ex.payload
                if not ex.has_payload:
                    payload = vcpu.arch.dr6
                    payload &= ~(DR6_FIXED_1 | (1 << 15))
                    payload ^= DR6_RTM
                return True, payload
            return True, 0
        return False, 0

    @origin(NESTED_C, "nested_vmx_inject_exception_vmexit", tree=TREE)
    def nested_vmx_inject_exception_vmexit(vcpu, exit_qual: int) -> None:
        ex = vcpu.arch.exception
        vmcs12 = vcpu.vmx.nested.vmcs12
        nr = ex.nr
        intr_info = nr | INTR_INFO_VALID
        if ex.has_error_code:
            vmcs12.vm_exit_intr_error_code = ex.error_code
            intr_info |= INTR_INFO_DELIVER_CODE
        intr_info |= INTR_TYPE_SOFT_EXCEPTION if kvm_exception_is_soft(nr) else INTR_TYPE_HARD_EXCEPTION
        if not vmcs12.idt_vectoring_info_field & VECTORING_INFO_VALID_MASK and vcpu.vmx_get_nmi_mask():
            intr_info |= hw.INTR_INFO_UNBLOCK_NMI
        vcpu.rec.note(f"nested_vmx_inject_exception_vmexit: pending vector {nr} to L1")
        vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXCEPTION_NMI, intr_info, exit_qual)

    @origin(NESTED_C, "vmx_pending_dbg_trap", tree=TREE)
    def vmx_pending_dbg_trap(vcpu) -> bool:
        ex = vcpu.arch.exception
        return ex.pending and ex.nr == DB and ex.payload != 0

    @origin(NESTED_C, "nested_vmx_update_pending_dbg", tree=TREE)
    def nested_vmx_update_pending_dbg(vcpu) -> None:
        """A pending #DB trap goes into vmcs02's pending-debug-exceptions
        field (not modelled: no debug registers, impls.hw.environment)."""
        if vcpu.vmx_pending_dbg_trap():
            vcpu.rec.note("nested_vmx_update_pending_dbg: #DB trap stashed in GUEST_PENDING_DBG_EXCEPTIONS")

    @origin(NESTED_C, "vmx_check_nested_events", tree=TREE)
    def vmx_check_nested_events(vcpu) -> int:
        """The priority ladder for events while L2 runs.  Nothing can become
        a nested VM exit while a nested run is pending or an event must be
        re-injected: that is -EBUSY.  INIT comes first and always exits (the
        vCPU is never INIT_RECEIVED here); a pending exception is not an
        event in flight, so it does not hold INIT back."""
        vmx = vcpu.vmx
        a = vcpu.arch
        apic = vcpu.apic
        block_nested_events = vmx.nested.nested_run_pending or vcpu.kvm_event_needs_reinjection()
        # (mtf_pending is cleared here when nothing blocks: MTF is not modelled.)
        if apic.pending_events & (1 << KVM_APIC_INIT):
            if block_nested_events:
                vcpu.rec.note("vmx_check_nested_events: INIT pending, nested run or event in flight: -EBUSY")
                return -EBUSY
            vcpu.nested_vmx_update_pending_dbg()
            apic.pending_events &= ~(1 << KVM_APIC_INIT)
            if a.mp_state != KVM_MP_STATE_INIT_RECEIVED:
                vcpu.rec.note("vmx_check_nested_events: INIT in L2: INIT_SIGNAL exit")
                vcpu.nested_vmx_vmexit(EXIT_REASON_INIT_SIGNAL, 0, 0)
            return 0
        if apic.pending_events & (1 << KVM_APIC_SIPI):
            if block_nested_events:
                return -EBUSY
            apic.pending_events &= ~(1 << KVM_APIC_SIPI)
            if a.mp_state == KVM_MP_STATE_INIT_RECEIVED:
                vcpu.nested_vmx_vmexit(EXIT_REASON_SIPI_SIGNAL, 0, apic.sipi_vector & 0xFF)
            return 0
        if a.exception.pending and not vcpu.vmx_pending_dbg_trap():
            if block_nested_events:
                return -EBUSY
            wants, exit_qual = vcpu.nested_vmx_check_exception()
            if not wants:
                return 0  # no_vmexit
            vcpu.nested_vmx_inject_exception_vmexit(exit_qual)
            return 0
        # MTF: not modelled.
        if a.exception.pending:
            if block_nested_events:
                return -EBUSY
            wants, exit_qual = vcpu.nested_vmx_check_exception()
            if not wants:
                return 0
            vcpu.nested_vmx_inject_exception_vmexit(exit_qual)
            return 0
        # Preemption timer: not modelled (L1 uses none).
        if a.smi_pending and not vcpu.is_smm():
            if block_nested_events:
                vcpu.rec.note("vmx_check_nested_events: SMI pending, event in flight: -EBUSY")
                return -EBUSY
            return 0  # no_vmexit: the SMI is injected by inject_pending_event
        if a.nmi_pending and not vcpu.vmx_nmi_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.nested_exit_on_nmi():
                return 0
            vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXCEPTION_NMI,
                                   NMI_VECTOR | INTR_TYPE_NMI_INTR | INTR_INFO_VALID, 0)
            a.nmi_pending = 0
            vcpu.vmx_set_nmi_mask(True)
            return 0
        if vcpu.kvm_cpu_has_interrupt() and not vcpu.vmx_interrupt_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.nested_exit_on_intr():
                return 0
            vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXTERNAL_INTERRUPT, 0, 0)
            return 0
        return 0

    @origin(NESTED_C, "nested_vmx_preemption_timer_pending", tree=TREE)
    def nested_vmx_preemption_timer_pending(vcpu) -> bool:
        return False  # L1 uses no preemption timer


@origin("arch/x86/kvm/vmx/vmcs.h", "is_exception_n", tree=TREE)
def is_exception(intr_info: int, vector: int) -> bool:
    return (intr_info & (INTR_INFO_INTR_TYPE_MASK | INTR_INFO_VECTOR_MASK | INTR_INFO_VALID)) == (
        INTR_TYPE_HARD_EXCEPTION | vector | INTR_INFO_VALID)


_ = INTR_TYPE_EXT_INTR
