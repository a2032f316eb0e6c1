"""Port of the event paths of arch/x86/kvm/vmx/nested.c as of Linux 6.1
(written at 7709aba8, re-read in 6.1.55, with 92e7d5c83aff), where they
differ from 5.11 (`impls.prepatch.vmx_nested`).

Differs:

* `nested_vmx_is_exception_vmexit` (nested_ops->is_exception_vmexit) answers
  at queue time whether L1 intercepts a vector (bitmap, #PF mask/match on
  bits 15:0 of the error code); `nested_vmx_inject_exception_vmexit` turns
  `exception_vmexit` into the exit, taking the exit qualification from the
  payload (#PF: CR2, #DB: DR6 if there is none).  5.11's
  nested_vmx_check_exception and vmx_inject_page_fault_nested (the shadow
  #PF shortcut installed by prepare_vmcs02) are gone; `prepare_vmcs02`
  leaves the plain #PF injector in place.
* `vmx_check_nested_events`: exceptions are blocked only by a pending nested
  run, other events also by re-injection; `exception_vmexit` and a pending
  exception for L2 each have a high-priority rung (anything but a trap-like
  #DB) and a low-priority one after MTF; an exception for L2 is "no VM exit".
* `vmcs12_save_pending_event` takes the exit reason and exit interruption
  info: a triple-fault exit and a #DF exit carry no IDT-vectoring info.
* `prepare_vmcs12` no longer clears KVM's queues; `nested_vmx_vmexit` does,
  for every exit, after prepare_vmcs12 read them; it also clears
  mtf_pending.
* `nested_vmx_triple_fault` (nested_ops->triple_fault): clears
  KVM_REQ_TRIPLE_FAULT (92e7d5c83aff), then a TRIPLE_FAULT exit.
* `vmx_has_nested_events` (nested_ops->has_events, 5b4ac1a1; the series had
  hv_timer_pending): the preemption timer or a pending MTF exit.
* `nested_vmx_run` halts a vCPU entering L2 in the HLT activity state with
  kvm_emulate_halt_noskip (5.11: kvm_vcpu_halt, the same); `nested_vmx_vmexit`
  sets mp_state RUNNABLE after sync_vmcs02_to_vmcs12 saved the activity
  state, as 5.11 does.

Reused unchanged: see impls.upstream.reused (nested_exit_on_nmi / _intr,
the failValid helpers, sync_vmcs02_to_vmcs12, prepare_vmcs02_early,
load_vmcs12_host_state -- 6.1 resets the MMU instead of naming the #PF
injector, the same injector here --, the reflection helpers).  Not modelled, as for 5.11: MTF
(mtf_pending stays 0), the preemption timer, SMI, posted interrupts,
GUEST_PENDING_DBG_EXCEPTIONS, eVMCS / shadow VMCS.

INIT and SIPI (read at 7709aba8 and in the 6.1 INIT/SIPI patches merged
after it): the INIT rung is 5.11's plus clearing mtf_pending; a SIPI the
vCPU cannot take (not in wait-for-SIPI) falls through to the lower rungs
instead of ending the ladder; `nested_vmx_enter_non_root_mode` makes
KVM_REQ_EVENT for a pending INIT or SIPI (a56953e9).
"""
from __future__ import annotations

from impls.arch import DB, DF, NMI_VECTOR, PF
from impls.arch.vmx import INTR_INFO_DELIVER_CODE, INTR_INFO_VALID
from impls.hw import cpu as hw
from impls.origin import origin
from impls.prepatch.vmx import (
    INTR_TYPE_EXT_INTR, INTR_TYPE_HARD_EXCEPTION,
    INTR_TYPE_NMI_INTR, INTR_TYPE_SOFT_EXCEPTION, INTR_TYPE_SOFT_INTR, VECTORING_INFO_VALID_MASK, is_exception_n,
)
from impls.prepatch.vmx_nested import (
    _hlt_state_refuses, EXIT_REASON_INIT_SIGNAL, EXIT_REASON_SIPI_SIGNAL, VMXERR_ENTRY_EVENTS_BLOCKED_BY_MOV_SS,
    VMXERR_ENTRY_INVALID_CONTROL_FIELD, VMXERR_VMLAUNCH_NONCLEAR_VMCS, VMXERR_VMRESUME_NONLAUNCHED_VMCS,
)
from impls.prepatch.x86 import kvm_exception_is_soft
from impls.upstream.state import (
    CPU_BASED_INTR_WINDOW_EXITING, CPU_BASED_NMI_WINDOW_EXITING, DR6_ACTIVE_LOW, DR6_BD, DR6_BT, EBUSY,
    GUEST_ACTIVITY_HLT, GUEST_ACTIVITY_WAIT_SIPI, KVM_APIC_INIT, KVM_APIC_SIPI, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_RUNNABLE, KVM_REQ_EVENT, KVM_REQ_TRIPLE_FAULT, KVM_X86_SHADOW_INT_MOV_SS, STABLE, TREE,
    KvmQueuedException,
)

