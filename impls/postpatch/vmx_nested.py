"""What the RFC changes in arch/x86/kvm/vmx/nested.c (patches 3/4 and 4/4).

Patch 3/4: in `vmx_check_nested_events`, both exception rungs (the one for
exceptions other than a #DB trap, before MTF, and the one for the rest,
after MTF) test only `nested_run_pending` instead of
`block_nested_events`.  Patch 4/4 then moves those rungs, and the MTF rung
between them, into the new `nested_vmx_deliver_nested_exception`; the final
state is ported.

Patch 4/4 hunks, in the order of the diff:

* `nested_vmx_check_exception` reads the *pending* exception (vector,
  payload, nested_apf, the error code for the #PF mask/match);
* `vmcs12_save_pending_event` reports the *injected* exception in
  IDT-vectoring info (it does not clear it; the VM exit clears the queue),
* `nested_vmx_inject_exception_vmexit`, `vmx_pending_dbg_trap` and
  `nested_vmx_update_pending_dbg` read the *pending* exception,
* `vmx_check_nested_events` loses its exception rungs *and* its MTF rung
  (and the local copy of mtf_pending): INIT, preemption timer, SMI, NMI, IRQ,
* new `nested_vmx_deliver_nested_exception`, wired as
  nested_ops->deliver_exception: 1 with neither a pending exception nor a
  pending MTF; -EBUSY while a nested run is pending; then, in the old
  ladder's order, a pending exception that is not a #DB trap (VM exit if L1
  wants it, else 1), MTF (stash a pending #DB trap in the pending-debug
  field, MTF VM exit -- mtf_pending is not cleared, "TODO: check this"),
  a #DB trap (VM exit if L1 wants it, else 1).  Since its only caller loops
  while an exception is pending, an MTF with no exception pending never
  exits any more (known slip; unreachable here: L1 never enables MTF,
  impls.hw.environment, so `mtf_pending` stays False).

The cover letter says VMX was only compile-tested.  Note that with EPT off
5.11's `vmx_inject_page_fault_nested` (prepare_vmcs02's MMU hook) still
turns a #PF L1 intercepts into a VM exit at once, bypassing all of the
above; the RFC keeps it (the April repost removes it).
"""
from __future__ import annotations

from impls.arch import DB, NMI_VECTOR, PF
from impls.arch.vmx import INTR_INFO_DELIVER_CODE, INTR_INFO_VALID
from impls.hw import cpu as hw
from impls.origin import origin
from impls.postpatch.state import PATCH4
from impls.prepatch.state import (
    DR6_FIXED_1, DR6_RTM, EBUSY, KVM_APIC_INIT, KVM_APIC_SIPI, KVM_MP_STATE_INIT_RECEIVED,
)
from impls.prepatch.vmx import (
    INTR_TYPE_EXT_INTR, INTR_TYPE_HARD_EXCEPTION, INTR_TYPE_NMI_INTR, INTR_TYPE_SOFT_EXCEPTION,
    INTR_TYPE_SOFT_INTR, VECTORING_INFO_VALID_MASK,
)
from impls.prepatch.vmx_nested import EXIT_REASON_INIT_SIGNAL, EXIT_REASON_SIPI_SIGNAL, NESTED_C
from impls.prepatch.x86 import kvm_exception_is_soft

EXIT_REASON_MONITOR_TRAP_FLAG = 37


