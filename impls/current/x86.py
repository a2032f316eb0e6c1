"""Port of the event paths of arch/x86/kvm/x86.c and x86.h as of Linux 6.18
(read at the v6.18 release: repository clywm520/6.18.y, commit 947ac181,
whose Makefile says 6.18.0), where they differ from the 6.1 port
(`impls.upstream.x86`).

Differs from 6.1 (each method below names its 6.18 origin):

* `kvm_multiple_exception` lost its `reinject` argument: re-injection is
  `kvm_requeue_exception` (vector, has_error_code, error_code), which no
  longer merges but overwrites the slot as injected (WARN if an exception
  is pending), and kvm_requeue_exception_e is gone.  The queue wrappers
  call the five-argument kvm_multiple_exception.
* `kvm_inject_exception` strips `has_error_code` outside protected mode
  (6c41468c7c12, 6.3, backported to 6.1.24): 6.1 cleared the error code
  itself and left has_error_code set, so the VM entry failed.
* `kvm_check_and_inject_events`: a WARN if no interrupt can be acked
  after all, `nested_ops->has_events(vcpu, true)` (6.1:
  hv_timer_pending) for the immediate exit, and the closing WARN exempts a
  requested triple fault (it tests the two exception slots only).
* `kvm_check_nested_events` and `vcpu_enter_guest` *test*
  KVM_REQ_TRIPLE_FAULT: the nested triple_fault hook clears it when it
  makes a nested VM exit, and KVM_EXIT_SHUTDOWN is taken only if it is
  still set (92e7d5c83aff, in v6.1 already).  `vcpu_enter_guest` cancels
  the entry on any pending request (`kvm_vcpu_exit_request`).
* `kvm_vcpu_running` is the mp_state test only (26844fee, in v6.1
  already): the nested check is vcpu_block's.
* HLT: `__kvm_emulate_halt` leaves the vCPU RUNNABLE if it already has an
  event that would wake it (kvm_vcpu_has_events), so a HLT (or a VM entry
  in the HLT activity state) with a deliverable event pending never halts;
  `kvm_vcpu_has_events` asks `nested_ops->has_events(vcpu, false)` and no
  longer tests pv_unhalted (kvm_arch_vcpu_runnable does; not modelled);
  `vcpu_block` WARNs on -EBUSY from the nested check.
* `process_nmi` makes KVM_REQ_EVENT only if an NMI is pending, and counts
  a virtual NMI handed to AMD's vNMI (off here, see `state`).
* KVM_GET/SET_VCPU_EVENTS carry the number of pending NMIs, not a flag
  (ab2ee212a57b, 6.4): get reports `kvm_get_nr_pending_nmis`, set puts
  them into nmi_queued with KVM_REQ_NMI (so process_nmi applies its
  limit at the next KVM_RUN), and the SMM / INIT_RECEIVED refusal is gone.

SMM moved to smm.c (6.2): see `impls.current.smm`.

Reused unchanged from 6.1 (compared with the 6.1.55 stable tree, which
carries the v6.1 code for these): exception_type,
kvm_deliver_exception_payload, kvm_queue_exception_vmexit,
kvm_is_exception_pending, kvm_clear_exception_queue,
kvm_inject_page_fault, kvm_inject_emulated_page_fault (6.18 renames the
TLB flush), inject_emulated_exception, kvm_arch_vcpu_ioctl_run (the
KVM_RUN morph), x86_emulate_instruction (the new pre-checks, retries and
the intercept check for L2 concern instructions the scenario never
emulates), toggle_interruptibility, kvm_skip_emulated_instruction,
kvm_inject_nmi, kvm_vcpu_ioctl_nmi, kvm_vcpu_ioctl_interrupt,
kvm_vcpu_reset, the irq.c helpers (kvm_cpu_get_interrupt now acks through
kvm_apic_ack_interrupt, the same here), and lapic.c's INIT path:
kvm_apic_accept_events (mp_state through kvm_set_mp_state),
kvm_apic_init_sipi_allowed, kvm_apic_has_pending_init_or_sipi.
KVM_SMI is kvm_inject_smi (smm.h), 5.11's kvm_vcpu_ioctl_smi under a new
name with the same request (KVM_REQ_SMI), refused only where the vendor
cannot emulate SMBASE (both can here).

Not modelled, as for 6.1 (impls.hw.environment): RFLAGS.RF, guest
debugging, async page faults, posted interrupts, the fastpath re-entry
loop, Xen event channels.
"""
from __future__ import annotations

