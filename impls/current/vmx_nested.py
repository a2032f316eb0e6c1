"""Port of the event paths of arch/x86/kvm/vmx/nested.c as of Linux 6.18 (read
at the v6.18 release: clywm520/6.18.y 947ac181), where they differ from
the 6.1 port (`impls.upstream.vmx_nested`).

Differs:

* `nested_vmx_vmexit` (6.18: the nested.h wrapper, which reads the exit
  instruction length, and __nested_vmx_vmexit) makes KVM_REQ_EVENT after
  an exit to L1 if an interrupt or NMI is pending, so that KVM injects it
  into L1 or opens a window in vmcs01: in 6.1 a window requested in vmcs02
  for such an event was lost with the switch to vmcs01 and the event
  waited for an unrelated KVM_REQ_EVENT.  Acknowledging the interrupt on
  exit moved to vmx_check_nested_events (L1 never sets that control).
* `nested_vmx_enter_non_root_mode` also makes KVM_REQ_EVENT when the LAPIC
  has an interrupt pending (kvm_apic_has_interrupt), not only for
  vmcs01's windows and INIT/SIPI, so it is evaluated for L2 at once.
* `vmx_check_nested_events`: the interrupt rung handles "acknowledge
  interrupt on exit" itself (the vector in the exit information, and a
  nested posted-interrupt vector processed instead of exiting), and
  posted-interrupt processing is blocked only by re-injection, not by a
  pending nested run.  L1 sets neither control here, so for the modelled
  state the rung exits with reason EXTERNAL_INTERRUPT and no vector, as
  6.1 did.
* `nested_vmx_triple_fault` clears KVM_REQ_TRIPLE_FAULT itself, now that
  kvm_check_nested_events only tests it (also v6.1).
* `vmx_has_nested_events` (nested_ops->has_events, 6.1:
  hv_timer_pending) takes `for_injection`.

Reused unchanged (compared with the 6.1.55 stable tree):
nested_vmx_is_exception_vmexit, vmcs12_save_pending_event, prepare_vmcs12 (takes the instruction length,
not modelled), prepare_vmcs02 (CET and debugctl state aside),
prepare_vmcs02_early, load_vmcs12_host_state (CET state aside),
nested_vmx_run, nested_vmx_l0_wants_exit / nested_vmx_l1_wants_exit (new
exit reasons only), nested_vmx_reflect_vmexit, nested_exit_on_nmi /
nested_exit_on_intr, the #DB helpers, nested_vmx_update_pending_dbg.
`nested_check_vm_entry_controls` relaxes the error-code check when the
vCPU reports VMX_BASIC_NO_HW_ERROR_CODE_CC, which matters only for a
hardware exception whose deliver-error-code bit disagrees with its
vector: the scenario language injects none, so the port keeps 6.1's check.

Not followed yet: `nested_vmx_inject_exception_vmexit` is 6.1.55's in 6.18,
with 80962ec912db (no error code in an exception exit from real mode), but
the 6.1 port, whose version this port runs, follows the v6.1 tag without
it (see `impls.current.reused`).
"""
from __future__ import annotations

from impls.arch import DB, NMI_VECTOR, PF
from impls.arch.vmx import INTR_INFO_DELIVER_CODE
from impls.hw import cpu as hw
from impls.origin import origin
from impls.prepatch.vmx import (
    INTR_TYPE_EXT_INTR, INTR_TYPE_HARD_EXCEPTION, INTR_TYPE_NMI_INTR, INTR_TYPE_SOFT_EXCEPTION,
    VECTORING_INFO_VALID_MASK,
)
from impls.prepatch.x86 import kvm_exception_is_soft
from impls.arch.vmx import INTR_INFO_VALID
from impls.prepatch.vmx_nested import (
    EXIT_REASON_INIT_SIGNAL, EXIT_REASON_SIPI_SIGNAL, VMXERR_ENTRY_INVALID_CONTROL_FIELD,
)
from impls.current.state import (
    EBUSY, KVM_APIC_INIT, KVM_APIC_SIPI, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_REQ_EVENT,
    KVM_REQ_TRIPLE_FAULT, TREE, VM_EXIT_ACK_INTR_ON_EXIT,
)
from impls.upstream.state import DR6_ACTIVE_LOW, DR6_BT
from impls.upstream.vmx_nested import EXIT_REASON_MONITOR_TRAP_FLAG

NESTED_C = "arch/x86/kvm/vmx/nested.c"


