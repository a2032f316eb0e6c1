"""Port of the event paths of arch/x86/kvm/x86.c as of the v6.1 tag and the
x86.h helpers, where they differ from 5.11.  First written from the series'
end state (e746c1f1, and 7709aba8), re-read at 26844fee (the 6.1 merge
window) with the 6.1-rc commits 92e7d5c83aff and dea0d5a2fde6, and in 6.1.55
(each function's `read=` says which; see impls.upstream.state).

Differs from 5.11 (each method below names its 6.1 origin):

* `exception_type` has its own class for #DB.
* `kvm_deliver_exception_payload` takes the queued exception to deliver.
* `kvm_multiple_exception` first morphs an exception L1 intercepts into a
  pending nested VM exit (`kvm_queue_exception_vmexit`, through
  nested_ops->is_exception_vmexit), and only then merges; a synthesised #DF
  is queued through `kvm_queue_exception_e` (so it may morph too); the
  has_error_code strip for real mode has moved to `kvm_inject_exception`,
  which tests error_code where it means has_error_code (the slip of the RFC's
  patch 1/4, merged for 5.12, still in the v6.1 tag; fixed by 6c41468c7c12,
  6.3-rc, and in 6.1.24).
* `kvm_is_exception_pending` (x86.h) counts `exception_vmexit` and a pending
  KVM_REQ_TRIPLE_FAULT ("Treat pending TRIPLE_FAULT requests as pending
  exceptions"; at 7709aba8 it did not yet include the request),
  `kvm_clear_exception_queue` also drops `exception_vmexit.pending`.
* `kvm_inject_page_fault` sends an async #PF in L2 straight to
  `exception_vmexit`; `kvm_inject_emulated_page_fault` returns nothing.
* `kvm_check_and_inject_events` (5.11: inject_pending_event) asks nested code
  first (`kvm_check_nested_events`, which offers a requested triple fault to
  nested_ops->triple_fault, testing the request: 92e7d5c83aff), then
  re-injects, then commits a pending exception calling the vendor hook
  before flipping pending to injected, asks nested_ops->has_events for an
  immediate exit, warns on an exception left pending (a requested triple
  fault exempt: dea0d5a2fde6), and returns an error code.
* `vcpu_enter_guest`: KVM_REQ_TRIPLE_FAULT in guest mode goes to
  nested_ops->triple_fault, and becomes KVM_EXIT_SHUTDOWN only if the hook
  left it set (92e7d5c83aff); the entry is cancelled on any pending
  request, not only a signal (kvm_vcpu_exit_request).
* `kvm_vcpu_running` is the mp_state test only (26844fee: the nested-events
  check moved to `vcpu_block`, which runs it before leaving the HLT state).
* HLT: `kvm_emulate_halt` / `kvm_emulate_halt_noskip` / `__kvm_emulate_halt`
  (5.11's kvm_vcpu_halt and __kvm_vcpu_halt renamed), and
  `kvm_vcpu_has_events` counts a latched INIT only where the vCPU can take
  it, and a pending exception, nested exit or triple fault
  (kvm_is_exception_pending).
* KVM_GET/SET_VCPU_EVENTS report `exception_vmexit` when it is the only
  exception, and carry `triple_fault.pending` with
  KVM_CAP_X86_TRIPLE_FAULT_EVENT; KVM_RUN (`kvm_arch_vcpu_ioctl_run`) morphs
  an exception userspace set as pending into `exception_vmexit`.
* INIT (lapic.c / lapic.h as 6.1 merged them, after e746c1f1): no snapshot
  of pending_events, `kvm_apic_accept_events` returns an error code and
  asks `kvm_check_nested_events` first (a triple fault included; -EBUSY is
  not an error), `kvm_apic_init_sipi_allowed` replaces kvm_vcpu_latch_init,
  `vcpu_enter_guest` stops on its error; `kvm_vcpu_reset` leaves guest mode
  first (not followed here either: it records the Reset).

Reused unchanged from 5.11: see impls.upstream.reused (the queue wrappers,
now calling the 6.1 kvm_multiple_exception, the irq.c and x86.h helpers,
process_nmi, toggle_interruptibility, vcpu_run's loop, ...).

Not modelled, as for 5.11 (impls.hw.environment): SMM (smi_pending stays
0), RFLAGS.RF, guest debugging (KVM_GUESTDBG_BLOCKIRQ), async page faults,
posted interrupts (kvm_check_nested_events never returns -ENXIO).
"""
from __future__ import annotations

