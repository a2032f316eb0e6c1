"""What the April repost does differently in arch/x86/kvm/x86.c (its patches
2/4 and 3/4; the February 1/4 is already in its base, the February 2/4 is
not part of it), relative to the February port (`impls.postpatch.x86`).

* `kvm_deliver_exception_payload` reads the vector of the pending exception
  and the separate payload slot,
* `kvm_multiple_exception` warns (pending exception already there; a
  reinjection over an injected one) but does not refuse: the slot is
  *overwritten* with the new exception, and the payload slot is always
  rewritten, even by a reinjection,
* `kvm_do_deliver_pending_exception` / `kvm_deliver_pending_exception`: one
  round asks L1 (`deliver_exception_as_vmexit`; "exited" is seen as the
  pending exception having gone), commits with RF / payload / DR7.GD / the
  slipped real-mode strip, turns an injected #DF into a triple fault,
  makes a contributory / #PF pair a pending #DF (the wrapper then runs a
  second round, warning unless it is a #DF), and otherwise jumps to the
  commit, replacing the injected exception *without* asking L1 again,
* `kvm_inject_page_fault` sets the payload slot's nested_apf,
* KVM_GET_VCPU_EVENTS: no cap, no merging: it warns if both exceptions are
  there and reports the pending one if any, else the injected one, with
  the legacy conflation (inside the soft-exception test, as before),
* KVM_SET_VCPU_EVENTS: clears both slots (before the -EINVAL checks), then
  copies vector and error code into the slot the events name -- and never
  sets it valid (slip: every exception set by userspace is dropped),
* `inject_pending_event`: as in February (resolve first, then re-inject),
* `vcpu_enter_guest` delivers the pending exception right after the exit
  handler (result ignored), so userspace never sees both exceptions.
"""
from __future__ import annotations

from impls.arch import DB, DF, PF
from impls.origin import origin
from impls.postpatch.april.state import PATCH2, PATCH3
from impls.postpatch.state import KVM_CAP_EXCEPTION_PAYLOAD
from impls.prepatch.state import (
    DR6_RTM, DR7_GD, EINVAL, EXCPT_BENIGN, EXCPT_CONTRIBUTORY, EXCPT_FAULT, EXCPT_PF, KVM_EXIT_SHUTDOWN,
    KVM_APIC_INIT, KVM_MP_STATE_INIT_RECEIVED, KVM_REQ_EVENT, KVM_REQ_NMI, KVM_REQ_SMI, KVM_REQ_TRIPLE_FAULT,
    KVM_VCPUEVENT_VALID_NMI_PENDING,
    KVM_VCPUEVENT_VALID_PAYLOAD, KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SIPI_VECTOR,
    KVM_VCPUEVENT_VALID_SMM, KvmVcpuEvents, X86Exception,
)
from impls.prepatch.state import HF_SMM_INSIDE_NMI_MASK, HF_SMM_MASK
from impls.prepatch.x86 import X86_C, exception_class, kvm_exception_is_soft


