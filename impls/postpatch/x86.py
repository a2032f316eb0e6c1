"""What the RFC changes in arch/x86/kvm/x86.c and x86.h (patches 1/4 and 4/4).

Patch 1/4, "determine if an exception has an error code only when injecting
it":

* `kvm_multiple_exception` no longer drops the error code of an exception
  queued outside protected mode,
* new `kvm_inject_exception`, called by `inject_pending_event` where it used
  to call the vendor's queue_exception, strips it instead -- with the known
  slip: it tests the *error code* where it means has_error_code, so in real
  mode a non-zero error code becomes 0 and the "has error code" flag stays.
  (4/4 then moves the strip into `kvm_deliver_pending_exception`.)

Patch 4/4, "WIP separation of injected and pending exception", every x86.c /
x86.h user of the old `vcpu->arch.exception`, in the order of the diff:

* `kvm_deliver_exception_payload` reads `pending_exception`,
* new `kvm_deliver_pending_exception`: while an exception is pending, offer
  it to L1 (nested op `deliver_exception`: 0 = VM exit done, 1 = not
  intercepted, <0 = -EBUSY); with nothing injected, commit it (RF, payload,
  DR7.GD, the slipped real-mode strip) as the injected exception; on top
  of an injected #DF, triple fault; else merge (#DF or replace) and loop;
* `kvm_multiple_exception` only records: a re-injected exception goes to
  `injected_exception`, a new one to `pending_exception`, each refused with
  WARN_ON_ONCE when its slot (or, for a reinjection, the pending slot) is
  taken -- no merging, no payload delivery at queue time,
* `kvm_inject_page_fault` sets `pending_exception.nested_apf` (before a
  queue that may be refused),
* KVM_GET_VCPU_EVENTS: without the new cap, a pending *and* an injected
  exception are resolved on the spot by `kvm_deliver_pending_exception`
  (which may exit to L1 or request a triple fault from inside a read
  ioctl; on -EBUSY the injected exception is dropped); the payload test
  that checks `valid` twice (known slip, harmless); pending and injected
  reported separately, the pending one in the new struct with the cap; the
  ABI conflation of pending into injected moved out of the soft-exception
  test,
* new `is_valid_exception`; KVM_SET_VCPU_EVENTS sets the slots that the
  events name and never clears the others,
* KVM_ENABLE_CAP(KVM_CAP_EXCEPTION_INJECTED_PENDING) sets the VM flag (no
  check_extension hunk: the cap is not advertised),
* `kvm_inject_exception` loses its strip again,
* `inject_pending_event` starts with `kvm_deliver_pending_exception` (-EBUSY
  -> immediate exit), re-injects an injected exception or else NMI / IRQ
  (the "elif not pending" is gone), and no longer commits a pending
  exception itself,
* `kvm_vcpu_has_events` is now also true for an injected exception (the
  April repost's 3/4 has the same test),
* `__set_regs`, set_guest_debug and `kvm_can_do_async_pf`: renames; none is
  reached by the scenarios (no KVM_SET_REGS, guest debugging or async page
  faults: impls.hw.environment), so none is ported,
* x86.h: `kvm_clear_exception_queue` clears both `valid` flags,
  `kvm_event_needs_reinjection` looks at `injected_exception.valid`.

`vcpu_enter_guest` is not touched by the February RFC (the April repost adds
a delivery after every exit): a pending exception survives an exit to
userspace.  `X86Base` at the end overrides it anyway, for a simplification of
the shared port that the RFC makes visible; it is marked as base code.
"""
from __future__ import annotations