from impls.arch import BP, DB, DF, MC, NMI_VECTOR, OF, PF, UD
from impls.api import Reset, SmiHandled
from impls.hw.environment import VcpuReset
from impls.origin import glue, origin
from impls.prepatch.state import HF_SMM_INSIDE_NMI_MASK, HF_SMM_MASK
from impls.prepatch.x86 import (
    EMULTYPE_TRAP_UD, X86EMUL_CONTINUE, X86EMUL_PROPAGATE_FAULT, exception_class, kvm_exception_is_soft,
)
from impls.upstream.state import (
    DR6_ACTIVE_LOW, DR7_GD, DR_TRAP_BITS, EBUSY, EINVAL, EXCPT_ABORT, EXCPT_BENIGN, EXCPT_CONTRIBUTORY,
    EXCPT_DB, EXCPT_FAULT, EXCPT_INTERRUPT, EXCPT_PF, EXCPT_TRAP, KVM_EXIT_SHUTDOWN, KVM_REQ_EVENT, KVM_REQ_NMI,
    KVM_APIC_INIT, KVM_APIC_SIPI, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE,
    KVM_REQ_SMI, KVM_REQ_TRIPLE_FAULT, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD,
    KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM,
    KVM_VCPUEVENT_VALID_TRIPLE_FAULT, MERGE_WINDOW, STABLE, TREE, KvmQueuedException, KvmVcpuEvents,
    X86Exception,
)

X86_C = "arch/x86/kvm/x86.c"
X86_H = "arch/x86/kvm/x86.h"
LAPIC_C = "arch/x86/kvm/lapic.c"
LAPIC_H = "arch/x86/kvm/lapic.h"

#: Read at 26844fee and in 6.1.55, the same in both (see impls.upstream.state).
READ = f"{MERGE_WINDOW}; {STABLE}"
#: As READ, with 92e7d5c83aff (6.1-rc7) applied as posted.
READ_RC7 = f"{MERGE_WINDOW} + 92e7d5c83aff (6.1-rc7)"
#: As READ, with dea0d5a2fde6 (6.1-rc) applied as posted.
READ_RC = f"{MERGE_WINDOW} + dea0d5a2fde6 (6.1-rc); {STABLE}"