class X86April:
    """x86.c after the April repost, as methods of the vCPU (mixed in before
    the February port's classes)."""

    @origin(X86_C, "kvm_deliver_exception_payload", tree=PATCH2)
    def kvm_deliver_exception_payload(vcpu) -> None:
        pl = vcpu.arch.exception_payload
        nr = vcpu.arch.pending_exception.nr
        if not pl.valid:
            return
        if nr == DB:
            vcpu.arch.dr6 &= ~0xF
            vcpu.arch.dr6 |= DR6_RTM
            vcpu.arch.dr6 |= pl.value
            vcpu.arch.dr6 ^= pl.value & DR6_RTM
            vcpu.arch.dr6 &= ~(1 << 12)
        elif nr == PF:
            vcpu.guest().cr2 = pl.value
        pl.valid = False
        pl.value = 0

    @origin(X86_C, "kvm_multiple_exception", tree=PATCH3)
    def kvm_multiple_exception(vcpu, nr: int, has_error: bool, error_code: int, has_payload: bool,
                               payload: int, reinject: bool) -> None:
        """Record the exception in its slot, overwriting what is there (with
        a warning), and the payload in the shared slot."""
        a = vcpu.arch
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        if vcpu.warn_on_once(a.pending_exception.valid, "kvm_multiple_exception: exception already pending"):
            vcpu.rec.note(f"kvm_multiple_exception: vector {nr} overwrites pending {a.pending_exception.nr}"
                          if not reinject else f"kvm_multiple_exception: reinjected vector {nr} beside a pending one")
        if vcpu.warn_on_once(reinject and a.injected_exception.valid,
                             "kvm_multiple_exception: reinject while an exception is injected"):
            vcpu.rec.note(f"kvm_multiple_exception: reinjected vector {nr} overwrites injected "
                          f"{a.injected_exception.nr}")
        exc = a.injected_exception if reinject else a.pending_exception
        exc.valid = True
        exc.nr = nr
        exc.has_error_code = has_error
        exc.error_code = error_code
        vcpu.warn_on_once(reinject and has_payload, "kvm_multiple_exception: reinject with payload")
        a.exception_payload.valid = has_payload
        a.exception_payload.value = payload

    @origin(X86_C, "kvm_do_deliver_pending_exception", tree=PATCH3)
    def kvm_do_deliver_pending_exception(vcpu) -> int:
        """One round: L1's VM exit, else commit, else merge."""
        a = vcpu.arch
        p, i = a.pending_exception, a.injected_exception
        if vcpu.is_guest_mode():
            ret = vcpu.nested_ops.deliver_exception_as_vmexit(vcpu)
            if ret or not p.valid:
                return ret

        if not i.valid:
            return vcpu._commit_pending_exception()

        if i.nr == DF:
            i.valid = False
            p.valid = False
            vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} on top of injected #DF: "
                          "KVM_REQ_TRIPLE_FAULT")
            vcpu.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
            return 0

        class1 = exception_class(i.nr)
        class2 = exception_class(p.nr)
        if (class1 == EXCPT_CONTRIBUTORY and class2 == EXCPT_CONTRIBUTORY) or (
                class1 == EXCPT_PF and class2 != EXCPT_BENIGN):
            vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} on top of injected vector {i.nr}: #DF")
            i.valid = False
            p.valid = True
            p.has_error_code = True
            p.nr = DF
            p.error_code = 0
            a.exception_payload.valid = False
            return 0
        # goto queue: the pending exception replaces the injected one.
        vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} replaces injected vector {i.nr}")
        return vcpu._commit_pending_exception()

    @origin(X86_C, "kvm_do_deliver_pending_exception (label queue)", tree=PATCH3)
    def _commit_pending_exception(vcpu) -> int:
        """The `queue:` block of kvm_do_deliver_pending_exception."""
        a = vcpu.arch
        p = a.pending_exception
        if vcpu.exception_type(p.nr) == EXCPT_FAULT:
            pass  # RFLAGS.RF: not modelled (impls.hw.environment)
        vcpu.kvm_deliver_exception_payload()
        if p.nr == DB and a.dr7 & DR7_GD:
            a.dr7 &= ~DR7_GD
        if p.error_code and not vcpu.is_protmode():  # the slip, as in February
            p.error_code = 0
        a.injected_exception.copy_from(p)
        p.valid = False
        vcpu.rec.note(f"kvm_deliver_pending_exception: vector {p.nr} committed as the injected exception")
        return 0

    @origin(X86_C, "kvm_deliver_pending_exception", tree=PATCH3)
    def kvm_deliver_pending_exception(vcpu) -> int:
        p = vcpu.arch.pending_exception
        if not p.valid:
            return 0
        ret = vcpu.kvm_do_deliver_pending_exception()
        if ret or not p.valid:
            return ret
        vcpu.warn_on_once(p.nr != DF, "kvm_deliver_pending_exception: second round without #DF")
        return vcpu.kvm_do_deliver_pending_exception()

    @origin(X86_C, "kvm_inject_page_fault", tree=PATCH2)
    def kvm_inject_page_fault(vcpu, fault: X86Exception) -> None:
        pl = vcpu.arch.exception_payload
        pl.nested_apf = vcpu.is_guest_mode() and fault.async_page_fault
        if pl.nested_apf:
            vcpu.arch.apf_nested_apf_token = fault.address
            vcpu.kvm_queue_exception_e(PF, fault.error_code)
        else:
            vcpu.kvm_queue_exception_e_p(PF, fault.error_code, fault.address)

    @origin(X86_C, "kvm_vcpu_ioctl_x86_get_vcpu_events", tree=PATCH2)
    def kvm_vcpu_ioctl_x86_get_vcpu_events(vcpu) -> KvmVcpuEvents:
        a = vcpu.arch
        p, i, pl = a.pending_exception, a.injected_exception, a.exception_payload
        events = KvmVcpuEvents()
        vcpu.process_nmi()
        if vcpu.kvm_check_request(KVM_REQ_SMI):
            vcpu.process_smi()
        if not vcpu.kvm.exception_payload_enabled and p.valid and pl.valid:
            vcpu.kvm_deliver_exception_payload()
        vcpu.warn_on_once(p.valid and i.valid, "get_vcpu_events: pending and injected exception")
        exc = p if p.valid else i
        if kvm_exception_is_soft(exc.nr):
            if exc.valid:
                vcpu.rec.note("KVM_GET_VCPU_EVENTS: a soft exception is left out (its instruction executes again)")
            events.exception_injected = 0
            events.exception_pending = 0
        else:
            events.exception_injected = int(i.valid)
            events.exception_pending = int(p.valid)
            if not vcpu.kvm.exception_payload_enabled:
                events.exception_injected |= int(p.valid)
        events.exception_nr = exc.nr
        events.exception_has_error_code = int(exc.has_error_code)
        events.exception_error_code = exc.error_code
        events.exception_has_payload = int(pl.valid)
        events.exception_payload = pl.value
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
        if vcpu.kvm.exception_payload_enabled:
            events.flags |= KVM_VCPUEVENT_VALID_PAYLOAD
        return events

    @origin(X86_C, "kvm_vcpu_ioctl_x86_set_vcpu_events", tree=PATCH2)
    def kvm_vcpu_ioctl_x86_set_vcpu_events(vcpu, events: KvmVcpuEvents) -> int:
        """Both slots are cleared before validation; the named one gets the
        vector and error code but is never made valid (the repost's slip):
        the exception is dropped."""
        a = vcpu.arch
        if events.flags & ~(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR
                            | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM
                            | KVM_VCPUEVENT_VALID_PAYLOAD):
            return -EINVAL
        if events.flags & KVM_VCPUEVENT_VALID_PAYLOAD:
            if not vcpu.kvm.exception_payload_enabled:
                return -EINVAL
            if events.exception_pending:
                events.exception_injected = 0
            else:
                events.exception_has_payload = 0
        else:
            events.exception_pending = 0
            events.exception_has_payload = 0
        exc = a.pending_exception if events.exception_pending else a.injected_exception
        a.pending_exception.valid = False
        a.injected_exception.valid = False
        if (events.exception_injected or events.exception_pending) and (
                events.exception_nr > 31 or events.exception_nr == 2):
            return -EINVAL
        if events.flags & KVM_VCPUEVENT_VALID_SMM and (events.smi_smm or events.smi_pending) \
                and a.mp_state == KVM_MP_STATE_INIT_RECEIVED:
            return -EINVAL
        vcpu.process_nmi()
        exc.nr = events.exception_nr
        exc.has_error_code = bool(events.exception_has_error_code)
        exc.error_code = events.exception_error_code
        if events.exception_injected or events.exception_pending:
            vcpu.rec.note("KVM_SET_VCPU_EVENTS: the exception is copied but never made valid: dropped")
        a.exception_payload.valid = bool(events.exception_has_payload)
        a.exception_payload.value = events.exception_payload
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

    @origin(X86_C, "kvm_vm_ioctl_enable_cap", tree=PATCH3)
    def kvm_vm_ioctl_enable_cap(vcpu, cap: int, arg: int) -> int:
        """No KVM_CAP_EXCEPTION_INJECTED_PENDING in the repost."""
        if cap == KVM_CAP_EXCEPTION_PAYLOAD:
            vcpu.kvm.exception_payload_enabled = bool(arg)
            return 0
        return -EINVAL

    @origin(X86_C, "vcpu_enter_guest", tree=PATCH3)
    def vcpu_enter_guest(vcpu) -> int:
        """As the February port's (a pending request cancels the entry),
        plus the repost's delivery of the pending exception right after the
        exit handler."""
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

        if vcpu.env.take_kick() or vcpu.requests:  # kvm_vcpu_exit_request()
            if req_immediate_exit:
                vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.cancel_injection(vcpu)
            return 1

        if req_immediate_exit:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.request_immediate_exit(vcpu)

        ops.run(vcpu)
        r = ops.handle_exit(vcpu)
        vcpu.kvm_deliver_pending_exception()
        return r