from impls.arch import DB, DF, NMI_VECTOR
from impls.origin import glue, origin
from impls.prepatch.state import HF_SMM_INSIDE_NMI_MASK
from impls.prepatch.x86 import exception_class, kvm_exception_is_soft
from impls.current.state import (
    DR7_GD, EBUSY, EINVAL, EXCPT_BENIGN, EXCPT_CONTRIBUTORY, EXCPT_PF, KVM_APIC_INIT, KVM_EXIT_SHUTDOWN,
    KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_REQ_EVENT, KVM_REQ_NMI,
    KVM_REQ_SMI,
    KVM_REQ_TRIPLE_FAULT, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD,
    KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM,
    KVM_VCPUEVENT_VALID_TRIPLE_FAULT, TREE, KvmVcpuEvents,
)

X86_C = "arch/x86/kvm/x86.c"
X86_H = "arch/x86/kvm/x86.h"
LAPIC_C = "arch/x86/kvm/lapic.c"


@glue("kvm_x86_call() on a KVM_X86_OP_OPTIONAL_RET0 hook: a macro and the static call that "
      "kvm_ops_update points at __static_call_return0 for a vendor without the hook")
def _x86_call_ret0(vcpu, hook: str, *args):
    """kvm_x86_call() of a hook declared KVM_X86_OP_OPTIONAL_RET0
    (kvm-x86-ops.h): a vendor without it returns 0."""
    fn = getattr(vcpu.kvm_x86_ops, hook, None)
    return fn(vcpu, *args) if fn is not None else 0