NESTED_C = "arch/x86/kvm/vmx/nested.c"
NESTED_H = "arch/x86/kvm/vmx/nested.h"

EXIT_REASON_MONITOR_TRAP_FLAG = 37


class VmxNested61:
    """arch/x86/kvm/vmx/nested.c of 6.1, as methods of the vCPU."""

    # ---------------------------------------------------- exception VM exits --

    @origin(NESTED_C, "nested_vmx_is_exception_vmexit", tree=TREE, read=STABLE)
    def nested_vmx_is_exception_vmexit(vcpu, vector: int, error_code: int) -> bool:
        vmcs12 = vcpu.vmx.nested.vmcs12
        if vector == PF:
            ec = error_code & 0xFFFF
            bit = bool(vmcs12.exception_bitmap & (1 << PF))
            inequality = (ec & vmcs12.page_fault_error_code_mask) != vmcs12.page_fault_error_code_match
            return inequality ^ bit
        return bool(vmcs12.exception_bitmap & (1 << vector))

    @origin(NESTED_C, "nested_vmx_inject_exception_vmexit", tree=TREE, read=STABLE)
    def nested_vmx_inject_exception_vmexit(vcpu) -> None:
        """The EXCEPTION_NMI exit for `exception_vmexit`.  The NMI-unblocking
        bit looks at vmcs12's IDT-vectoring field as the *previous* exit left
        it, before this exit rewrites it."""
        ex = vcpu.arch.exception_vmexit
        vmcs12 = vcpu.vmx.nested.vmcs12
        intr_info = ex.vector | INTR_INFO_VALID
        if ex.has_payload:
            exit_qual = ex.payload
        elif ex.vector == PF:
            exit_qual = vcpu.guest().cr2  # vcpu->arch.cr2
        elif ex.vector == DB:
            exit_qual = (vcpu.arch.dr6 & ~DR6_BT) ^ DR6_ACTIVE_LOW
        else:
            exit_qual = 0
        if ex.has_error_code:
            vmcs12.vm_exit_intr_error_code = ex.error_code & 0xFFFF
            intr_info |= INTR_INFO_DELIVER_CODE
        intr_info |= INTR_TYPE_SOFT_EXCEPTION if kvm_exception_is_soft(ex.vector) else INTR_TYPE_HARD_EXCEPTION
        if not vmcs12.idt_vectoring_info_field & VECTORING_INFO_VALID_MASK and vcpu.vmx_get_nmi_mask():
            intr_info |= hw.INTR_INFO_UNBLOCK_NMI
        vcpu.rec.note(f"nested_vmx_inject_exception_vmexit: exception_vmexit vector {ex.vector} to L1")
        vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXCEPTION_NMI, intr_info, exit_qual)

    @origin(NESTED_C, "nested_vmx_run", tree=TREE, read=STABLE)
    def nested_vmx_run(vcpu, launch: bool) -> int:
        """VMLAUNCH / VMRESUME executed by L1: 5.11's checks in 5.11's order;
        a halted L2 that nothing would wake halts the vCPU through
        kvm_emulate_halt_noskip.  Nothing checks which events may be
        injected in the HLT state (SDM 26.3.1.5)."""
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
            if _hlt_state_refuses(vmcs12.vm_entry_intr_info_field):
                vcpu.rec.note("nested_vmx_run: vmcs12 activity state HLT with an injected event of a type that "
                              "state does not accept: not refused, L2 runs")
            if not vmcs12.vm_entry_intr_info_field & INTR_INFO_VALID \
                    and not vmcs12.cpu_based_vm_exec_control & CPU_BASED_NMI_WINDOW_EXITING \
                    and not (vmcs12.cpu_based_vm_exec_control & CPU_BASED_INTR_WINDOW_EXITING
                             and vcpu.cpu.lv[2].rflags_if):
                vmx.nested.nested_run_pending = False
                vcpu.rec.note("nested_vmx_run: vmcs12 activity state HLT: the vCPU halts "
                              "(kvm_emulate_halt_noskip)")
                return vcpu.kvm_emulate_halt_noskip()
        elif vmcs12.guest_activity_state == GUEST_ACTIVITY_WAIT_SIPI:
            vmx.nested.nested_run_pending = False
            vcpu.arch.mp_state = KVM_MP_STATE_INIT_RECEIVED
        return 1

    @origin(NESTED_C, "nested_vmx_triple_fault", tree=TREE, read=STABLE)
    def nested_vmx_triple_fault(vcpu) -> None:
        """Clears the request itself (92e7d5c83aff, 6.1-rc7), then the
        TRIPLE_FAULT exit: VMX has no control for it, L1 always gets it."""
        vcpu.kvm_clear_request(KVM_REQ_TRIPLE_FAULT)
        vcpu.nested_vmx_vmexit(hw.EXIT_REASON_TRIPLE_FAULT, 0, 0)

    @origin(NESTED_C, "vmx_has_nested_events", tree=TREE, read=STABLE)
    def vmx_has_nested_events(vcpu) -> bool:
        """nested_ops->has_events (5b4ac1a1, 6.1 merge window; the series had
        hv_timer_pending): an expired preemption timer or a pending MTF
        exit, neither of which L1 uses here."""
        return vcpu.nested_vmx_preemption_timer_pending() or vcpu.vmx.nested.mtf_pending

    # ----------------------------------------------------------- #DB helpers --

    @origin(NESTED_C, "vmx_get_pending_dbg_trap", tree=TREE, read=STABLE)
    def vmx_get_pending_dbg_trap(vcpu, ex: KvmQueuedException) -> int:
        """The pending debug exceptions of a trap-like pending #DB, else 0
        (a general-detect #DB is fault-like)."""
        if not ex.pending or ex.vector != DB:
            return 0
        return ex.payload & ~DR6_BD

    @origin(NESTED_C, "vmx_is_low_priority_db_trap", tree=TREE, read=STABLE)
    def vmx_is_low_priority_db_trap(vcpu, ex: KvmQueuedException) -> bool:
        """A trap-like #DB other than a TSS-trap #DB ranks below MTF."""
        return (vcpu.vmx_get_pending_dbg_trap(ex) & ~DR6_BT) != 0

    @origin(NESTED_C, "nested_vmx_update_pending_dbg", tree=TREE, read=STABLE)
    def nested_vmx_update_pending_dbg(vcpu) -> None:
        """Copies a pending trap-like #DB (of vcpu->arch.exception) into
        vmcs02's GUEST_PENDING_DBG_EXCEPTIONS: a field the simulated CPU does
        not have; only reached from the INIT and MTF rungs."""
        vcpu.vmx_get_pending_dbg_trap(vcpu.arch.exception)

    # ------------------------------------------------------------ the ladder --

    @origin(NESTED_C, "vmx_check_nested_events", tree=TREE, read=STABLE)
    def vmx_check_nested_events(vcpu) -> int:
        """The priority ladder for events while L2 runs.  A pending nested
        run blocks everything (-EBUSY); an event that must be re-injected
        blocks new events but not exceptions, which arose while delivering
        it."""
        vmx = vcpu.vmx
        a = vcpu.arch
        apic = vcpu.apic
        block_nested_exceptions = vmx.nested.nested_run_pending
        block_nested_events = block_nested_exceptions or vcpu.kvm_event_needs_reinjection()

        if apic.pending_events & (1 << KVM_APIC_INIT):
            if block_nested_events:
                vcpu.rec.note("vmx_check_nested_events: INIT pending, nested run or event in flight: -EBUSY")
                return -EBUSY
            vcpu.nested_vmx_update_pending_dbg()
            apic.pending_events &= ~(1 << KVM_APIC_INIT)
            if a.mp_state != KVM_MP_STATE_INIT_RECEIVED:
                vcpu.rec.note("vmx_check_nested_events: INIT in L2: INIT_SIGNAL exit")
                vcpu.nested_vmx_vmexit(EXIT_REASON_INIT_SIGNAL, 0, 0)
            vmx.nested.mtf_pending = False  # MTF is dropped in wait-for-SIPI
            return 0

        if apic.pending_events & (1 << KVM_APIC_SIPI):
            if block_nested_events:
                return -EBUSY
            apic.pending_events &= ~(1 << KVM_APIC_SIPI)
            if a.mp_state == KVM_MP_STATE_INIT_RECEIVED:
                vcpu.nested_vmx_vmexit(EXIT_REASON_SIPI_SIGNAL, 0, apic.sipi_vector & 0xFF)
                return 0
            # Otherwise the SIPI is ignored and the ladder goes on.

        if a.exception_vmexit.pending and not vcpu.vmx_is_low_priority_db_trap(a.exception_vmexit):
            if block_nested_exceptions:
                return -EBUSY
            vcpu.nested_vmx_inject_exception_vmexit()
            return 0

        if a.exception.pending and not vcpu.vmx_is_low_priority_db_trap(a.exception):
            if block_nested_exceptions:
                return -EBUSY
            return 0  # no_vmexit

        if vmx.nested.mtf_pending:
            if block_nested_events:
                return -EBUSY
            vcpu.nested_vmx_update_pending_dbg()
            vcpu.nested_vmx_vmexit(EXIT_REASON_MONITOR_TRAP_FLAG, 0, 0)
            return 0

        if a.exception_vmexit.pending:
            if block_nested_exceptions:
                return -EBUSY
            vcpu.nested_vmx_inject_exception_vmexit()
            return 0

        if a.exception.pending:
            if block_nested_exceptions:
                return -EBUSY
            return 0  # no_vmexit

        if vcpu.nested_vmx_preemption_timer_pending():
            if block_nested_events:
                return -EBUSY
            vcpu.nested_vmx_vmexit(hw.EXIT_REASON_PREEMPTION_TIMER, 0, 0)
            return 0

        if a.smi_pending and not vcpu.is_smm():
            if block_nested_events:
                vcpu.rec.note("vmx_check_nested_events: SMI pending, event in flight: -EBUSY")
                return -EBUSY
            return 0  # no_vmexit: the SMI is injected by kvm_check_and_inject_events

        if a.nmi_pending and not vcpu.vmx_nmi_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.nested_exit_on_nmi():
                return 0  # no_vmexit
            vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXCEPTION_NMI,
                                   NMI_VECTOR | INTR_TYPE_NMI_INTR | INTR_INFO_VALID, 0)
            a.nmi_pending = 0
            vcpu.vmx_set_nmi_mask(True)
            return 0

        if vcpu.kvm_cpu_has_interrupt() and not vcpu.vmx_interrupt_blocked():
            if block_nested_events:
                return -EBUSY
            if not vcpu.nested_exit_on_intr():
                return 0  # no_vmexit
            vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXTERNAL_INTERRUPT, 0, 0)
            return 0

        return 0  # no_vmexit: vmx_complete_nested_posted_interrupt, no posted interrupts

    # ------------------------------------------------------------- VM entry --

    @origin(NESTED_C, "nested_vmx_enter_non_root_mode", tree=TREE, read=STABLE)
    def nested_vmx_enter_non_root_mode(vcpu, from_vmentry: bool) -> int:
        """As 5.11's, and a pending INIT or SIPI also makes KVM_REQ_EVENT
        after the switch to vmcs02 (a56953e9, 6.1), so that it is evaluated
        for L2 at once."""
        vmx = vcpu.vmx
        vmcs01 = vmx.vmcs01.vmcs
        evaluate_pending_interrupts = vmcs01.intr_window_exiting or vmcs01.nmi_window_exiting
        # (apicv: vmx_has_apicv_interrupt, no APICv here)
        if not evaluate_pending_interrupts:
            evaluate_pending_interrupts = vcpu.kvm_apic_has_pending_init_or_sipi()
        vmx.loaded_vmcs = vmx.vmcs02  # vmx_switch_vmcs
        vcpu.prepare_vmcs02_early()
        vcpu.enter_guest_mode()
        vcpu.prepare_vmcs02()
        if evaluate_pending_interrupts:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 0

    @origin(NESTED_C, "prepare_vmcs02", tree=TREE, read=STABLE)
    def prepare_vmcs02(vcpu) -> None:
        """Exception bitmap L0|L1 and #PF mask/match (prepare_vmcs02_rare).
        Unlike 5.11 the MMU keeps kvm_inject_page_fault as its #PF injector:
        kvm_multiple_exception does the morphing now."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        vmcs02 = vcpu.vmx.vmcs02.vmcs
        if vcpu.vmx_need_pf_intercept():
            vmcs02.pf_mask = vmcs02.pf_match = 0
        else:
            vmcs02.pf_mask = vmcs12.page_fault_error_code_mask
            vmcs02.pf_match = vmcs12.page_fault_error_code_match
        vcpu.update_exception_bitmap()

    # -------------------------------------------------------------- VM exit --

    @origin(NESTED_C, "vmcs12_save_pending_event", tree=TREE, read=STABLE)
    def vmcs12_save_pending_event(vcpu, vm_exit_reason: int, exit_intr_info: int) -> None:
        """IDT-vectoring info for L1 from KVM's *injected* state; none for a
        triple-fault or #DF exit, and none (explicitly 0) when nothing was in
        flight.  A pending exception is dropped."""
        a = vcpu.arch
        vmcs12 = vcpu.vmx.nested.vmcs12
        basic = vm_exit_reason & 0xFFFF
        if basic == hw.EXIT_REASON_TRIPLE_FAULT or (
                basic == hw.EXIT_REASON_EXCEPTION_NMI and is_exception_n(exit_intr_info, DF)):
            vmcs12.idt_vectoring_info_field = 0
        elif a.exception.injected:
            nr = a.exception.vector
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
        else:
            vmcs12.idt_vectoring_info_field = 0

    @origin(NESTED_C, "prepare_vmcs12", tree=TREE, read=STABLE)
    def prepare_vmcs12(vcpu, vm_exit_reason: int, exit_intr_info: int, exit_qualification: int) -> None:
        """Exit reason and qualification always; the rest only for a real
        exit (not a failed entry).  KVM's queues are left to the caller."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        vmcs12.vm_exit_reason = vm_exit_reason
        vmcs12.exit_qualification = exit_qualification
        if not vm_exit_reason & hw.VMX_EXIT_REASONS_FAILED_VMENTRY:
            vmcs12.launch_state = 1
            vmcs12.vm_entry_intr_info_field &= ~INTR_INFO_VALID
            vcpu.vmcs12_save_pending_event(vm_exit_reason, exit_intr_info)
            vmcs12.vm_exit_intr_info = exit_intr_info
            vmcs12.vm_exit_instruction_len = vcpu.vmcs().exit_instruction_len  # vmcs02's (VMX_INSTRUCTION_INFO: not modelled)

    @origin(NESTED_C, "nested_vmx_vmexit", tree=TREE, read=STABLE)
    def nested_vmx_vmexit(vcpu, vm_exit_reason: int, exit_intr_info: int, exit_qualification: int) -> None:
        vmx = vcpu.vmx
        vmx.nested.mtf_pending = False
        vcpu.warn_on_once(vmx.nested.nested_run_pending, "nested_vmx_vmexit: nested_run_pending")
        vcpu.leave_guest_mode()
        if not vmx.fail:
            vcpu.sync_vmcs02_to_vmcs12()
            if vm_exit_reason != -1:
                vcpu.prepare_vmcs12(vm_exit_reason, exit_intr_info, exit_qualification)
        else:
            vcpu.warn_on_once(vmx.vmcs02.vmcs.instr_error != VMXERR_ENTRY_INVALID_CONTROL_FIELD,
                              "nested_vmx_vmexit: late VM-fail with an unexpected VM-instruction error")
        # Drop what was picked up for L2 (its re-injection, both pending
        # exceptions) now that vmcs12 has it.
        vcpu.arch.nmi_injected = False
        vcpu.kvm_clear_exception_queue()
        vcpu.kvm_clear_interrupt_queue()
        vmx.loaded_vmcs = vmx.vmcs01  # vmx_switch_vmcs
        vcpu.update_exception_bitmap()
        vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE  # in case L2 halted
        if not vmx.fail:
            # Acknowledge interrupt on exit: L1 never sets it.
            vcpu.load_vmcs12_host_state()
            if vm_exit_reason != -1:
                vcpu.record_nested_vmexit()
            pending = ("NMI" if vcpu.arch.nmi_pending or vcpu.arch.nmi_queued else
                       "interrupt" if vcpu.apic.irr or vcpu.pending_external_vector != -1 else None)
            if pending and not vcpu.kvm_test_request(KVM_REQ_EVENT):  # for people: its window was vmcs02's
                vcpu.rec.note("nested_vmx_vmexit: an event is still pending at the exit to L1 and nothing "
                              f"requests KVM_REQ_EVENT [{pending}]")
            return
        # A late VM-fail (vmcs02's entry failed): L1's VMLAUNCH / VMRESUME
        # fails now, and is skipped (nested_vmx_fail); host state restored.
        vcpu.nested_vmx_fail(VMXERR_ENTRY_INVALID_CONTROL_FIELD)
        vmx.fail = False


_ = (NESTED_H,)
