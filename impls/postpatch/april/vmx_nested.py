"""What the April repost does differently in arch/x86/kvm/vmx/nested.c,
relative to the February port (`impls.postpatch.vmx_nested`).

* `nested_vmx_check_exception`, `vmx_pending_dbg_trap` and
  `nested_vmx_update_pending_dbg` read the payload slot,
* `vmx_check_nested_events` keeps its MTF rung (February removed it); MTF
  is not modelled (impls.hw.environment), so the ported ladder is the
  February one,
* `nested_vmx_deliver_exception_as_vmexit` (wired as
  nested_ops->deliver_exception_as_vmexit): -EBUSY while a nested run is
  pending; an MTF with a pending #DB trap exits for MTF (and clears
  mtf_pending); else a pending exception L1 wants exits; always 0
  otherwise,
* its 4/4 removes `vmx_inject_page_fault_nested` and its installation in
  `prepare_vmcs02`: with EPT off, a #PF of L2 found by KVM's walk is now an
  ordinary pending exception, offered to L1 at delivery time.
"""
from __future__ import annotations

from impls.arch import DB, PF
from impls.origin import origin
from impls.postpatch.april.state import PATCH2, PATCH3, PATCH4
from impls.postpatch.vmx_nested import EXIT_REASON_MONITOR_TRAP_FLAG
from impls.prepatch.state import DR6_FIXED_1, DR6_RTM, EBUSY
from impls.prepatch.vmx_nested import NESTED_C


class VmxNestedApril:
    @origin(NESTED_C, "nested_vmx_check_exception", tree=PATCH2)
    def nested_vmx_check_exception(vcpu) -> tuple[bool, int]:
        p = vcpu.arch.pending_exception
        pl = vcpu.arch.exception_payload
        nr = p.nr
        if nr == PF:
            if pl.nested_apf:
                return True, vcpu.arch.apf_nested_apf_token
            if vcpu.nested_vmx_is_page_fault_vmexit(p.error_code):
                return True, pl.value if pl.valid else vcpu.guest().cr2
            return False, 0
        if vcpu.vmx.nested.vmcs12.exception_bitmap & (1 << nr):
            if nr == DB:
                payload = pl.value
                if not pl.valid:
                    payload = vcpu.arch.dr6
                    payload &= ~(DR6_FIXED_1 | (1 << 15))
                    payload ^= DR6_RTM
                return True, payload
            return True, 0
        return False, 0

    @origin(NESTED_C, "vmx_pending_dbg_trap", tree=PATCH2)
    def vmx_pending_dbg_trap(vcpu) -> bool:
        p = vcpu.arch.pending_exception
        return p.valid and p.nr == DB and vcpu.arch.exception_payload.value != 0

    @origin(NESTED_C, "nested_vmx_update_pending_dbg", tree=PATCH2)
    def nested_vmx_update_pending_dbg(vcpu) -> None:
        if vcpu.vmx_pending_dbg_trap():
            vcpu.rec.note("nested_vmx_update_pending_dbg: #DB trap stashed in GUEST_PENDING_DBG_EXCEPTIONS")

    @origin(NESTED_C, "nested_vmx_deliver_exception_as_vmexit", tree=PATCH3)
    def nested_vmx_deliver_exception_as_vmexit(vcpu) -> int:
        vmx = vcpu.vmx
        if vmx.nested.nested_run_pending:
            return -EBUSY
        if vmx.nested.mtf_pending and vcpu.vmx_pending_dbg_trap():
            vcpu.nested_vmx_update_pending_dbg()
            vmx.nested.mtf_pending = False
            vcpu.nested_vmx_vmexit(EXIT_REASON_MONITOR_TRAP_FLAG, 0, 0)
            return 0
        if vcpu.arch.pending_exception.valid:
            wants, exit_qual = vcpu.nested_vmx_check_exception()
            if wants:
                vcpu.nested_vmx_inject_exception_vmexit(exit_qual)
            return 0
        return 0

    @origin(NESTED_C, "prepare_vmcs02", tree=PATCH4)
    def prepare_vmcs02(vcpu) -> None:
        """As 5.11's, without installing vmx_inject_page_fault_nested."""
        vmcs12 = vcpu.vmx.nested.vmcs12
        vmcs02 = vcpu.vmx.vmcs02.vmcs
        if vcpu.vmx_need_pf_intercept():
            vmcs02.pf_mask = vmcs02.pf_match = 0
        else:
            vmcs02.pf_mask = vmcs12.page_fault_error_code_mask
            vmcs02.pf_match = vmcs12.page_fault_error_code_match
        vcpu.update_exception_bitmap()