class X86_618:
    """arch/x86/kvm/x86.c of 6.18, as methods of the vCPU (overrides of
    `impls.upstream.x86.X86_61`)."""

    # ----------------------------------------------------- exceptions --

    @origin(X86_C, "kvm_multiple_exception", tree=TREE)
    def kvm_multiple_exception(vcpu, nr: int, has_error: bool, error_code: int, has_payload: bool,
                               payload: int) -> None:
        """Queue exception `nr` (never a re-injection any more).  In L2, an
        exception L1 intercepts becomes a pending nested VM exit first.
        Else, with nothing queued, queue it; on top of a #DF, request a
        triple fault; contributory + contributory or #PF + non-benign drop
        the old one and queue #DF(0) afresh; anything else replaces it."""
        ex = vcpu.arch.exception
        vcpu.kvm_make_request(KVM_REQ_EVENT)

        if vcpu.is_guest_mode() and vcpu.nested_ops.is_exception_vmexit(vcpu, nr, error_code):
            vcpu.rec.note(f"kvm_multiple_exception: vector {nr} is intercepted by L1: exception_vmexit")
            vcpu.kvm_queue_exception_vmexit(nr, has_error, error_code, has_payload, payload)
            return

        if ex.pending or ex.injected:
            prev_nr = ex.vector
            if prev_nr == DF:
                vcpu.rec.note(f"kvm_multiple_exception: vector {nr} on top of #DF: KVM_REQ_TRIPLE_FAULT")
                vcpu.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
                return
            class1, class2 = exception_class(prev_nr), exception_class(nr)
            if (class1 == EXCPT_CONTRIBUTORY and class2 == EXCPT_CONTRIBUTORY) or (
                    class1 == EXCPT_PF and class2 != EXCPT_BENIGN):
                vcpu.rec.note(f"kvm_multiple_exception: vector {nr} on top of vector {prev_nr} "
                              f"({'injected' if ex.injected else 'pending'}): queue #DF")
                ex.injected = False
                ex.pending = False
                vcpu.kvm_queue_exception_e(DF, 0)
                return
            vcpu.rec.note(f"kvm_multiple_exception: vector {nr} replaces vector {prev_nr} "
                          f"({'injected' if ex.injected else 'pending'})")
        # queue:
        ex.pending = True
        ex.injected = False
        ex.has_error_code = has_error
        ex.vector = nr
        ex.error_code = error_code
        ex.has_payload = has_payload
        ex.payload = payload
        if not vcpu.is_guest_mode():
            vcpu.kvm_deliver_exception_payload(ex)

    @origin(X86_C, "kvm_queue_exception", tree=TREE)
    def kvm_queue_exception(vcpu, nr: int) -> None:
        vcpu.kvm_multiple_exception(nr, False, 0, False, 0)

    @origin(X86_C, "kvm_queue_exception_p", tree=TREE)
    def kvm_queue_exception_p(vcpu, nr: int, payload: int) -> None:
        vcpu.kvm_multiple_exception(nr, False, 0, True, payload)

    @origin(X86_C, "kvm_queue_exception_e", tree=TREE)
    def kvm_queue_exception_e(vcpu, nr: int, error_code: int) -> None:
        vcpu.kvm_multiple_exception(nr, True, error_code, False, 0)

    @origin(X86_C, "kvm_queue_exception_e_p", tree=TREE)
    def kvm_queue_exception_e_p(vcpu, nr: int, error_code: int, payload: int) -> None:
        vcpu.kvm_multiple_exception(nr, True, error_code, True, payload)

    @origin(X86_C, "kvm_requeue_exception", tree=TREE)
    def kvm_requeue_exception(vcpu, nr: int, has_error_code: bool, error_code: int) -> None:
        """Put back an exception whose delivery a VM exit interrupted: the
        slot becomes that injected exception, no interception check (it
        was checked when first queued, or L1 injected it), no merge."""
        vcpu.warn_on_once(vcpu.kvm_is_exception_pending(), "kvm_requeue_exception: an exception is pending")
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        ex = vcpu.arch.exception
        ex.injected = True
        ex.has_error_code = has_error_code
        ex.vector = nr
        ex.error_code = error_code
        ex.has_payload = False
        ex.payload = 0

    @origin(X86_C, "kvm_inject_exception", tree=TREE)
    def kvm_inject_exception(vcpu) -> None:
        """The single site that hands vcpu->arch.exception to the vendor.
        Outside protected mode the exception loses has_error_code (real
        mode pushes none), so the vendor injects it without one."""
        ex = vcpu.arch.exception
        ex.has_error_code = ex.has_error_code and vcpu.is_protmode()
        vcpu.kvm_x86_ops.inject_exception(vcpu)

    # ------------------------------------------------------------- NMIs --

    @origin(X86_C, "process_nmi", tree=TREE)
    def process_nmi(vcpu) -> None:
        """Fold the queued NMIs into nmi_pending: one more NMI can be held
        if NMIs are masked or one is being injected, else two, one fewer if
        a virtual NMI is already pending in the VMCB; one goes to the vNMI
        slot if there is room.  KVM_REQ_EVENT only if NMIs remain."""
        a = vcpu.arch
        limit = 1 if vcpu.kvm_x86_ops.get_nmi_mask(vcpu) or a.nmi_injected else 2
        if _x86_call_ret0(vcpu, "is_vnmi_pending"):
            limit -= 1
        a.nmi_pending += a.nmi_queued
        a.nmi_queued = 0
        a.nmi_pending = min(a.nmi_pending, limit)
        if a.nmi_pending and _x86_call_ret0(vcpu, "set_vnmi_pending"):
            a.nmi_pending -= 1
        if a.nmi_pending:
            vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(X86_C, "kvm_get_nr_pending_nmis", tree=TREE)
    def kvm_get_nr_pending_nmis(vcpu) -> int:
        return vcpu.arch.nmi_pending + _x86_call_ret0(vcpu, "is_vnmi_pending")

    # ------------------------------------------------------ nested events --

    @origin(X86_C, "kvm_check_nested_events", tree=TREE)
    def kvm_check_nested_events(vcpu) -> int:
        """A requested triple fault is L1's first (nested_ops->triple_fault,
        which clears the request only if it made a VM exit); then the
        vendor's nested ladder."""
        if vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT):
            vcpu.rec.note("kvm_check_nested_events: KVM_REQ_TRIPLE_FAULT in L2: nested_ops->triple_fault")
            vcpu.nested_ops.triple_fault(vcpu)
            return 1
        return vcpu.nested_ops.check_events(vcpu)

    # -------------------------------------------------- the injection ladder --

    @origin(X86_C, "kvm_check_and_inject_events", tree=TREE)
    def kvm_check_and_inject_events(vcpu) -> tuple[int, bool]:
        """Nested events first (a nested VM exit supersedes re-injection),
        then re-inject what was in flight (not an NMI or interrupt over a
        pending exception), then a pending exception, SMI, NMI, IRQ.
        Returns (r, req_immediate_exit); -EBUSY becomes an immediate exit."""
        a = vcpu.arch
        ops = vcpu.kvm_x86_ops
        req_immediate_exit = False

        r = vcpu.kvm_check_nested_events() if vcpu.is_guest_mode() else 0

        if a.exception.injected:
            vcpu.kvm_inject_exception()
        elif vcpu.kvm_is_exception_pending():
            if a.nmi_injected or a.interrupt.injected:
                vcpu.rec.note("kvm_check_and_inject_events: an exception is pending, so the event in flight "
                              f"is not re-injected [{'NMI' if a.nmi_injected else 'interrupt'}]")
        elif a.nmi_injected:
            ops.inject_nmi(vcpu)
        elif a.interrupt.injected:
            ops.inject_irq(vcpu, True)

        vcpu.warn_on_once(a.exception.injected and a.exception.pending,
                          "kvm_check_and_inject_events: exception injected and pending")

        if r < 0:
            return vcpu._check_and_inject_out(r)

        vcpu.warn_on_once(a.exception_vmexit.injected or a.exception_vmexit.pending,
                          "kvm_check_and_inject_events: exception_vmexit still pending")

        can_inject = not vcpu.kvm_event_needs_reinjection()

        if a.exception.pending:
            # RFLAGS.RF for fault-class vectors: not modelled.
            if a.exception.vector == DB:
                vcpu.kvm_deliver_exception_payload(a.exception)
                if a.dr7 & DR7_GD:
                    a.dr7 &= ~DR7_GD  # kvm_update_dr7: no debug registers here
            vcpu.kvm_inject_exception()
            a.exception.pending = False
            a.exception.injected = True
            can_inject = False

        # KVM_GUESTDBG_BLOCKIRQ: no guest debugging.

        if a.smi_pending:
            r = ops.smi_allowed(vcpu, True) if can_inject else -EBUSY
            if r < 0:
                return vcpu._check_and_inject_out(r)
            if r:
                a.smi_pending = False
                vcpu.enter_smm()
                can_inject = False
            else:
                ops.enable_smi_window(vcpu)

        if a.nmi_pending:
            r = ops.nmi_allowed(vcpu, True) if can_inject else -EBUSY
            if r < 0:
                return vcpu._check_and_inject_out(r)
            if r:
                a.nmi_pending -= 1
                a.nmi_injected = True
                ops.inject_nmi(vcpu)
                can_inject = False
                vcpu.warn_on_once(ops.nmi_allowed(vcpu, True) < 0,
                                  "kvm_check_and_inject_events: nmi_allowed < 0")
            if a.nmi_pending:
                ops.enable_nmi_window(vcpu)

        if vcpu.kvm_cpu_has_injectable_intr():
            r = ops.interrupt_allowed(vcpu, True) if can_inject else -EBUSY
            if r < 0:
                return vcpu._check_and_inject_out(r)
            if r:
                irq = vcpu.kvm_cpu_get_interrupt()
                if not vcpu.warn_on_once(irq == -1, "kvm_check_and_inject_events: no interrupt to ack"):
                    vcpu.kvm_queue_interrupt(irq, False)
                    ops.inject_irq(vcpu, False)
                    vcpu.warn_on_once(ops.interrupt_allowed(vcpu, True) < 0,
                                      "kvm_check_and_inject_events: interrupt_allowed < 0")
            if vcpu.kvm_cpu_has_injectable_intr():
                ops.enable_irq_window(vcpu)

        has_events = vcpu.nested_ops.has_events
        if vcpu.is_guest_mode() and has_events is not None and has_events(vcpu, True):
            req_immediate_exit = True

        vcpu.warn_on_once(a.exception.pending or a.exception_vmexit.pending,
                          "kvm_check_and_inject_events: exception still pending")
        return 0, req_immediate_exit

    # ----------------------------------------------------------- entering --

    @origin(X86_H, "kvm_vcpu_exit_request", tree=TREE)
    def kvm_vcpu_exit_request(vcpu) -> bool:
        """The late check before VM entry: a kick (a signal) arrived, or any
        request is pending."""
        return vcpu.env.take_kick() or bool(vcpu.requests)

    @origin(X86_C, "vcpu_enter_guest", tree=TREE)
    def vcpu_enter_guest(vcpu) -> int:
        """The event part of one entry: a requested triple fault goes to the
        nested hook in L2 and becomes KVM_EXIT_SHUTDOWN only if the hook
        left it set; SMI, NMI; on KVM_REQ_EVENT the LAPIC's INIT/SIPI, then
        the ladder; a pending request or a kick cancels the injection; else
        run and handle the exit."""
        ops = vcpu.kvm_x86_ops
        req_immediate_exit = False
        if vcpu.requests:
            if vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT):
                if vcpu.is_guest_mode():
                    vcpu.rec.note("vcpu_enter_guest: KVM_REQ_TRIPLE_FAULT in L2: nested_ops->triple_fault")
                    vcpu.nested_ops.triple_fault(vcpu)
                if vcpu.kvm_check_request(KVM_REQ_TRIPLE_FAULT):
                    vcpu.rec.note("vcpu_enter_guest: KVM_REQ_TRIPLE_FAULT still set: KVM_EXIT_SHUTDOWN")
                    vcpu.run.exit_reason = KVM_EXIT_SHUTDOWN
                    return 0
            if vcpu.kvm_check_request(KVM_REQ_SMI):
                vcpu.process_smi()
            if vcpu.kvm_check_request(KVM_REQ_NMI):
                vcpu.process_nmi()
        if vcpu.kvm_check_request(KVM_REQ_EVENT):
            r = vcpu.kvm_apic_accept_events()
            if r < 0:
                return 0
            if vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED:
                return 1
            r, req_immediate_exit = vcpu.kvm_check_and_inject_events()
            if r < 0:
                return 0

        if vcpu.kvm_vcpu_exit_request():
            if vcpu.requests:
                vcpu.rec.note("vcpu_enter_guest: a request is pending after injection: entry cancelled")
            if req_immediate_exit:
                vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.cancel_injection(vcpu)
            return 1

        if req_immediate_exit:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.request_immediate_exit(vcpu)  # KVM_RUN_FORCE_IMMEDIATE_EXIT in run_flags

        ops.run(vcpu)
        return ops.handle_exit(vcpu)

    # ------------------------------------------------------------------ HLT --

    @origin(X86_C, "__kvm_emulate_halt", tree=TREE)
    def _kvm_emulate_halt(vcpu, state: int) -> int:
        """A halt with an event already there to wake the vCPU does not
        halt it: it stays RUNNABLE."""
        if vcpu.kvm_vcpu_has_events():
            vcpu.rec.note("__kvm_emulate_halt: the vCPU has events: it stays RUNNABLE")
            state = KVM_MP_STATE_RUNNABLE
        vcpu.arch.mp_state = state  # kvm_set_mp_state
        return 1

    @origin(X86_C, "kvm_vcpu_has_events", tree=TREE)
    def kvm_vcpu_has_events(vcpu) -> bool:
        """6.1's test, with nested_ops->has_events(vcpu, false) (which, in
        VMX, would also look at L2's virtual-interrupt delivery: not
        modelled) and without pv_unhalted (moved to
        kvm_arch_vcpu_runnable); the PMI and protected-guest requests are
        never made here."""
        a = vcpu.arch
        ops = vcpu.kvm_x86_ops
        if vcpu.kvm_apic_has_pending_init_or_sipi() and vcpu.kvm_apic_init_sipi_allowed():
            return True
        if vcpu.kvm_is_exception_pending():
            return True
        if vcpu.kvm_test_request(KVM_REQ_NMI) or (a.nmi_pending and ops.nmi_allowed(vcpu, False)):
            return True
        if vcpu.kvm_test_request(KVM_REQ_SMI) or (a.smi_pending and ops.smi_allowed(vcpu, False)):
            return True
        if vcpu.kvm_arch_interrupt_allowed() and vcpu.kvm_cpu_has_interrupt():
            return True
        has_events = vcpu.nested_ops.has_events
        if vcpu.is_guest_mode() and has_events is not None and has_events(vcpu, False):
            return True
        return False

    @origin(X86_C, "vcpu_block", tree=TREE)
    def vcpu_block(vcpu) -> int:
        """6.1's, with a WARN if the nested check answers -EBUSY."""
        if not vcpu.kvm_arch_vcpu_runnable():
            if vcpu.arch.mp_state == KVM_MP_STATE_HALTED:
                vcpu.kvm_vcpu_halt()
            else:
                vcpu.kvm_vcpu_block()
            if vcpu.blocked:  # not runnable: still asleep
                return 1
        if vcpu.is_guest_mode():
            r = vcpu.kvm_check_nested_events()
            vcpu.warn_on_once(r == -EBUSY, "vcpu_block: kvm_check_nested_events -EBUSY")
            if r < 0:
                return 0
        if vcpu.kvm_apic_accept_events() < 0:
            return 0
        if vcpu.arch.mp_state == KVM_MP_STATE_HALTED:
            vcpu.rec.note("vcpu_block: the halted vCPU is woken (mp_state RUNNABLE)")
            vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE  # kvm_set_mp_state
        return 1

    @origin(X86_C, "kvm_vcpu_running", tree=TREE)
    def kvm_vcpu_running(vcpu) -> bool:
        """Runnable while mp_state is RUNNABLE (always, for the BSP) and
        not halted by an async page fault (not modelled)."""
        return vcpu.arch.mp_state == KVM_MP_STATE_RUNNABLE

    @origin(LAPIC_C, "kvm_apic_has_interrupt", tree=TREE)
    def kvm_apic_has_interrupt(vcpu) -> int:
        """The LAPIC's highest requested vector, or -1 (the LAPIC has no
        in-service vectors or TPR here, so nothing masks one,
        impls.hw.environment)."""
        return max(vcpu.apic.irr) if vcpu.apic.irr else -1

    # ------------------------------------------------ KVM_GET/SET_VCPU_EVENTS --

    @origin(X86_C, "kvm_vcpu_ioctl_x86_get_vcpu_events", tree=TREE)
    def kvm_vcpu_ioctl_x86_get_vcpu_events(vcpu) -> KvmVcpuEvents:
        """As 6.1, except that nmi.pending is the number of NMIs pending
        (kvm_get_nr_pending_nmis: up to two), not whether there is one."""
        a = vcpu.arch
        vcpu.process_nmi()
        if vcpu.kvm_check_request(KVM_REQ_SMI):
            vcpu.process_smi()
        if a.exception_vmexit.pending and not a.exception.pending and not a.exception.injected:
            ex = a.exception_vmexit
        else:
            ex = a.exception
        if not vcpu.kvm.exception_payload_enabled and ex.pending and ex.has_payload:
            vcpu.kvm_deliver_exception_payload(ex)
        events = KvmVcpuEvents()  # memset(events, 0)
        if kvm_exception_is_soft(ex.vector) and (ex.injected or ex.pending):
            vcpu.rec.note("KVM_GET_VCPU_EVENTS: a soft exception is left out (its instruction executes again)")
        if not kvm_exception_is_soft(ex.vector):
            events.exception_injected = int(ex.injected)
            events.exception_pending = int(ex.pending)
            if not vcpu.kvm.exception_payload_enabled:
                events.exception_injected |= int(ex.pending)
        events.exception_nr = ex.vector
        events.exception_has_error_code = int(ex.has_error_code)
        events.exception_error_code = ex.error_code
        events.exception_has_payload = int(ex.has_payload)
        events.exception_payload = ex.payload
        events.interrupt_injected = int(a.interrupt.injected and not a.interrupt.soft)
        events.interrupt_nr = a.interrupt.nr
        events.interrupt_shadow = vcpu.kvm_x86_ops.get_interrupt_shadow(vcpu)
        events.nmi_injected = int(a.nmi_injected)
        events.nmi_pending = vcpu.kvm_get_nr_pending_nmis()
        events.nmi_masked = int(vcpu.kvm_x86_ops.get_nmi_mask(vcpu))
        events.smi_smm = int(vcpu.is_smm())
        events.smi_pending = int(a.smi_pending)
        events.smi_smm_inside_nmi = int(bool(a.hflags & HF_SMM_INSIDE_NMI_MASK))
        events.smi_latched_init = int(vcpu.kvm_lapic_latched_init())
        events.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM
        if vcpu.kvm.exception_payload_enabled:
            events.flags |= KVM_VCPUEVENT_VALID_PAYLOAD
        if vcpu.kvm.triple_fault_event:
            events.triple_fault_pending = int(vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT))
            events.flags |= KVM_VCPUEVENT_VALID_TRIPLE_FAULT
        return events

    @origin(X86_C, "kvm_vcpu_ioctl_x86_set_vcpu_events", tree=TREE)
    def kvm_vcpu_ioctl_x86_set_vcpu_events(vcpu, events: KvmVcpuEvents) -> int:
        """As 6.1, except that pending NMIs go to nmi_queued with
        KVM_REQ_NMI (process_nmi caps them at the next entry) and SMM state
        with INIT_RECEIVED is no longer refused.  An SMM state change would
        leave guest mode first (kvm_leave_nested): never here, the SMM
        handler returns before any userspace call (impls.hw.environment)."""
        a = vcpu.arch
        ex = a.exception
        if events.flags & ~(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR
                            | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM
                            | KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT):
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
        if (events.exception_injected or events.exception_pending) and (
                events.exception_nr > 31 or events.exception_nr == NMI_VECTOR):
            return -EINVAL
        vcpu.process_nmi()
        a.exception_from_userspace = bool(events.exception_pending)
        a.exception_vmexit.pending = False
        ex.injected = bool(events.exception_injected)
        ex.pending = bool(events.exception_pending)
        ex.vector = events.exception_nr
        ex.has_error_code = bool(events.exception_has_error_code)
        ex.error_code = events.exception_error_code
        ex.has_payload = bool(events.exception_has_payload)
        ex.payload = events.exception_payload
        a.interrupt.injected = bool(events.interrupt_injected)
        a.interrupt.nr = events.interrupt_nr
        a.interrupt.soft = bool(events.interrupt_soft)
        if events.flags & KVM_VCPUEVENT_VALID_SHADOW:
            vcpu.kvm_x86_ops.set_interrupt_shadow(vcpu, events.interrupt_shadow)
        a.nmi_injected = bool(events.nmi_injected)
        if events.flags & KVM_VCPUEVENT_VALID_NMI_PENDING:
            a.nmi_pending = 0
            a.nmi_queued = events.nmi_pending  # atomic_set
            if events.nmi_pending:
                vcpu.kvm_make_request(KVM_REQ_NMI)
        vcpu.kvm_x86_ops.set_nmi_mask(vcpu, bool(events.nmi_masked))
        if events.flags & KVM_VCPUEVENT_VALID_SIPI_VECTOR:
            vcpu.apic.sipi_vector = events.sipi_vector
        if events.flags & KVM_VCPUEVENT_VALID_SMM:
            if vcpu.is_smm() != bool(events.smi_smm):
                vcpu.kvm_smm_changed(bool(events.smi_smm))
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
        if events.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT:
            if not vcpu.kvm.triple_fault_event:
                return -EINVAL
            if events.triple_fault_pending:
                vcpu.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
            else:
                vcpu.kvm_clear_request(KVM_REQ_TRIPLE_FAULT)
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 0
