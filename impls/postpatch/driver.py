"""The pre-patch driver (shared by every KVM port) with one VMM change for
the RFC's new uapi: in `user.set_exception` under
KVM_CAP_EXCEPTION_INJECTED_PENDING, a VMM that enabled the cap describes a
*pending* exception in the new `pending_exception` struct of
kvm_vcpu_events (set-events reads it from there with the cap), as well as
in the legacy fields.  (Whether an event is in flight, the driver asks
`Vcpu.event_in_flight`, which `impls.postpatch.vcpu` overrides.)  In
`user.get_events` the same VMM reads a pending exception from that struct.
"""
from __future__ import annotations

from dataclasses import replace

from impls.api import VcpuEvents
from impls.arch import Ev, EvType
from impls.origin import glue
from impls.prepatch.driver import Driver as PrepatchDriver


@glue("the scenario driver's VMM, for the RFC's uapi (no kernel code)")
class Driver(PrepatchDriver):
    def __init__(self, scenario, vcpu_cls):
        self._setting_exception = False
        super().__init__(scenario, vcpu_cls)

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

    def vcpu_events(self, e) -> VcpuEvents:
        """With the cap, a pending exception is in the new struct (the legacy
        fields hold the injected one).  The observation has one exception:
        where both are held, it shows the injected one with both flags."""
        out = super().vcpu_events(e)
        if self.vcpu.kvm.exception_separate_injected_pending and out.exception_pending \
                and not out.exception_injected:
            ec = e.pending_exception_error_code if e.pending_exception_has_error_code else None
            out = replace(out, exception=Ev(EvType.HW_EXCEPTION, e.pending_exception_nr, ec))
        return out
