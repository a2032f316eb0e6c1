"""The pre-patch driver (shared by every KVM port), adapted to the RFC's
state without editing it:

* "KVM still holds an exception" is now `pending_exception.valid or
  injected_exception.valid` (the driver's own test read the old
  `exception.pending / injected`);
* `user.set_exception` under KVM_CAP_EXCEPTION_INJECTED_PENDING: a VMM that
  enabled the cap describes a *pending* exception in the new
  `pending_exception` struct of kvm_vcpu_events (set-events reads it from
  there with the cap), as well as in the legacy fields.
"""
from __future__ import annotations

from impls.prepatch import state as st
from impls.prepatch.driver import Driver as PrepatchDriver


class Driver(PrepatchDriver):
    def __init__(self, scenario, vcpu_cls):
        self._setting_exception = False
        super().__init__(scenario, vcpu_cls)

    def in_flight(self) -> bool:
        v = self.vcpu
        a = v.arch
        nested = v.svm.nested if self.svm else v.vmx.nested
        return bool(a.pending_exception.valid or a.injected_exception.valid or a.nmi_injected
                    or a.interrupt.injected or nested.nested_run_pending
                    or v.requests & st.KVM_REQ_TRIPLE_FAULT)

    def ev_user_set_exception(self, ev):
        self._setting_exception = True
        try:
            super().ev_user_set_exception(ev)
        finally:
            self._setting_exception = False

    def _set_events(self, events) -> None:
        if self._setting_exception and self.vcpu.kvm.exception_separate_injected_pending \
                and events.exception_pending:
            events.pending_exception_nr = events.exception_nr
            events.pending_exception_has_error_code = events.exception_has_error_code
            events.pending_exception_error_code = events.exception_error_code
        super()._set_events(events)