class VmxNested618:
    """arch/x86/kvm/vmx/nested.c of 6.18, as methods of the vCPU."""

    @origin(NESTED_C, "nested_vmx_inject_exception_vmexit", tree=TREE)
    def nested_vmx_inject_exception_vmexit(vcpu) -> None:
        """6.1's, with 80962ec912db (6.3-rc, in 6.1.24): an exception exit
        from an L2 in real mode carries no error code, as VMX hardware
        reports none there; the error code kept is its low 16 bits."""
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
        if ex.has_error_code and vcpu.is_protmode():
            vmcs12.vm_exit_intr_error_code = ex.error_code & 0xFFFF
            intr_info |= INTR_INFO_DELIVER_CODE
        intr_info |= INTR_TYPE_SOFT_EXCEPTION if kvm_exception_is_soft(ex.vector) else INTR_TYPE_HARD_EXCEPTION
        if not vmcs12.idt_vectoring_info_field & VECTORING_INFO_VALID_MASK and vcpu.vmx_get_nmi_mask():
            intr_info |= hw.INTR_INFO_UNBLOCK_NMI
        vcpu.rec.note(f"nested_vmx_inject_exception_vmexit: exception_vmexit vector {ex.vector} to L1")
        vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXCEPTION_NMI, intr_info, exit_qual)

    @origin(NESTED_C, "nested_vmx_triple_fault", tree=TREE)
    def nested_vmx_triple_fault(vcpu) -> None:
        vcpu.kvm_clear_request(KVM_REQ_TRIPLE_FAULT)
        vcpu.nested_vmx_vmexit(hw.EXIT_REASON_TRIPLE_FAULT, 0, 0)

    @origin(NESTED_C, "nested_exit_intr_ack_set", tree=TREE)
    def nested_exit_intr_ack_set(vcpu) -> bool:
        """"Acknowledge interrupt on exit" in vmcs12 (L1's driver never sets
        it, impls.hw.environment)."""
        return bool(vcpu.vmx.nested.vmcs12.vm_exit_controls & VM_EXIT_ACK_INTR_ON_EXIT)

    @origin(NESTED_C, "vmx_has_nested_events", tree=TREE)
    def vmx_has_nested_events(vcpu, for_injection: bool) -> bool:
        """A nested event KVM must exit for: the preemption timer or MTF
        (neither modelled), or, not for injection, a virtual interrupt
        pending with virtual-interrupt delivery (not used by L1 here)."""
        vmx = vcpu.vmx
        if vcpu.nested_vmx_preemption_timer_pending() or vmx.nested.mtf_pending:
            return True
        return False

    # ------------------------------------------------------------ the ladder --

    @origin(NESTED_C, "vmx_check_nested_events", tree=TREE)
    def vmx_check_nested_events(vcpu) -> int:
        """The priority ladder for events while L2 runs.  A pending nested
        run blocks everything that needs injection (-EBUSY); an event that
        must be re-injected blocks new events but not exceptions, which
        arose while delivering it."""
        vmx = vcpu.vmx
        a = vcpu.arch
        apic = vcpu.apic
        block_nested_exceptions = vmx.nested.nested_run_pending
        block_non_injected_events = vcpu.kvm_event_needs_reinjection()
        block_nested_events = block_nested_exceptions or block_non_injected_events

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
            if not vcpu.nested_exit_on_intr():
                if block_nested_events:
                    return -EBUSY
                return 0  # no_vmexit
            if not vcpu.nested_exit_intr_ack_set():
                if block_nested_events:
                    return -EBUSY
                vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXTERNAL_INTERRUPT, 0, 0)
                return 0
            # kvm_cpu_get_extint acknowledges the ExtINT (split irqchip:
            # get_userspace_extint) before the -EBUSY test.
            irq = vcpu.pending_external_vector
            vcpu.pending_external_vector = -1
            if irq != -1:
                if block_nested_events:
                    return -EBUSY
                vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXTERNAL_INTERRUPT,
                                       INTR_INFO_VALID | INTR_TYPE_EXT_INTR | irq, 0)
                return 0
            irq = vcpu.kvm_apic_has_interrupt()
            if vcpu.warn_on_once(irq < 0, "vmx_check_nested_events: no LAPIC interrupt to acknowledge"):
                return 0  # no_vmexit
            # L2's posted-interrupt notification vector: L1 uses no posted
            # interrupts (posted_intr_nv is -1), so never this one.
            if block_nested_events:
                return -EBUSY
            vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXTERNAL_INTERRUPT,
                                   INTR_INFO_VALID | INTR_TYPE_EXT_INTR | irq, 0)
            vcpu.apic.irr.discard(irq)  # kvm_apic_ack_interrupt, after the exit
            return 0

        return 0  # no_vmexit: vmx_complete_nested_posted_interrupt, no posted interrupts

    # ------------------------------------------------------------- VM entry --

    @origin(NESTED_C, "nested_vmx_enter_non_root_mode", tree=TREE)
    def nested_vmx_enter_non_root_mode(vcpu, from_vmentry: bool) -> int:
        """Switch to vmcs02 and enter guest mode; then KVM_REQ_EVENT if vmcs01
        asked for an interrupt or NMI window, INIT or SIPI is pending, or
        the LAPIC has an interrupt, so that it is evaluated for L2 at
        once."""
        vmx = vcpu.vmx
        vmx.loaded_vmcs = vmx.vmcs02  # vmx_switch_vmcs
        vcpu.prepare_vmcs02_early()
        vcpu.enter_guest_mode()
        vcpu.prepare_vmcs02()
        vmcs01 = vmx.vmcs01.vmcs
        if vmcs01.intr_window_exiting or vmcs01.nmi_window_exiting \
                or vcpu.kvm_apic_has_pending_init_or_sipi() or vcpu.kvm_apic_has_interrupt() != -1:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 0

    # -------------------------------------------------------------- VM exit --

    @origin(NESTED_C, "__nested_vmx_vmexit", tree=TREE)
    def nested_vmx_vmexit(vcpu, vm_exit_reason: int, exit_intr_info: int, exit_qualification: int) -> None:
        """The exit to L1 (reached through the nested.h wrapper
        nested_vmx_vmexit): vmcs12 gets the exit, KVM drops what it held
        for L2, L1's host state is loaded, and KVM_REQ_EVENT is made if an
        interrupt or NMI is pending (RFLAGS.IF is 0 after the exit, but
        KVM must inject or open a window)."""
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
            vcpu.load_vmcs12_host_state()
            if vcpu.kvm_cpu_has_injectable_intr() or vcpu.arch.nmi_pending:
                vcpu.kvm_make_request(KVM_REQ_EVENT)
            if vm_exit_reason != -1:
                vcpu.record_nested_vmexit()
            return
        # A late VM-fail (vmcs02's entry failed): L1's VMLAUNCH / VMRESUME
        # fails now, and is skipped (nested_vmx_fail); host state restored.
        vcpu.nested_vmx_fail(VMXERR_ENTRY_INVALID_CONTROL_FIELD)
        vmx.fail = False