class X86_61:
    """arch/x86/kvm/x86.c of 6.1, as methods of the vCPU (overrides of
    `impls.prepatch.x86.X86`)."""

    # ----------------------------------------------------------- x86.h --

    @origin(X86_H, "kvm_is_exception_pending", tree=TREE, read=STABLE)
    def kvm_is_exception_pending(vcpu) -> bool:
        a = vcpu.arch
        return a.exception.pending or a.exception_vmexit.pending or vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT)

    @origin(X86_H, "kvm_clear_exception_queue", tree=TREE, read=STABLE)
    def kvm_clear_exception_queue(vcpu) -> None:
        vcpu.arch.exception.pending = False
        vcpu.arch.exception.injected = False
        vcpu.arch.exception_vmexit.pending = False

    # ----------------------------------------------------- exceptions --

    @origin(X86_C, "exception_type", tree=TREE, read=READ)
    def exception_type(vcpu, vector: int) -> int:
        """#DB has its own class: trap- or fault-like depends on DR6."""
        if vcpu.warn_on_once(vector > 31 or vector == NMI_VECTOR, "exception_type: not an exception vector"):
            return EXCPT_INTERRUPT
        if vector == DB:
            return EXCPT_DB
        if vector in (BP, OF):
            return EXCPT_TRAP
        if vector in (DF, MC):
            return EXCPT_ABORT
        return EXCPT_FAULT

    @origin(X86_C, "kvm_deliver_exception_payload", tree=TREE, read=READ)
    def kvm_deliver_exception_payload(vcpu, ex: KvmQueuedException) -> None:
        """Write the payload of `ex` into DR6 (#DB) or CR2 (#PF)."""
        if not ex.has_payload:
            return
        if ex.vector == DB:
            a = vcpu.arch
            a.dr6 &= ~DR_TRAP_BITS
            a.dr6 |= DR6_ACTIVE_LOW
            a.dr6 |= ex.payload
            a.dr6 ^= ex.payload & DR6_ACTIVE_LOW
            a.dr6 &= ~(1 << 12)
        elif ex.vector == PF:
            vcpu.guest().cr2 = ex.payload  # vcpu->arch.cr2
        ex.has_payload = False
        ex.payload = 0

    @origin(X86_C, "kvm_queue_exception_vmexit", tree=TREE, read=READ)
    def kvm_queue_exception_vmexit(vcpu, vector: int, has_error_code: bool, error_code: int,
                                   has_payload: bool, payload: int) -> None:
        """Record an exception L1 takes as a nested VM exit; the last one
        queued wins (no merging), and no KVM_REQ_EVENT is made here."""
        ex = vcpu.arch.exception_vmexit
        ex.vector = vector
        ex.injected = False
        ex.pending = True
        ex.has_error_code = has_error_code
        ex.error_code = error_code
        ex.has_payload = has_payload
        ex.payload = payload

    @origin(X86_C, "kvm_multiple_exception", tree=TREE, read=READ)
    def kvm_multiple_exception(vcpu, nr: int, has_error: bool, error_code: int, has_payload: bool,
                               payload: int, reinject: bool) -> None:
        """Queue exception `nr`.  In L2, an exception L1 intercepts becomes
        a pending nested VM exit before anything is merged (a re-injected one
        never: it was checked when first queued, or L1 injected it).  Else,
        with nothing queued, queue it; on top of a #DF, request a triple
        fault; contributory + contributory or #PF + non-benign drop the old
        one and queue #DF(0) afresh (which may itself morph); anything else
        replaces the old exception."""
        ex = vcpu.arch.exception
        vcpu.kvm_make_request(KVM_REQ_EVENT)

        if not reinject and vcpu.is_guest_mode() and vcpu.nested_ops.is_exception_vmexit(vcpu, nr, error_code):
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
        if reinject:
            vcpu.warn_on_once(vcpu.kvm_is_exception_pending(), "kvm_multiple_exception: reinject while pending")
            ex.injected = True  # .pending is left as it is
            if vcpu.warn_on_once(has_payload, "kvm_multiple_exception: reinject with payload"):
                has_payload = False
                payload = 0
        else:
            ex.pending = True
            ex.injected = False
        ex.has_error_code = has_error
        ex.vector = nr
        ex.error_code = error_code
        ex.has_payload = has_payload
        ex.payload = payload
        if not vcpu.is_guest_mode():
            vcpu.kvm_deliver_exception_payload(ex)

    @origin(X86_C, "kvm_inject_page_fault", tree=TREE, read=READ)
    def kvm_inject_page_fault(vcpu, fault: X86Exception) -> None:
        """An async #PF in L2 always exits to L1; any other #PF is queued
        (and morphs there if L1 intercepts it)."""
        if vcpu.is_guest_mode() and fault.async_page_fault:
            vcpu.kvm_queue_exception_vmexit(PF, True, fault.error_code, True, fault.address)
        else:
            vcpu.kvm_queue_exception_e_p(PF, fault.error_code, fault.address)

    @origin(X86_C, "kvm_inject_emulated_page_fault", tree=TREE, read=READ)
    def kvm_inject_emulated_page_fault(vcpu, fault: X86Exception) -> None:
        """Hand a #PF found by a page walk to the MMU's inject_page_fault:
        in 6.1 that is kvm_inject_page_fault for every MMU used here (L1
        never uses nested paging for L2); the TLB invalidation is not
        modelled."""
        vcpu.warn_on_once(fault.vector != PF, "kvm_inject_emulated_page_fault: not a #PF")
        getattr(vcpu, vcpu.walk_mmu_inject_page_fault)(fault)

    @origin(X86_C, "kvm_inject_exception", tree=TREE, read=MERGE_WINDOW)
    def kvm_inject_exception(vcpu) -> None:
        """The single site that hands vcpu->arch.exception to the vendor.
        Outside protected mode it clears the error code itself, not
        has_error_code: the slip of the RFC's patch 1/4 (b97f0745, 5.12),
        still in the v6.1 tag.  Fixed by 6c41468c7c12 (6.3-rc, March 2023),
        backported to 6.1.24, 5.15.y and 5.10.y: 6.1.55 has the fix, this
        port holds for v6.1 to 6.1.23."""
        ex = vcpu.arch.exception
        if ex.error_code and not vcpu.is_protmode():
            ex.error_code = 0
        vcpu.kvm_x86_ops.inject_exception(vcpu)

    @origin(X86_C, "kvm_check_nested_events", tree=TREE, read=READ_RC7)
    def kvm_check_nested_events(vcpu) -> int:
        """A requested triple fault goes to nested_ops->triple_fault first,
        whatever else is pending; then the vendor's nested ladder.  The
        request is only tested here (92e7d5c83aff, 6.1-rc7): the hook clears
        it when it makes the nested exit, and leaves it for
        KVM_EXIT_SHUTDOWN when L1 does not intercept a shutdown (SVM)."""
        if vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT):
            vcpu.rec.note("kvm_check_nested_events: KVM_REQ_TRIPLE_FAULT in L2: nested triple fault")
            vcpu.nested_ops.triple_fault(vcpu)
            return 1
        return vcpu.nested_ops.check_events(vcpu)

    # ------------------------------------------------------ INIT and reset --

    @origin(LAPIC_H, "kvm_apic_has_pending_init_or_sipi", tree=TREE, read=STABLE)
    def kvm_apic_has_pending_init_or_sipi(vcpu) -> bool:
        return bool(vcpu.apic.pending_events)  # lapic_in_kernel: always

    @origin(LAPIC_H, "kvm_apic_init_sipi_allowed", tree=TREE, read=STABLE)
    def kvm_apic_init_sipi_allowed(vcpu) -> bool:
        """5.11's kvm_vcpu_latch_init, inverted and renamed."""
        return not vcpu.is_smm() and not vcpu.kvm_x86_ops.apic_init_signal_blocked(vcpu)

    @origin(LAPIC_C, "kvm_apic_accept_events", tree=TREE, read=STABLE)
    def kvm_apic_accept_events(vcpu) -> int:
        """No snapshot any more: in guest mode nested events go first
        (kvm_check_nested_events; -EBUSY postpones INIT/SIPI and is not an
        error), then, with INIT/SIPI blocked, SIPIs are dropped and INIT
        stays pending; else INIT resets the vCPU and a SIPI wakes an
        INIT_RECEIVED vCPU."""
        apic = vcpu.apic
        if not vcpu.kvm_apic_has_pending_init_or_sipi():
            return 0
        if vcpu.is_guest_mode():
            r = vcpu.kvm_check_nested_events()
            if r < 0:
                if r == -EBUSY:
                    vcpu.rec.note("kvm_apic_accept_events: kvm_check_nested_events -EBUSY: INIT/SIPI left for later")
                return 0 if r == -EBUSY else r
        if not vcpu.kvm_apic_init_sipi_allowed():
            vcpu.warn_on_once(vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED,
                              "kvm_apic_accept_events: INIT blocked in INIT_RECEIVED")
            apic.pending_events &= ~(1 << KVM_APIC_SIPI)
            if apic.pending_events & (1 << KVM_APIC_INIT):
                vcpu.rec.note("kvm_apic_accept_events: INIT blocked (kvm_apic_init_sipi_allowed)")
            return 0
        if apic.pending_events & (1 << KVM_APIC_INIT):
            apic.pending_events &= ~(1 << KVM_APIC_INIT)
            vcpu.kvm_vcpu_reset(True)
            vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE if vcpu.kvm_vcpu_is_bsp() else KVM_MP_STATE_INIT_RECEIVED
        if apic.pending_events & (1 << KVM_APIC_SIPI):
            apic.pending_events &= ~(1 << KVM_APIC_SIPI)
            if vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED:
                # vcpu_deliver_sipi_vector(apic.sipi_vector): CS:IP, not modelled
                vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE
        return 0

    @origin(X86_C, "kvm_vcpu_reset", tree=TREE, read=READ)
    def kvm_vcpu_reset(vcpu, init_event: bool) -> None:
        """6.1 first leaves guest mode (kvm_leave_nested, 5.16) and then
        resets; the port records L1's `Reset` with the level that was running
        and follows the vCPU no further (impls.hw.environment)."""
        level = 2 if vcpu.is_guest_mode() else 1
        vcpu.rec.note(f"kvm_vcpu_reset(init_event={init_event}): INIT resets the vCPU (L{level} running)")
        vcpu.rec.observe(1, Reset(level))
        raise VcpuReset()

    # -------------------------------------------------- the injection ladder --

    @origin(X86_C, "kvm_check_and_inject_events", tree=TREE, read=READ_RC)
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
                vcpu.kvm_queue_interrupt(vcpu.kvm_cpu_get_interrupt(), False)
                ops.inject_irq(vcpu, False)
                vcpu.warn_on_once(ops.interrupt_allowed(vcpu, True) < 0,
                                  "kvm_check_and_inject_events: interrupt_allowed < 0")
            if vcpu.kvm_cpu_has_injectable_intr():
                ops.enable_irq_window(vcpu)

        if vcpu.is_guest_mode() and vcpu.nested_ops.has_events is not None \
                and vcpu.nested_ops.has_events(vcpu):
            req_immediate_exit = True

        # A requested triple fault is exempt (dea0d5a2fde6, 6.1-rc).
        vcpu.warn_on_once(a.exception.pending or a.exception_vmexit.pending,
                          "kvm_check_and_inject_events: exception still pending")
        return 0, req_immediate_exit

    @glue("the `out:` label of kvm_check_and_inject_events, as a helper (part of that function)")
    def _check_and_inject_out(vcpu, r: int) -> tuple[int, bool]:
        """The `out:` label of kvm_check_and_inject_events."""
        if r == -EBUSY:
            vcpu.rec.note("kvm_check_and_inject_events: -EBUSY: immediate exit")
            return 0, True
        return r, False

    @origin(X86_C, "vcpu_enter_guest", tree=TREE, read=READ_RC7)
    def vcpu_enter_guest(vcpu) -> int:
        """The event part of one entry.  A requested triple fault is offered
        to nested_ops->triple_fault in L2; if the request is still set after
        it (L1 runs, or L1 does not intercept SHUTDOWN) it is
        KVM_EXIT_SHUTDOWN (92e7d5c83aff).  Then the ladder on KVM_REQ_EVENT;
        an exit request, a signal or *any pending request*
        (kvm_vcpu_exit_request), cancels the injection; else run and handle
        the exit.

        After a nested triple-fault exit the v6.1 tag leaves with `r` never
        assigned (92e7d5c83aff put the `goto out` outside the test; fixed by
        df0bb47baa95 for 6.2, and in 6.1.y): what KVM_RUN does next depends
        on the compiler.  The port takes r > 0, vcpu_run's loop going on,
        which is also what the fix does, and says so in a note."""
        ops = vcpu.kvm_x86_ops
        req_immediate_exit = False
        if vcpu.requests:
            if vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT):
                if vcpu.is_guest_mode():
                    vcpu.rec.note("vcpu_enter_guest: KVM_REQ_TRIPLE_FAULT in L2: nested_ops->triple_fault")
                    vcpu.nested_ops.triple_fault(vcpu)
                if vcpu.kvm_check_request(KVM_REQ_TRIPLE_FAULT):
                    vcpu.run.exit_reason = KVM_EXIT_SHUTDOWN
                    return 0
                vcpu.rec.note("vcpu_enter_guest: after the nested triple fault v6.1 returns an "
                              "uninitialised r (df0bb47baa95); taken as r > 0")
                return 1
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

        # kvm_vcpu_exit_request(): a signal (the kick), or a pending request.
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

    @origin(X86_C, "kvm_vcpu_running", tree=TREE, read=MERGE_WINDOW)
    def kvm_vcpu_running(vcpu) -> bool:
        """Runnable while mp_state is RUNNABLE (always, for the BSP) and no
        async #PF halted it (none here).  Since 26844fee (the 6.1 merge
        window) it no longer asks nested code for events: that moved to
        vcpu_block."""
        return vcpu.arch.mp_state == KVM_MP_STATE_RUNNABLE

    # ------------------------------------------------------------------ HLT --

    @origin(X86_C, "__kvm_emulate_halt", tree=TREE, read=STABLE)
    def _kvm_emulate_halt(vcpu, state: int) -> int:
        """5.11's __kvm_vcpu_halt renamed: with the LAPIC in the kernel,
        the vCPU takes the state, the run loop blocks it."""
        vcpu.arch.mp_state = state
        return 1

    @origin(X86_C, "kvm_emulate_halt_noskip", tree=TREE, read=STABLE)
    def kvm_emulate_halt_noskip(vcpu) -> int:
        return vcpu._kvm_emulate_halt(KVM_MP_STATE_HALTED)

    @origin(X86_C, "kvm_emulate_halt", tree=TREE, read=STABLE)
    def kvm_emulate_halt(vcpu) -> int:
        ret = vcpu.kvm_skip_emulated_instruction()
        return int(bool(vcpu.kvm_emulate_halt_noskip() and ret))

    @origin(X86_C, "kvm_vcpu_has_events", tree=TREE, read=STABLE)
    def kvm_vcpu_has_events(vcpu) -> bool:
        """As 5.11's, except: a latched INIT or SIPI counts only where the
        vCPU could take it (kvm_apic_init_sipi_allowed: not in VMX root
        operation, not in SMM), kvm_is_exception_pending replaces the
        pending-exception test (a pending exception, a pending nested exit
        or a requested triple fault; an injected one still does not count),
        and nested_ops->has_events replaced hv_timer_pending."""
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
        if vcpu.is_guest_mode() and vcpu.nested_ops.has_events is not None and vcpu.nested_ops.has_events(vcpu):
            return True
        return False

    @origin("virt/kvm/kvm_main.c", "kvm_vcpu_halt", tree=TREE, read=STABLE)
    def kvm_vcpu_halt(vcpu) -> None:
        """kvm_vcpu_halt (virt/kvm/kvm_main.c, 5.16+) polls, then sleeps in
        kvm_vcpu_block: in a scenario nothing arrives meanwhile
        (`impls.prepatch.x86.X86.kvm_vcpu_block`)."""
        vcpu.kvm_vcpu_block()

    @origin(X86_C, "vcpu_block", tree=TREE, read=STABLE)
    def vcpu_block(vcpu) -> int:
        """As 5.11's, with nested events evaluated before leaving the
        halted state, so that a nested VM exit still finds the vCPU HALTED
        and saves activity state HLT in vmcs12 (26844fee)."""
        if not vcpu.kvm_arch_vcpu_runnable():
            if vcpu.arch.mp_state == KVM_MP_STATE_HALTED:
                vcpu.kvm_vcpu_halt()
            else:
                vcpu.kvm_vcpu_block()
            if vcpu.blocked:  # not runnable: still asleep
                return 1
        if vcpu.is_guest_mode():
            if vcpu.kvm_check_nested_events() < 0:
                return 0
        if vcpu.kvm_apic_accept_events() < 0:
            return 0
        if vcpu.arch.mp_state == KVM_MP_STATE_HALTED:
            vcpu.rec.note("vcpu_block: the halted vCPU is woken (mp_state RUNNABLE)")
            vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE
        return 1

    @origin(X86_C, "kvm_arch_vcpu_ioctl_run", tree=TREE, read=READ)
    def kvm_arch_vcpu_ioctl_run(vcpu) -> None:
        """The event part of KVM_RUN before vcpu_run: an exception userspace
        set as pending while L2 runs becomes a nested VM exit if L1
        intercepts it."""
        ex = vcpu.arch.exception
        if vcpu.arch.exception_from_userspace and vcpu.is_guest_mode() and \
                vcpu.nested_ops.is_exception_vmexit(vcpu, ex.vector, ex.error_code):
            vcpu.kvm_queue_exception_vmexit(ex.vector, ex.has_error_code, ex.error_code, ex.has_payload, ex.payload)
            ex.injected = False
            ex.pending = False
        vcpu.arch.exception_from_userspace = False

    # ------------------------------------------------------------ emulator --

    @origin(X86_C, "inject_emulated_exception", tree=TREE, read=READ)
    def inject_emulated_exception(vcpu, fault: X86Exception) -> None:
        if fault.vector == PF:
            vcpu.kvm_inject_emulated_page_fault(fault)
        elif fault.error_code_valid:
            vcpu.kvm_queue_exception_e(fault.vector, fault.error_code)
        else:
            vcpu.kvm_queue_exception(fault.vector)

    @origin(X86_C, "x86_emulate_instruction", tree=TREE, read=READ)
    def x86_emulate_instruction(vcpu, emulation_type: int = 0) -> int:
        """As in 5.11 (the exception queue, now both slots, is cleared
        first), except that an injected fault no longer ends emulation early:
        writeback toggles the shadow, and RIP moves only without a fault or
        for a trap (a #DB is EXCPT_DB now, so it does not move RIP)."""
        vcpu.kvm_clear_exception_queue()
        if vcpu.env.emulator_decodes_rsm():
            # RSM decodes even under EMULTYPE_TRAP_UD (EmulateOnUD).
            return vcpu.x86_emulate_rsm(emulation_type)
        if emulation_type & EMULTYPE_TRAP_UD:
            vcpu.kvm_queue_exception(UD)
            return 1
        f = vcpu.env.emulator_fault()
        fault = None
        if f is not None:
            from impls.arch import has_error_code

            vector, ec, cr2 = f
            fault = X86Exception(vector, has_error_code(vector), ec, cr2)
            vcpu.inject_emulated_exception(fault)
        vcpu.toggle_interruptibility(0)
        if fault is None or vcpu.exception_type(fault.vector) == EXCPT_TRAP:
            vcpu.guest().rip += 1  # kvm_rip_write(ctxt->eip)
        return 1

    # ------------------------------------------------------------------ SMM --

    @origin(X86_C, "enter_smm", tree=TREE, read=READ)
    def enter_smm(vcpu) -> None:
        """As in 5.11, with the vendor hook renamed enter_smm and HF_SMM_MASK
        set through kvm_smm_changed(true); still no interrupt shadow in the
        state-save area (that came in 6.2)."""
        ops = vcpu.kvm_x86_ops
        level = 2 if vcpu.is_guest_mode() else 1
        vcpu.rec.note(f"enter_smm: SMI taken in L{level}")
        vcpu.rec.observe(1, SmiHandled(level))
        buf = vcpu.enter_smm_save_state_64()
        ops.enter_smm(vcpu, buf)
        vcpu.kvm_smm_changed(True)
        vcpu.cpu.smram = buf  # kvm_vcpu_write_guest(smbase + 0xfe00)
        if ops.get_nmi_mask(vcpu):
            vcpu.arch.hflags |= HF_SMM_INSIDE_NMI_MASK
        else:
            ops.set_nmi_mask(vcpu, True)
        lv = vcpu.guest()
        lv.rflags_if = lv.tf = False  # kvm_set_rflags(X86_EFLAGS_FIXED)
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        vcpu.cpu.smm_handler = True  # kvm_rip_write(0x8000)

    @origin(X86_C, "kvm_smm_changed", tree=TREE, read=READ)
    def kvm_smm_changed(vcpu, entering_smm: bool) -> None:
        """Now the one place that sets or clears HF_SMM_MASK (and, leaving,
        HF_SMM_INSIDE_NMI_MASK), with KVM_REQ_EVENT on the way out."""
        if entering_smm:
            vcpu.arch.hflags |= HF_SMM_MASK
        else:
            vcpu.arch.hflags &= ~(HF_SMM_MASK | HF_SMM_INSIDE_NMI_MASK)
            vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(X86_C, "emulator_exiting_smm", tree=TREE, read=READ)
    def emulator_exiting_smm(vcpu) -> None:
        vcpu.kvm_smm_changed(False)

    @origin(X86_C, "emulator_leave_smm", tree=TREE, read=READ)
    def emulator_leave_smm(vcpu, smstate: dict) -> int:
        return vcpu.kvm_x86_ops.leave_smm(vcpu, smstate)

    @origin("arch/x86/kvm/emulate.c", "em_rsm", tree=TREE, read=STABLE)
    def em_rsm(vcpu, ctxt) -> int:
        """Outside SMM: #UD.  Unmask NMIs unless SMM was entered with them
        masked, leave SMM (kvm_smm_changed(false), before the vendor
        re-enters guest mode), the vendor's leave_smm, the saved state; a
        failure of either is a triple fault, no longer an emulation
        failure."""
        if not vcpu.emulator_get_hflags() & HF_SMM_MASK:
            return X86EMUL_PROPAGATE_FAULT  # emulate_ud
        smstate = vcpu.cpu.smram  # read_phys(smbase + 0xfe00)
        if not vcpu.emulator_get_hflags() & HF_SMM_INSIDE_NMI_MASK:
            vcpu.emulator_set_nmi_mask(False)
        vcpu.emulator_exiting_smm()
        # Back to real mode before loading CR0/CR3/CR4/EFER: not modelled.
        if vcpu.emulator_leave_smm(smstate) or vcpu.rsm_load_state_64(ctxt, smstate) != X86EMUL_CONTINUE:
            vcpu.kvm_make_request(KVM_REQ_TRIPLE_FAULT)  # emulator_triple_fault
        return X86EMUL_CONTINUE

    # ------------------------------------------------ KVM_GET/SET_VCPU_EVENTS --

    @origin(X86_C, "kvm_vcpu_ioctl_x86_get_vcpu_events", tree=TREE, read=READ)
    def kvm_vcpu_ioctl_x86_get_vcpu_events(vcpu) -> KvmVcpuEvents:
        """Only one exception fits the ABI: exception_vmexit when nothing
        else is queued, else vcpu->arch.exception (an exception_vmexit behind
        it is not reported).  Without the payload cap a pending exception's
        payload is delivered now (CR2 / DR6 written even for one bound for
        L1) and it is reported as injected."""
        a = vcpu.arch
        events = KvmVcpuEvents()
        vcpu.process_nmi()
        if vcpu.kvm_check_request(KVM_REQ_SMI):
            vcpu.process_smi()
        if a.exception_vmexit.pending and not a.exception.pending and not a.exception.injected:
            ex = a.exception_vmexit
        else:
            ex = a.exception
        if not vcpu.kvm.exception_payload_enabled and ex.pending and ex.has_payload:
            vcpu.kvm_deliver_exception_payload(ex)
        if kvm_exception_is_soft(ex.vector):
            if ex.injected or ex.pending:
                vcpu.rec.note("KVM_GET_VCPU_EVENTS: a soft exception is left out (its instruction executes again)")
            events.exception_injected = 0
            events.exception_pending = 0
        else:
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
        if vcpu.kvm.triple_fault_event:
            events.triple_fault_pending = int(vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT))
            events.flags |= KVM_VCPUEVENT_VALID_TRIPLE_FAULT
        return events

    @origin(X86_C, "kvm_vcpu_ioctl_x86_set_vcpu_events", tree=TREE, read=READ)
    def kvm_vcpu_ioctl_x86_set_vcpu_events(vcpu, events: KvmVcpuEvents) -> int:
        """The raw state is stuffed (no payload delivery, no merging); a
        pending exception is remembered as userspace's, to be morphed at the
        next KVM_RUN.  The triple-fault flag is checked against the cap only
        after everything else has been applied.  When the SMM flag changes,
        6.1 first leaves nested operation (kvm_leave_nested, 5.17): not
        followed, as the VMM restores nested state after the events (the
        SMM checks of KVM_SET_NESTED_STATE need it), so a fresh vCPU has
        nothing to leave."""
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
        if events.flags & KVM_VCPUEVENT_VALID_SMM and (events.smi_smm or events.smi_pending) \
                and a.mp_state == KVM_MP_STATE_INIT_RECEIVED:
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
            a.nmi_pending = events.nmi_pending
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
                vcpu.requests &= ~KVM_REQ_TRIPLE_FAULT  # kvm_clear_request
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 0


_ = (EXCPT_BENIGN,)