from impls.arch import DB, DF, PF
from impls.origin import origin
from impls.postpatch.state import (
    KVM_CAP_EXCEPTION_INJECTED_PENDING, KVM_CAP_EXCEPTION_PAYLOAD, PATCH4, KvmVcpuEvents,
)
from impls.prepatch.state import (
    DR6_RTM, DR7_GD, EBUSY, EINVAL, EXCPT_BENIGN, EXCPT_CONTRIBUTORY, EXCPT_FAULT, EXCPT_PF,
    KVM_APIC_INIT, KVM_EXIT_SHUTDOWN, KVM_MP_STATE_INIT_RECEIVED, KVM_REQ_EVENT, KVM_REQ_NMI, KVM_REQ_SMI,
    KVM_REQ_TRIPLE_FAULT,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD,
    KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM, X86Exception,
)
from impls.prepatch.state import HF_SMM_INSIDE_NMI_MASK, HF_SMM_MASK
from impls.prepatch.x86 import X86_C, X86_H, exception_class, kvm_exception_is_soft

NMI_VECTOR = 2


@origin(X86_C, "is_valid_exception", tree=PATCH4)
def is_valid_exception(nr: int) -> bool:
    return nr < 32 and nr != NMI_VECTOR


class X86Rfc:
    """x86.c / x86.h after the RFC, as methods of the vCPU (mixed in before
    the pre-patch `X86`)."""

    # ----------------------------------------------------------- x86.h --

    @origin(X86_H, "kvm_clear_exception_queue", tree=PATCH4)
    def kvm_clear_exception_queue(vcpu) -> None:
        vcpu.arch.pending_exception.valid = False
        vcpu.arch.injected_exception.valid = False

    @origin(X86_H, "kvm_event_needs_reinjection", tree=PATCH4)
    def kvm_event_needs_reinjection(vcpu) -> bool:
        a = vcpu.arch
        return a.injected_exception.valid or a.interrupt.injected or a.nmi_injected

    # ----------------------------------------------------- exceptions --

    @origin(X86_C, "kvm_deliver_exception_payload", tree=PATCH4)
    def kvm_deliver_exception_payload(vcpu) -> None:
        """CR2 / DR6 from the *pending* exception's payload."""
        ex = vcpu.arch.pending_exception
        if not ex.has_payload:
            return
        if ex.nr == DB:
            vcpu.arch.dr6 &= ~0xF
            vcpu.arch.dr6 |= DR6_RTM
            vcpu.arch.dr6 |= ex.payload
            vcpu.arch.dr6 ^= ex.payload & DR6_RTM
            vcpu.arch.dr6 &= ~(1 << 12)
        elif ex.nr == PF:
            vcpu.guest().cr2 = ex.payload  # vcpu->arch.cr2
        ex.has_payload = False
        ex.payload = 0

    @origin(X86_C, "kvm_deliver_pending_exception", tree=PATCH4)
    def kvm_deliver_pending_exception(vcpu) -> int:
        """Turn the pending exception into a nested VM exit or into the
        injected exception, merging it with an injected one first if there
        is one.  Returns 0, or the nested op's negative value (-EBUSY)."""
        p = vcpu.arch.pending_exception
        i = vcpu.arch.injected_exception
        while p.valid:
            # Offer it to L1 as a VM exit.
            if vcpu.is_guest_mode():
                ret = vcpu.nested_ops.deliver_exception(vcpu)
                if ret <= 0:
                    return ret

            # Nothing injected: commit the pending exception.
            if not i.valid:
                # trace_kvm_inj_exception
                if vcpu.exception_type(p.nr) == EXCPT_FAULT:
                    pass  # RFLAGS.RF (SDM 17.3.1.1): not modelled (impls.hw.environment)
                vcpu.kvm_deliver_exception_payload()
                if p.nr == DB and vcpu.arch.dr7 & DR7_GD:
                    vcpu.arch.dr7 &= ~DR7_GD  # kvm_update_dr7: no debug registers here
                # Known slip (as in 1/4): the error code is tested where
                # has_error_code is meant, and "false" is stored into it.
                if p.error_code and not vcpu.is_protmode():
                    p.error_code = 0
                p.valid = False
                i.valid = True
                i.has_error_code = p.has_error_code
                i.nr = p.nr
                i.error_code = p.error_code
                vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} committed as the injected exception")
                return 0

            # An injected exception is there: merge.
            prev_nr = i.nr
            if prev_nr == DF:
                i.valid = False
                p.valid = False
                # The RFC's own TODO: no nested VM exit for the triple fault.
                vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} on top of injected #DF: "
                              "KVM_REQ_TRIPLE_FAULT")
                vcpu.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
                break
            class1 = exception_class(prev_nr)
            class2 = exception_class(p.nr)
            i.valid = False
            if (class1 == EXCPT_CONTRIBUTORY and class2 == EXCPT_CONTRIBUTORY) or (
                    class1 == EXCPT_PF and class2 != EXCPT_BENIGN):
                vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} on top of injected vector "
                              f"{prev_nr}: #DF")
                p.has_error_code = True
                p.nr = DF
                p.error_code = 0
                p.has_payload = False  # payload and nested_apf are left as they are
            else:
                vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} replaces injected vector {prev_nr}")
        return 0

    @origin(X86_C, "kvm_multiple_exception", tree=PATCH4)
    def kvm_multiple_exception(vcpu, nr: int, has_error: bool, error_code: int, has_payload: bool,
                               payload: int, reinject: bool) -> None:
        """Record exception `nr`: a re-injected one as the injected
        exception, a new one as the pending exception.  No merging (that is
        kvm_deliver_pending_exception's job now) and no payload delivery; a
        taken slot refuses the exception with a warning, and it is lost.
        (1/4 already removed the real-mode error-code strip from here.)"""
        p = vcpu.arch.pending_exception
        i = vcpu.arch.injected_exception
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        if reinject:
            if vcpu.warn_on_once(p.valid, "kvm_multiple_exception: reinject while an exception is pending"):
                vcpu.rec.note(f"kvm_multiple_exception: re-injected vector {nr} refused (pending {p.nr}): lost")
                return
            if vcpu.warn_on_once(i.valid, "kvm_multiple_exception: reinject while an exception is injected"):
                vcpu.rec.note(f"kvm_multiple_exception: re-injected vector {nr} refused (injected {i.nr}): lost")
                return
            i.valid = True
            i.nr = nr
            i.has_error_code = has_error
            i.error_code = error_code
            vcpu.warn_on_once(has_payload, "kvm_multiple_exception: reinject with payload")
        else:
            if vcpu.warn_on_once(p.valid, "kvm_multiple_exception: second pending exception"):
                vcpu.rec.note(f"kvm_multiple_exception: vector {nr} refused (pending {p.nr}): lost")
                return
            p.valid = True
            p.nr = nr
            p.has_error_code = has_error
            p.error_code = error_code
            p.has_payload = has_payload
            p.payload = payload

    @origin(X86_C, "kvm_inject_page_fault", tree=PATCH4)
    def kvm_inject_page_fault(vcpu, fault: X86Exception) -> None:
        p = vcpu.arch.pending_exception
        p.nested_apf = vcpu.is_guest_mode() and fault.async_page_fault
        if p.nested_apf:
            vcpu.arch.apf_nested_apf_token = fault.address
            vcpu.kvm_queue_exception_e(PF, fault.error_code)
        else:
            vcpu.kvm_queue_exception_e_p(PF, fault.error_code, fault.address)

    # ------------------------------------------------ KVM_GET/SET_VCPU_EVENTS --

    @origin(X86_C, "kvm_vcpu_ioctl_x86_get_vcpu_events", tree=PATCH4)
    def kvm_vcpu_ioctl_x86_get_vcpu_events(vcpu) -> KvmVcpuEvents:
        """The exception part after 4/4.  `events` starts zeroed here; in the
        kernel the fields this function leaves unwritten (the legacy nr /
        error code when nothing is reported, the new struct's nr / error
        code / pad without the cap) are no longer covered by the memset of
        `reserved`, which shrank: a note records when that happens."""
        a = vcpu.arch
        p = a.pending_exception
        i = a.injected_exception
        kvm = vcpu.kvm
        events = KvmVcpuEvents()
        vcpu.process_nmi()
        if vcpu.kvm_check_request(KVM_REQ_SMI):
            vcpu.process_smi()
        events.exception_injected = 0
        events.exception_pending = 0
        events.pending_exception_has_payload = 0
        events.pending_exception_payload = 0

        # Old userspace cannot hold both: resolve them now.
        if not kvm.exception_separate_injected_pending:
            if p.valid and i.valid:
                vcpu.rec.note("KVM_GET_VCPU_EVENTS: pending and injected exception without the cap: "
                              "kvm_deliver_pending_exception from the ioctl")
                if vcpu.kvm_deliver_pending_exception() < 0:
                    vcpu.rec.note("KVM_GET_VCPU_EVENTS: delivery -EBUSY: the injected exception is dropped")
                    i.valid = False

        # Known slip: `valid` tested twice where has_payload is meant
        # (harmless: the payload helper returns at once without a payload).
        if not kvm.exception_payload_enabled and p.valid and p.valid:
            vcpu.kvm_deliver_exception_payload()

        if any(e.valid and kvm_exception_is_soft(e.nr) for e in (p, i)):
            vcpu.rec.note("KVM_GET_VCPU_EVENTS: a soft exception is left out (its instruction executes again)")
        if p.valid and not kvm_exception_is_soft(p.nr):
            events.exception_pending = 1
            events.pending_exception_has_payload = int(p.has_payload)
            events.pending_exception_payload = p.payload
            if kvm.exception_separate_injected_pending:
                events.pending_exception_has_error_code = int(p.has_error_code)
                events.pending_exception_error_code = p.error_code
                events.pending_exception_nr = p.nr
            else:
                events.exception_has_error_code = int(p.has_error_code)
                events.exception_error_code = p.error_code
                events.exception_nr = p.nr

        if i.valid and not kvm_exception_is_soft(i.nr):
            events.exception_injected = 1
            events.exception_nr = i.nr
            events.exception_has_error_code = int(i.has_error_code)
            events.exception_error_code = i.error_code

        # The ABI conflation, now outside the soft-exception test.
        if not kvm.exception_payload_enabled:
            events.exception_injected |= int(p.valid)

        events.interrupt_injected = int(a.interrupt.injected and not a.interrupt.soft)
        events.interrupt_nr = a.interrupt.nr
        events.interrupt_soft = 0
        events.interrupt_shadow = vcpu.kvm_x86_ops.get_interrupt_shadow(vcpu)
        events.nmi_injected = int(a.nmi_injected)
        events.nmi_pending = int(a.nmi_pending != 0)
        events.nmi_masked = int(vcpu.kvm_x86_ops.get_nmi_mask(vcpu))
        events.sipi_vector = 0
        events.smi_smm = int(vcpu.is_smm())
        events.smi_pending = int(a.smi_pending)
        events.smi_smm_inside_nmi = int(bool(a.hflags & HF_SMM_INSIDE_NMI_MASK))
        events.smi_latched_init = int(vcpu.kvm_lapic_latched_init())
        events.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM
        if kvm.exception_payload_enabled:
            events.flags |= KVM_VCPUEVENT_VALID_PAYLOAD
        return events

    @origin(X86_C, "kvm_vcpu_ioctl_x86_set_vcpu_events", tree=PATCH4)
    def kvm_vcpu_ioctl_x86_set_vcpu_events(vcpu, events: KvmVcpuEvents) -> int:
        """The exception part after 4/4: each slot the events name is set,
        neither is ever cleared (no else branches), and the unchanged
        payload normalisation still forbids pending and injected together."""
        a = vcpu.arch
        p = a.pending_exception
        i = a.injected_exception
        kvm = vcpu.kvm
        if events.flags & ~(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR
                            | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM
                            | KVM_VCPUEVENT_VALID_PAYLOAD):
            return -EINVAL
        if events.flags & KVM_VCPUEVENT_VALID_PAYLOAD:
            if not kvm.exception_payload_enabled:
                return -EINVAL
            if events.exception_pending:
                events.exception_injected = 0
            else:
                events.pending_exception_has_payload = 0
        else:
            events.exception_pending = 0
            events.pending_exception_has_payload = 0
        if (events.exception_injected or events.exception_pending) and not is_valid_exception(events.exception_nr):
            return -EINVAL
        if kvm.exception_separate_injected_pending:
            if events.exception_pending and not is_valid_exception(events.pending_exception_nr):
                return -EINVAL
        if events.flags & KVM_VCPUEVENT_VALID_SMM and (events.smi_smm or events.smi_pending) \
                and vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED:
            return -EINVAL
        vcpu.process_nmi()

        if events.exception_injected:
            i.valid = True
            i.nr = events.exception_nr
            i.has_error_code = bool(events.exception_has_error_code)
            i.error_code = events.exception_error_code
        if events.exception_pending:
            p.valid = True
            if kvm.exception_separate_injected_pending:
                p.nr = events.pending_exception_nr
                p.has_error_code = bool(events.pending_exception_has_error_code)
                p.error_code = events.pending_exception_error_code
            else:
                p.nr = events.exception_nr
                p.has_error_code = bool(events.exception_has_error_code)
                p.error_code = events.exception_error_code
            p.has_payload = bool(events.pending_exception_has_payload)
            p.payload = events.pending_exception_payload
        if (p.valid and not events.exception_pending) or (i.valid and not events.exception_injected):
            vcpu.rec.note("KVM_SET_VCPU_EVENTS: a queued exception the events do not name stays queued")

        a.interrupt.injected = bool(events.interrupt_injected)
        a.interrupt.nr = events.interrupt_nr
        a.interrupt.soft = bool(events.interrupt_soft)
        if events.flags & KVM_VCPUEVENT_VALID_SHADOW:
            vcpu.kvm_x86_ops.set_interrupt_shadow(vcpu, events.interrupt_shadow)
        a.nmi_injected = bool(events.nmi_injected)
        if events.flags & KVM_VCPUEVENT_VALID_NMI_PENDING:
            a.nmi_pending = events.nmi_pending
        vcpu.kvm_x86_ops.set_nmi_mask(vcpu, bool(events.nmi_masked))
        if events.flags & KVM_VCPUEVENT_VALID_SIPI_VECTOR:
            vcpu.apic.sipi_vector = events.sipi_vector
        if events.flags & KVM_VCPUEVENT_VALID_SMM:
            if vcpu.is_smm() != bool(events.smi_smm):
                if events.smi_smm:
                    a.hflags |= HF_SMM_MASK
                else:
                    a.hflags &= ~HF_SMM_MASK
                vcpu.kvm_smm_changed()
            a.smi_pending = bool(events.smi_pending)
            if events.smi_smm:
                if events.smi_smm_inside_nmi:
                    a.hflags |= HF_SMM_INSIDE_NMI_MASK
                else:
                    a.hflags &= ~HF_SMM_INSIDE_NMI_MASK
            if events.smi_latched_init:
                vcpu.apic.pending_events |= 1 << KVM_APIC_INIT
            else:
                vcpu.apic.pending_events &= ~(1 << KVM_APIC_INIT)
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 0

    @origin(X86_C, "kvm_vm_ioctl_enable_cap", tree=PATCH4)
    def kvm_vm_ioctl_enable_cap(vcpu, cap: int, arg: int) -> int:
        """KVM_ENABLE_CAP on the VM (the two caps of interest).  The RFC's cap
        takes any value, at any time; KVM_CHECK_EXTENSION does not list it."""
        kvm = vcpu.kvm
        if cap == KVM_CAP_EXCEPTION_PAYLOAD:
            kvm.exception_payload_enabled = bool(arg)
            return 0
        if cap == KVM_CAP_EXCEPTION_INJECTED_PENDING:
            kvm.exception_separate_injected_pending = bool(arg)
            return 0
        return -EINVAL

    # ------------------------------------------------------------------ HLT --

    @origin(X86_C, "kvm_vcpu_has_events", tree=PATCH4)
    def kvm_vcpu_has_events(vcpu) -> bool:
        """The 5.11 test (`impls.prepatch.x86`), with the exception test
        renamed and widened: a pending *or an injected* exception wakes a
        halted vCPU."""
        a = vcpu.arch
        ops = vcpu.kvm_x86_ops
        if vcpu.kvm_apic_has_events():
            return True
        if a.pending_exception.valid or a.injected_exception.valid:
            return True
        if vcpu.kvm_test_request(KVM_REQ_NMI) or (a.nmi_pending and ops.nmi_allowed(vcpu, False)):
            return True
        if vcpu.kvm_test_request(KVM_REQ_SMI) or (a.smi_pending and ops.smi_allowed(vcpu, False)):
            return True
        if vcpu.kvm_arch_interrupt_allowed() and vcpu.kvm_cpu_has_interrupt():
            return True
        if vcpu.is_guest_mode() and vcpu.nested_ops.hv_timer_pending(vcpu):
            return True
        return False

    # -------------------------------------------------- the injection ladder --

    @origin(X86_C, "kvm_inject_exception", tree=PATCH4)
    def kvm_inject_exception(vcpu) -> None:
        """Added by 1/4, where it first stripped the error code outside
        protected mode (with the slip: `if error_code and not protmode:
        error_code = 0`); 4/4 moves that strip into
        kvm_deliver_pending_exception and leaves only the vendor call."""
        vcpu.kvm_x86_ops.queue_exception(vcpu)

    @origin(X86_C, "inject_pending_event", tree=PATCH4)
    def inject_pending_event(vcpu) -> bool:
        """Resolve the pending exception first (a nested VM exit, a commit,
        a merge); then re-inject the injected exception, or else an in-flight
        NMI / interrupt; nested events; NMI and IRQ.  Returns
        req_immediate_exit."""
        a = vcpu.arch
        ops = vcpu.kvm_x86_ops
        can_inject = True
        req_immediate_exit = False

        r = vcpu.kvm_deliver_pending_exception()
        if r < 0:
            vcpu.rec.note("inject_pending_event: kvm_deliver_pending_exception -EBUSY: immediate exit")
            return True
        vcpu.warn_on_once(a.pending_exception.valid, "inject_pending_event: exception pending after delivery")

        # Re-inject an event that was already in flight.
        if a.injected_exception.valid:
            vcpu.kvm_inject_exception()
            can_inject = False
        else:
            if a.nmi_injected:
                ops.set_nmi(vcpu)
                can_inject = False
            elif a.interrupt.injected:
                ops.set_irq(vcpu)
                can_inject = False
        if a.injected_exception.valid and (a.nmi_injected or a.interrupt.injected):
            vcpu.rec.note("inject_pending_event: the injected exception wins over the event in flight, "
                          f"which is not re-injected [{'NMI' if a.nmi_injected else 'interrupt'}]")

        # Nested events (even if something was re-injected).
        if vcpu.is_guest_mode():
            r = vcpu.nested_ops.check_events(vcpu)
            if r < 0:
                vcpu.rec.note("inject_pending_event: check_events -EBUSY: immediate exit")
                return True

        # (The pre-patch "commit a pending exception" block is gone.)

        if a.smi_pending:
            r = ops.smi_allowed(vcpu, True) if can_inject else -EBUSY
            if r < 0:
                vcpu.rec.note("inject_pending_event: SMI pending but not injectable now (-EBUSY): immediate exit")
                return True
            if r:
                a.smi_pending = False
                vcpu.enter_smm()
                can_inject = False
            else:
                ops.enable_smi_window(vcpu)

        if a.nmi_pending:
            r = ops.nmi_allowed(vcpu, True) if can_inject else -EBUSY
            if r < 0:
                return True
            if r:
                a.nmi_pending -= 1
                a.nmi_injected = True
                ops.set_nmi(vcpu)
                can_inject = False
                vcpu.warn_on_once(ops.nmi_allowed(vcpu, True) < 0, "inject_pending_event: nmi_allowed < 0")
            if a.nmi_pending:
                ops.enable_nmi_window(vcpu)

        if vcpu.kvm_cpu_has_injectable_intr():
            r = ops.interrupt_allowed(vcpu, True) if can_inject else -EBUSY
            if r < 0:
                return True
            if r:
                vcpu.kvm_queue_interrupt(vcpu.kvm_cpu_get_interrupt(), False)
                ops.set_irq(vcpu)
                vcpu.warn_on_once(ops.interrupt_allowed(vcpu, True) < 0,
                                  "inject_pending_event: interrupt_allowed < 0")
            if vcpu.kvm_cpu_has_injectable_intr():
                ops.enable_irq_window(vcpu)

        if vcpu.is_guest_mode() and vcpu.nested_ops.hv_timer_pending(vcpu):
            req_immediate_exit = True

        vcpu.warn_on_once(a.pending_exception.valid, "inject_pending_event: exception still pending")
        return req_immediate_exit