class VmxNestedRfc:
    """vmx/nested.c after the RFC, as methods of the vCPU."""

    @origin(NESTED_C, "nested_vmx_check_exception", tree=PATCH4)
    def nested_vmx_check_exception(vcpu) -> tuple[bool, int]:
        """Whether L1 wants the *pending* exception, and the exit
        qualification it gets."""
        p = vcpu.arch.pending_exception
        nr = p.nr
        if nr == PF:
            if p.nested_apf:
                return True, vcpu.arch.apf_nested_apf_token
            if vcpu.nested_vmx_is_page_fault_vmexit(p.error_code):
                return True, p.payload if p.has_payload else vcpu.guest().cr2
            return False, 0
        if vcpu.vmx.nested.vmcs12.exception_bitmap & (1 << nr):
            if nr == DB:
                payload = p.payload
                if not p.has_payload:
                    payload = vcpu.arch.dr6
                    payload &= ~(DR6_FIXED_1 | (1 << 15))
                    payload ^= DR6_RTM
                return True, payload
            return True, 0
        return False, 0

    @origin(NESTED_C, "vmcs12_save_pending_event", tree=PATCH4)
    def vmcs12_save_pending_event(vcpu) -> None:
        """IDT-vectoring info for L1 from the *injected* exception, else the
        injected NMI, else the injected interrupt."""
        a = vcpu.arch
        i = a.injected_exception
        vmcs12 = vcpu.vmx.nested.vmcs12
        if i.valid:
            nr = i.nr
            idt_vectoring = nr | VECTORING_INFO_VALID_MASK
            if kvm_exception_is_soft(nr):
                vmcs12.vm_exit_instruction_len = a.event_exit_inst_len
                idt_vectoring |= INTR_TYPE_SOFT_EXCEPTION
            else:
                idt_vectoring |= INTR_TYPE_HARD_EXCEPTION
            if i.has_error_code:
                idt_vectoring |= INTR_INFO_DELIVER_CODE
                vmcs12.idt_vectoring_error_code = i.error_code
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

    @origin(NESTED_C, "nested_vmx_inject_exception_vmexit", tree=PATCH4)
    def nested_vmx_inject_exception_vmexit(vcpu, exit_qual: int) -> None:
        p = vcpu.arch.pending_exception
        vmcs12 = vcpu.vmx.nested.vmcs12
        nr = p.nr
        intr_info = nr | INTR_INFO_VALID
        if p.has_error_code:
            vmcs12.vm_exit_intr_error_code = p.error_code
            intr_info |= INTR_INFO_DELIVER_CODE
        intr_info |= INTR_TYPE_SOFT_EXCEPTION if kvm_exception_is_soft(nr) else INTR_TYPE_HARD_EXCEPTION
        if not vmcs12.idt_vectoring_info_field & VECTORING_INFO_VALID_MASK and vcpu.vmx_get_nmi_mask():
            intr_info |= hw.INTR_INFO_UNBLOCK_NMI
        vcpu.rec.note(f"nested_vmx_inject_exception_vmexit: pending vector {nr} to L1")
        vcpu.nested_vmx_vmexit(hw.EXIT_REASON_EXCEPTION_NMI, intr_info, exit_qual)

    @origin(NESTED_C, "vmx_pending_dbg_trap", tree=PATCH4)
    def vmx_pending_dbg_trap(vcpu) -> bool:
        p = vcpu.arch.pending_exception
        return p.valid and p.nr == DB and p.payload != 0

    @origin(NESTED_C, "nested_vmx_update_pending_dbg", tree=PATCH4)
    def nested_vmx_update_pending_dbg(vcpu) -> None:
        """A pending #DB trap goes into vmcs02's pending-debug-exceptions
        field (not modelled: no debug registers, impls.hw.environment)."""
        if vcpu.vmx_pending_dbg_trap():
            vcpu.rec.note("nested_vmx_update_pending_dbg: #DB trap stashed in GUEST_PENDING_DBG_EXCEPTIONS")

    @origin(NESTED_C, "vmx_check_nested_events", tree=PATCH4)
    def vmx_check_nested_events(vcpu) -> int:
        """The ladder without its exception and MTF rungs (they are in
        nested_vmx_deliver_nested_exception now).  The INIT and SIPI rungs
        are the base's, untouched by the RFC: an injected exception (the
        committed one) blocks them, a pending one was resolved before."""
        vmx = vcpu.vmx
        a = vcpu.arch
        apic = vcpu.apic
        block_nested_events = vmx.nested.nested_run_pending or vcpu.kvm_event_needs_reinjection()
        # (The base clears mtf_pending here when nothing blocks: MTF is not
        # modelled, as in the pre-patch port.)
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

    @origin(NESTED_C, "nested_vmx_deliver_nested_exception", tree=PATCH4)
    def nested_vmx_deliver_nested_exception(vcpu) -> int:
        """nested_ops->deliver_exception: 0 = a VM exit was done, 1 = none
        (nothing pending, or L1 does not want it), -EBUSY = a nested run is
        pending."""
        vmx = vcpu.vmx
        p = vcpu.arch.pending_exception
        if not p.valid and not vmx.nested.mtf_pending:
            return 1
        if vmx.nested.nested_run_pending:
            return -EBUSY
        # Exceptions other than #DB traps come before MTF.
        if p.valid and not vcpu.vmx_pending_dbg_trap():
            wants, exit_qual = vcpu.nested_vmx_check_exception()
            if not wants:
                return 1  # no_vmexit
            vcpu.nested_vmx_inject_exception_vmexit(exit_qual)
            return 0
        if vmx.nested.mtf_pending:
            # The RFC's "TODO: check this": mtf_pending is not cleared.
            vcpu.nested_vmx_update_pending_dbg()
            vcpu.nested_vmx_vmexit(EXIT_REASON_MONITOR_TRAP_FLAG, 0, 0)
            return 0
        if p.valid:
            wants, exit_qual = vcpu.nested_vmx_check_exception()
            if not wants:
                return 1
            vcpu.nested_vmx_inject_exception_vmexit(exit_qual)
            return 0
        return 1