class X86Base:
    """Not an RFC hunk: one base function the shared pre-patch port
    simplifies in a way the RFC makes visible.

    `vcpu_enter_guest` cancels the entry when `kvm_vcpu_exit_request` is
    true after the injection ladder: a pending signal *or any pending
    request*.  The pre-patch port (impls.prepatch.x86) checks only the
    kick (the signal).  There the difference is invisible, since the
    pre-patch ladder raises no request (a #DF merge or triple fault is
    decided at queue time, before the entry).  The RFC raises
    KVM_REQ_TRIPLE_FAULT inside inject_pending_event (kvm_deliver_pending_
    exception on top of an injected #DF); without the request test the
    port would enter the guest once more and let it run an instruction
    (even an L1 VMLAUNCH/VMRUN) before the shutdown, which the kernel never
    does.  So the post-patch port checks requests too, as 5.11 does.
    """

    @origin(X86_C, "vcpu_enter_guest", tree="5.11-rc7 (base, as under the RFC)")
    def vcpu_enter_guest(vcpu) -> int:
        ops = vcpu.kvm_x86_ops
        req_immediate_exit = False
        if vcpu.requests:
            if vcpu.kvm_check_request(KVM_REQ_TRIPLE_FAULT):
                vcpu.run.exit_reason = KVM_EXIT_SHUTDOWN
                return 0
            if vcpu.kvm_check_request(KVM_REQ_SMI):
                vcpu.process_smi()
            if vcpu.kvm_check_request(KVM_REQ_NMI):
                vcpu.process_nmi()
        if vcpu.kvm_check_request(KVM_REQ_EVENT):
            vcpu.kvm_apic_accept_events()
            if vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED:
                return 1
            req_immediate_exit = vcpu.inject_pending_event()

        # kvm_vcpu_exit_request(): a signal arrived, or a request is pending.
        if vcpu.env.take_kick() or vcpu.requests:
            if vcpu.requests:
                vcpu.rec.note("vcpu_enter_guest: a request is pending after injection: entry cancelled")
            if req_immediate_exit:
                vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.cancel_injection(vcpu)
            return 1

        if req_immediate_exit:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.request_immediate_exit(vcpu)

        ops.run(vcpu)
        return ops.handle_exit(vcpu)
