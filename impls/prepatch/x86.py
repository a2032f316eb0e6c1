"""Port of the event paths of arch/x86/kvm/x86.c (5.11-rc7, 7131636e), with
the x86.h / irq.c / lapic.c / mmu.c helpers they call.

Methods of `X86` take the vCPU as their first argument, named `vcpu` as in
the C; the vendor hooks are called through `vcpu.kvm_x86_ops.<hook>(vcpu,
...)` and the nested hooks through `vcpu.nested_ops`.  Where two stored
versions of x86.c differ (5.11-rc7 and the RFC base b97f0745), this follows
5.11-rc7: the real-mode error-code strip happens at queue time in
kvm_multiple_exception, and KVM_REQ_TRIPLE_FAULT is always a
KVM_EXIT_SHUTDOWN (there is no nested triple_fault hook).

INIT (lapic.c of 5.11, which already has 1c96dcce "fix apic_accept_events
vs check_nested_events": nested events are checked first in guest mode,
and VMX blocks INIT only in root operation): `_apic_accept_irq` latches it
in apic.pending_events, `kvm_apic_accept_events` (from vcpu_enter_guest on
KVM_REQ_EVENT) leaves it pending while `kvm_vcpu_latch_init`, else calls
`kvm_vcpu_reset`, which the port does not follow (it records the Reset and
stops); the nested ladders turn it into VM exits.

HLT (x86.c's kvm_emulate_halt / kvm_vcpu_halt, vcpu_block,
kvm_arch_vcpu_runnable, kvm_vcpu_has_events): the vCPU halts as mp_state
HALTED; `kvm_vcpu_block` (kvm_main.c) sleeps until the scenario's next
event, which the driver treats as a quiescent point (impls.hw.environment,
"HLT").  In 5.11 `kvm_vcpu_has_events` counts a latched INIT
(kvm_apic_has_events) whether or not the vCPU can take it, so an INIT held
in VMX root operation wakes a halted L1.

Simplifications (impls.hw.environment names them for every port): SMM only
as far as the event paths see it (RFLAGS in SMRAM, HF_SMM_*; RSM at once),
no async page faults, no
guest debugging, RFLAGS.RF and DR7.GD are not modelled, the LAPIC is its IRR
and its INIT/SIPI latch.
"""
from __future__ import annotations

from impls.api import Reset, SmiHandled
from impls.arch import BP, DB, DF, DE, GP, MC, NP, OF, PF, SS, TS, UD, Mode
from impls.hw.environment import Origin, VcpuReset
from impls.origin import glue, origin
from impls.prepatch.state import (
    APIC_DM_INIT, DR6_RTM, EBUSY, EEXIST, EINTR, EINVAL, EXCPT_ABORT, EXCPT_BENIGN, EXCPT_CONTRIBUTORY, EXCPT_FAULT,
    EXCPT_INTERRUPT, EXCPT_PF, EXCPT_TRAP, HF_GUEST_MASK, HF_SMM_INSIDE_NMI_MASK, HF_SMM_MASK, KVM_APIC_INIT, KVM_APIC_SIPI,
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_SHUTDOWN, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_RUNNABLE,
    KVM_INTERNAL_ERROR_EMULATION, KVM_REQ_EVENT, KVM_REQ_NMI, KVM_REQ_SMI, KVM_REQ_TRIPLE_FAULT,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD, KVM_VCPUEVENT_VALID_SHADOW,
    KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM, PFERR_PRESENT_MASK, PFERR_RSVD_MASK, TREE,
    KvmVcpuEvents, X86Exception,
)

X86_C = "arch/x86/kvm/x86.c"
X86_H = "arch/x86/kvm/x86.h"
IRQ_C = "arch/x86/kvm/irq.c"
LAPIC_C = "arch/x86/kvm/lapic.c"
LAPIC_H = "arch/x86/kvm/lapic.h"
MMU_C = "arch/x86/kvm/mmu/mmu.c"
EMULATE_C = "arch/x86/kvm/emulate.c"

# x86_emulate_insn / emulate.c results (kvm_emulate.h).
X86EMUL_CONTINUE = 0
X86EMUL_UNHANDLEABLE = 1
X86EMUL_PROPAGATE_FAULT = 2

EMULTYPE_TRAP_UD = 1 << 1

_CONTRIBUTORY = frozenset({DE, TS, NP, SS, GP})


@origin(X86_C, "exception_class", tree=TREE)
def exception_class(vector: int) -> int:
    """#PF is its own class; #DE, #TS, #NP, #SS, #GP are contributory;
    everything else (including #DF) is benign."""
    if vector == PF:
        return EXCPT_PF
    if vector in _CONTRIBUTORY:
        return EXCPT_CONTRIBUTORY
    return EXCPT_BENIGN


@origin(X86_H, "kvm_exception_is_soft", tree=TREE)
def kvm_exception_is_soft(nr: int) -> bool:
    return nr in (BP, OF)


class EmulateCtxt:
    """The part of struct x86_emulate_ctxt RSM uses: the RFLAGS it loads
    (IF, TF) and the interruptibility it leaves (none)."""

    __slots__ = ("eflags_if", "eflags_tf", "interruptibility")

    def __init__(self, eflags_if: bool, eflags_tf: bool):
        self.eflags_if, self.eflags_tf = eflags_if, eflags_tf
        self.interruptibility = 0


class X86:
    """arch/x86/kvm/x86.c and friends, as methods of the vCPU."""

    # ------------------------------------------------------- alarms, requests --

    @glue("KVM's WARN_ON / WARN_ON_ONCE macros, recorded as the outcome's alarm")
    def warn_on_once(vcpu, cond, why: str) -> bool:
        """WARN_ON_ONCE / WARN_ON: record an alarm, carry on; returns cond."""
        if cond:
            vcpu.rec.alarm(f"WARN_ON {why}")
        return bool(cond)

    @glue("KVM's BUG_ON macro, recorded as the outcome's alarm")
    def bug_on(vcpu, cond, why: str) -> bool:
        """BUG_ON: the host would oops; recorded as an alarm, the port goes on."""
        if cond:
            vcpu.rec.alarm(f"BUG_ON {why}")
        return bool(cond)

    @origin("include/linux/kvm_host.h", "kvm_make_request", tree=TREE)
    def kvm_make_request(vcpu, req: int) -> None:
        vcpu.requests |= req

    @origin("include/linux/kvm_host.h", "kvm_check_request", tree=TREE)
    def kvm_check_request(vcpu, req: int) -> bool:
        if vcpu.requests & req:
            vcpu.requests &= ~req
            return True
        return False

    @origin("include/linux/kvm_host.h", "kvm_test_request", tree=TREE)
    def kvm_test_request(vcpu, req: int) -> bool:
        return bool(vcpu.requests & req)

    # ----------------------------------------------------------- x86.h --

    @origin("arch/x86/kvm/kvm_cache_regs.h", "is_guest_mode", tree=TREE)
    def is_guest_mode(vcpu) -> bool:
        return bool(vcpu.arch.hflags & HF_GUEST_MASK)

    @origin("arch/x86/kvm/kvm_cache_regs.h", "enter_guest_mode", tree=TREE)
    def enter_guest_mode(vcpu) -> None:
        vcpu.arch.hflags |= HF_GUEST_MASK

    @origin("arch/x86/kvm/kvm_cache_regs.h", "leave_guest_mode", tree=TREE)
    def leave_guest_mode(vcpu) -> None:
        vcpu.arch.hflags &= ~HF_GUEST_MASK

    @origin(X86_H, "is_protmode", tree=TREE)
    def is_protmode(vcpu) -> bool:
        return vcpu.guest().desc.mode is not Mode.REAL

    @origin(X86_H, "kvm_clear_exception_queue", tree=TREE)
    def kvm_clear_exception_queue(vcpu) -> None:
        vcpu.arch.exception.pending = False
        vcpu.arch.exception.injected = False

    @origin(X86_H, "kvm_queue_interrupt", tree=TREE)
    def kvm_queue_interrupt(vcpu, vector: int, soft: bool) -> None:
        vcpu.arch.interrupt.injected = True
        vcpu.arch.interrupt.soft = soft
        vcpu.arch.interrupt.nr = vector

    @origin(X86_H, "kvm_clear_interrupt_queue", tree=TREE)
    def kvm_clear_interrupt_queue(vcpu) -> None:
        vcpu.arch.interrupt.injected = False

    @origin(X86_H, "kvm_event_needs_reinjection", tree=TREE)
    def kvm_event_needs_reinjection(vcpu) -> bool:
        a = vcpu.arch
        return a.exception.injected or a.interrupt.injected or a.nmi_injected

    # ----------------------------------------------------- exceptions --

    @origin(X86_C, "exception_type", tree=TREE)
    def exception_type(vcpu, vector: int) -> int:
        if vcpu.warn_on_once(vector > 31 or vector == 2, "exception_type: not an exception vector"):
            return EXCPT_INTERRUPT
        if vector in (DB, BP, OF):
            return EXCPT_TRAP
        if vector in (DF, MC):
            return EXCPT_ABORT
        return EXCPT_FAULT

    @origin(X86_C, "kvm_deliver_exception_payload", tree=TREE)
    def kvm_deliver_exception_payload(vcpu) -> None:
        ex = vcpu.arch.exception
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

    @origin(X86_C, "kvm_multiple_exception", tree=TREE)
    def kvm_multiple_exception(vcpu, nr: int, has_error: bool, error_code: int, has_payload: bool,
                               payload: int, reinject: bool) -> None:
        """Queue exception `nr`, merging it with a queued one.  The merge
        looks only at the previous vector, whether it was pending or already
        injected: a previous #DF makes a triple fault; contributory +
        contributory or #PF + non-benign make a pending #DF; anything else
        replaces the previous exception."""
        ex = vcpu.arch.exception
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        if ex.pending or ex.injected:
            prev_nr = ex.nr
            if prev_nr == DF:
                vcpu.rec.note(f"kvm_multiple_exception: vector {nr} on top of #DF: KVM_REQ_TRIPLE_FAULT")
                vcpu.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
                return
            class1, class2 = exception_class(prev_nr), exception_class(nr)
            if (class1 == EXCPT_CONTRIBUTORY and class2 == EXCPT_CONTRIBUTORY) or (
                    class1 == EXCPT_PF and class2 != EXCPT_BENIGN):
                vcpu.rec.note(f"kvm_multiple_exception: vector {nr} on top of vector {prev_nr} "
                              f"({'injected' if ex.injected else 'pending'}): pending #DF")
                ex.pending = True
                ex.injected = False
                ex.has_error_code = True
                ex.nr = DF
                ex.error_code = 0
                ex.has_payload = False
                ex.payload = 0
                return
            vcpu.rec.note(f"kvm_multiple_exception: vector {nr} replaces vector {prev_nr} "
                          f"({'injected' if ex.injected else 'pending'})")
        # queue:
        if has_error and not vcpu.is_protmode():
            has_error = False
        if reinject:
            vcpu.warn_on_once(ex.pending, "kvm_multiple_exception: reinject while pending")
            ex.injected = True
            if vcpu.warn_on_once(has_payload, "kvm_multiple_exception: reinject with payload"):
                has_payload = False
                payload = 0
        else:
            ex.pending = True
            ex.injected = False
        ex.has_error_code = has_error
        ex.nr = nr
        ex.error_code = error_code
        ex.has_payload = has_payload
        ex.payload = payload
        if not vcpu.is_guest_mode():
            vcpu.kvm_deliver_exception_payload()

    @origin(X86_C, "kvm_queue_exception", tree=TREE)
    def kvm_queue_exception(vcpu, nr: int) -> None:
        vcpu.kvm_multiple_exception(nr, False, 0, False, 0, False)

    @origin(X86_C, "kvm_requeue_exception", tree=TREE)
    def kvm_requeue_exception(vcpu, nr: int) -> None:
        vcpu.kvm_multiple_exception(nr, False, 0, False, 0, True)

    @origin(X86_C, "kvm_queue_exception_p", tree=TREE)
    def kvm_queue_exception_p(vcpu, nr: int, payload: int) -> None:
        vcpu.kvm_multiple_exception(nr, False, 0, True, payload, False)

    @origin(X86_C, "kvm_queue_exception_e_p", tree=TREE)
    def kvm_queue_exception_e_p(vcpu, nr: int, error_code: int, payload: int) -> None:
        vcpu.kvm_multiple_exception(nr, True, error_code, True, payload, False)

    @origin(X86_C, "kvm_queue_exception_e", tree=TREE)
    def kvm_queue_exception_e(vcpu, nr: int, error_code: int) -> None:
        vcpu.kvm_multiple_exception(nr, True, error_code, False, 0, False)

    @origin(X86_C, "kvm_requeue_exception_e", tree=TREE)
    def kvm_requeue_exception_e(vcpu, nr: int, error_code: int) -> None:
        vcpu.kvm_multiple_exception(nr, True, error_code, False, 0, True)

    @origin(X86_C, "kvm_inject_page_fault", tree=TREE)
    def kvm_inject_page_fault(vcpu, fault: X86Exception) -> None:
        vcpu.arch.exception.nested_apf = vcpu.is_guest_mode() and fault.async_page_fault
        if vcpu.arch.exception.nested_apf:
            vcpu.arch.apf_nested_apf_token = fault.address
            vcpu.kvm_queue_exception_e(PF, fault.error_code)
        else:
            vcpu.kvm_queue_exception_e_p(PF, fault.error_code, fault.address)

    @origin(X86_C, "kvm_inject_emulated_page_fault", tree=TREE)
    def kvm_inject_emulated_page_fault(vcpu, fault: X86Exception) -> bool:
        """Hand a #PF found by a page walk to the MMU's inject_page_fault
        hook (kvm_inject_page_fault, or the nested variant the vendor
        installed); True if it was an L2 GPA fault (never here: L1 does not
        use nested paging)."""
        vcpu.warn_on_once(fault.vector != PF, "kvm_inject_emulated_page_fault: not a #PF")
        getattr(vcpu, vcpu.walk_mmu_inject_page_fault)(fault)
        return fault.nested_page_fault

    # ------------------------------------------------------------ NMIs --

    @origin(X86_C, "kvm_inject_nmi", tree=TREE)
    def kvm_inject_nmi(vcpu) -> None:
        vcpu.arch.nmi_queued += 1
        vcpu.kvm_make_request(KVM_REQ_NMI)

    @origin(X86_C, "process_nmi", tree=TREE)
    def process_nmi(vcpu) -> None:
        """Fold the queued NMIs into nmi_pending: at most one more NMI can be
        held if NMIs are masked or one is being injected, else two."""
        limit = 2
        if vcpu.kvm_x86_ops.get_nmi_mask(vcpu) or vcpu.arch.nmi_injected:
            limit = 1
        vcpu.arch.nmi_pending += vcpu.arch.nmi_queued
        vcpu.arch.nmi_queued = 0
        vcpu.arch.nmi_pending = min(vcpu.arch.nmi_pending, limit)
        vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(X86_C, "kvm_vcpu_ioctl_nmi", tree=TREE)
    def kvm_vcpu_ioctl_nmi(vcpu) -> int:
        vcpu.kvm_inject_nmi()
        return 0

    # ---------------------------------------------------- interrupts --

    @origin(X86_C, "kvm_vcpu_ioctl_interrupt", tree=TREE)
    def kvm_vcpu_ioctl_interrupt(vcpu, irq: int) -> int:
        """KVM_INTERRUPT with a split irqchip: the ExtINT vector the
        userspace PIC acknowledged."""
        if irq >= 256:
            return -EINVAL
        if vcpu.pending_external_vector != -1:
            return -EEXIST
        vcpu.pending_external_vector = irq
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 0

    @origin("arch/x86/kvm/lapic.c", "kvm_apic_set_irq", tree=TREE)
    def kvm_apic_set_irq(vcpu, vector: int) -> None:
        """A fixed interrupt accepted by the LAPIC: IRR, KVM_REQ_EVENT, kick."""
        vcpu.apic.irr.add(vector)
        vcpu.kvm_make_request(KVM_REQ_EVENT)

    # ------------------------------------------------------ INIT and reset --

    @origin("arch/x86/kvm/kvm_cache_regs.h", "is_smm", tree=TREE)
    def is_smm(vcpu) -> bool:
        return bool(vcpu.arch.hflags & HF_SMM_MASK)

    @origin(LAPIC_C, "__apic_accept_irq", tree=TREE)
    def _apic_accept_irq(vcpu, delivery_mode: int, vector: int, level: int, trig_mode: int) -> int:
        """The INIT delivery mode (a fixed interrupt is `kvm_apic_set_irq`):
        an asserted or edge INIT replaces pending_events with the INIT bit
        alone (a pending SIPI is dropped), then KVM_REQ_EVENT and a kick (a
        no-op: the vCPU is outside guest mode between scenario events)."""
        result = 0
        if delivery_mode == APIC_DM_INIT:
            if not trig_mode or level:
                result = 1
                vcpu.apic.pending_events = 1 << KVM_APIC_INIT
                vcpu.kvm_make_request(KVM_REQ_EVENT)
        return result

    @origin(LAPIC_H, "kvm_lapic_latched_init", tree=TREE)
    def kvm_lapic_latched_init(vcpu) -> bool:
        return bool(vcpu.apic.pending_events & (1 << KVM_APIC_INIT))  # lapic_in_kernel: always

    @origin(X86_H, "kvm_vcpu_latch_init", tree=TREE)
    def kvm_vcpu_latch_init(vcpu) -> bool:
        """INIT is held in SMM and wherever the vendor says so (VMX root
        operation, SVM with GIF=0 or, in 5.11, an INIT intercept in the
        current VMCB)."""
        return vcpu.is_smm() or vcpu.kvm_x86_ops.apic_init_signal_blocked(vcpu)

    @origin(X86_C, "kvm_vcpu_is_bsp", tree=TREE)
    def kvm_vcpu_is_bsp(vcpu) -> bool:
        return True  # apic_base has the BSP bit: vcpu_id 0 is the reset BSP

    @origin(LAPIC_C, "kvm_apic_accept_events", tree=TREE)
    def kvm_apic_accept_events(vcpu) -> None:
        """Take a snapshot of pending_events; in guest mode let nested code
        turn INIT into a VM exit first (a negative answer postpones
        everything); while INIT is latched, drop SIPIs and keep INIT
        pending; else INIT resets the vCPU (the BSP is RUNNABLE after it)
        and a SIPI wakes an INIT_RECEIVED vCPU."""
        apic = vcpu.apic
        pe = apic.pending_events
        if not pe:
            return
        if vcpu.is_guest_mode():
            r = vcpu.nested_ops.check_events(vcpu)
            if r < 0:
                vcpu.rec.note("kvm_apic_accept_events: check_events -EBUSY: INIT/SIPI left for later")
                return
        if vcpu.kvm_vcpu_latch_init():
            vcpu.warn_on_once(vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED,
                              "kvm_apic_accept_events: INIT latched in INIT_RECEIVED")
            if pe & (1 << KVM_APIC_SIPI):
                apic.pending_events &= ~(1 << KVM_APIC_SIPI)
            if pe & (1 << KVM_APIC_INIT):
                vcpu.rec.note("kvm_apic_accept_events: INIT latched (kvm_vcpu_latch_init)")
            return
        if pe & (1 << KVM_APIC_INIT):
            apic.pending_events &= ~(1 << KVM_APIC_INIT)
            vcpu.kvm_vcpu_reset(True)
            vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE if vcpu.kvm_vcpu_is_bsp() else KVM_MP_STATE_INIT_RECEIVED
        if pe & (1 << KVM_APIC_SIPI):
            apic.pending_events &= ~(1 << KVM_APIC_SIPI)
            if vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED:
                # vcpu_deliver_sipi_vector(apic.sipi_vector): CS:IP, not modelled
                vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE

    @origin(X86_C, "kvm_vcpu_reset", tree=TREE)
    def kvm_vcpu_reset(vcpu, init_event: bool) -> None:
        """Reached only for an INIT (vCPU creation is the constructor).  The
        port does not follow the reset vCPU (impls.hw.environment): it
        records L1's `Reset` with the level that was running and stops.  (In
        5.11 the reset clears hflags, guest mode included, without leaving
        nested operation: nothing after it is compared.)"""
        level = 2 if vcpu.is_guest_mode() else 1
        vcpu.rec.note(f"kvm_vcpu_reset(init_event={init_event}): INIT resets the vCPU (L{level} running)")
        vcpu.rec.observe(1, Reset(level))
        raise VcpuReset()

    @origin(IRQ_C, "kvm_cpu_has_extint", tree=TREE)
    def kvm_cpu_has_extint(vcpu) -> bool:
        return vcpu.pending_external_vector != -1

    @origin(IRQ_C, "kvm_cpu_has_injectable_intr", tree=TREE)
    def kvm_cpu_has_injectable_intr(vcpu) -> bool:
        if vcpu.kvm_cpu_has_extint():
            return True
        return bool(vcpu.apic.irr)

    @origin(IRQ_C, "kvm_cpu_has_interrupt", tree=TREE)
    def kvm_cpu_has_interrupt(vcpu) -> bool:
        if vcpu.kvm_cpu_has_extint():
            return True
        return bool(vcpu.apic.irr)

    @origin(IRQ_C, "kvm_cpu_get_interrupt", tree=TREE)
    def kvm_cpu_get_interrupt(vcpu) -> int:
        """Acknowledge: the ExtINT first, else the LAPIC's highest vector."""
        if vcpu.kvm_cpu_has_extint():
            vector = vcpu.pending_external_vector
            vcpu.pending_external_vector = -1
            return vector
        if not vcpu.apic.irr:
            return -1
        vector = max(vcpu.apic.irr)
        vcpu.apic.irr.discard(vector)
        return vector

    # -------------------------------------------------- the injection ladder --

    @origin(X86_C, "inject_pending_event", tree=TREE)
    def inject_pending_event(vcpu) -> bool:
        """Re-inject what was in flight, let nested code turn events into VM
        exits, commit a pending exception, then NMI and IRQ.  Returns
        req_immediate_exit."""
        a = vcpu.arch
        ex = a.exception
        ops = vcpu.kvm_x86_ops
        can_inject = True
        req_immediate_exit = False

        # Re-inject an event that was already in flight.
        if ex.injected:
            ops.queue_exception(vcpu)
            can_inject = False
        elif not ex.pending:
            if a.nmi_injected:
                ops.set_nmi(vcpu)
                can_inject = False
            elif a.interrupt.injected:
                ops.set_irq(vcpu)
                can_inject = False
        else:
            if a.nmi_injected or a.interrupt.injected:
                vcpu.rec.note("inject_pending_event: an exception is pending, so the event in flight "
                              f"is not re-injected [{'NMI' if a.nmi_injected else 'interrupt'}]")

        vcpu.warn_on_once(ex.injected and ex.pending, "inject_pending_event: exception injected and pending")

        # Nested events (even if something was re-injected).
        if vcpu.is_guest_mode():
            r = vcpu.nested_ops.check_events(vcpu)
            if r < 0:
                vcpu.rec.note("inject_pending_event: check_events -EBUSY: immediate exit")
                return True

        # A new exception.
        if ex.pending:
            ex.pending = False
            ex.injected = True
            # RFLAGS.RF for fault-class vectors: not modelled.
            if ex.nr == DB:
                vcpu.kvm_deliver_exception_payload()
            ops.queue_exception(vcpu)
            can_inject = False

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

        vcpu.warn_on_once(ex.pending, "inject_pending_event: exception still pending")
        return req_immediate_exit

    @origin(X86_C, "vcpu_enter_guest", tree=TREE)
    def vcpu_enter_guest(vcpu) -> int:
        """The event part of one entry: requests (a triple fault is always a
        KVM_EXIT_SHUTDOWN), on KVM_REQ_EVENT the LAPIC's INIT/SIPI
        (kvm_apic_accept_events) then the injection ladder, a late exit
        request cancels the injection, else run and handle the exit."""
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

        if vcpu.env.take_kick():  # kvm_vcpu_exit_request(): a signal arrived
            if req_immediate_exit:
                vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.cancel_injection(vcpu)
            return 1

        if req_immediate_exit:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
            ops.request_immediate_exit(vcpu)

        ops.run(vcpu)
        return ops.handle_exit(vcpu)

    @origin(X86_C, "kvm_vcpu_running", tree=TREE)
    def kvm_vcpu_running(vcpu) -> bool:
        """Asks nested code for events (ignoring the result) before every
        entry: a nested VM exit can happen here.  Runnable while mp_state is
        RUNNABLE (always, for the BSP; apf.halted: no async page faults)."""
        if vcpu.is_guest_mode():
            vcpu.nested_ops.check_events(vcpu)
            if not vcpu.is_guest_mode():  # for people: what the next entry then does not see
                vcpu.rec.note("kvm_vcpu_running: check_events made a nested VM exit before the entry's "
                              "event injection (process_nmi, the pending exception)")
        return vcpu.arch.mp_state == KVM_MP_STATE_RUNNABLE

    @origin(X86_C, "vcpu_run", tree=TREE)
    def vcpu_run_once(vcpu) -> int:
        """One pass of vcpu_run's loop: enter the guest while it runs, else
        block (a halted vCPU)."""
        if vcpu.kvm_vcpu_running():
            return vcpu.vcpu_enter_guest()
        return vcpu.vcpu_block()

    # ------------------------------------------------------------------ HLT --

    @origin(X86_C, "kvm_vcpu_halt", tree=TREE)
    def kvm_vcpu_halt(vcpu) -> int:
        """__kvm_vcpu_halt(HALTED, KVM_EXIT_HLT) with the LAPIC in the kernel:
        the vCPU is HALTED, the run loop blocks it."""
        vcpu.arch.mp_state = KVM_MP_STATE_HALTED
        return 1

    @origin(X86_C, "kvm_emulate_halt", tree=TREE)
    def kvm_emulate_halt(vcpu) -> int:
        """The HLT exit handler (VMX's EXIT_REASON_HLT, SVM's
        halt_interception): skip the HLT, then halt."""
        ret = vcpu.kvm_skip_emulated_instruction()
        return int(bool(vcpu.kvm_vcpu_halt() and ret))

    @origin(LAPIC_H, "kvm_apic_has_events", tree=TREE)
    def kvm_apic_has_events(vcpu) -> bool:
        return bool(vcpu.apic.pending_events)

    @origin(X86_C, "kvm_arch_interrupt_allowed", tree=TREE)
    def kvm_arch_interrupt_allowed(vcpu) -> int:
        return vcpu.kvm_x86_ops.interrupt_allowed(vcpu, False)

    @origin(X86_C, "kvm_vcpu_has_events", tree=TREE)
    def kvm_vcpu_has_events(vcpu) -> bool:
        """What wakes a blocked vCPU: a latched INIT or SIPI (whether or not
        it can be taken), a pending exception, an NMI or SMI the vendor
        allows, an interrupt the vendor allows (or that L1 intercepts), an
        expired nested preemption timer.  (No async #PF, PV unhalt, Hyper-V
        timer, APICv: not modelled.)"""
        a = vcpu.arch
        ops = vcpu.kvm_x86_ops
        if vcpu.kvm_apic_has_events():
            return True
        if a.exception.pending:
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

    @origin(X86_C, "kvm_arch_vcpu_runnable", tree=TREE)
    def kvm_arch_vcpu_runnable(vcpu) -> bool:
        return vcpu.kvm_vcpu_running() or vcpu.kvm_vcpu_has_events()

    @origin("virt/kvm/kvm_main.c", "kvm_vcpu_block", tree=TREE)
    def kvm_vcpu_block(vcpu) -> None:
        """kvm_vcpu_block (virt/kvm/kvm_main.c) sleeps until
        kvm_arch_vcpu_runnable; nothing in a scenario arrives while it
        sleeps, so it returns at once with `blocked` set, the driver's quiescent point
        (impls.hw.environment, "HLT").  A later event kicks the vCPU and the
        next KVM_RUN enters vcpu_block again, which finds it runnable."""
        vcpu.blocked = True

    @origin(X86_C, "vcpu_block", tree=TREE)
    def vcpu_block(vcpu) -> int:
        """A halted vCPU: block unless runnable (the nested check_events of
        kvm_vcpu_running can exit to L1 here), then accept INIT/SIPI and
        leave HALTED."""
        if not vcpu.kvm_arch_vcpu_runnable():
            vcpu.kvm_vcpu_block()
            if vcpu.blocked:  # no KVM_REQ_UNHALT: still asleep
                return 1
        vcpu.kvm_apic_accept_events()
        if vcpu.arch.mp_state == KVM_MP_STATE_HALTED:
            vcpu.rec.note("vcpu_block: the halted vCPU is woken (mp_state RUNNABLE)")
            vcpu.arch.mp_state = KVM_MP_STATE_RUNNABLE
        return 1

    @origin(X86_C, "kvm_arch_vcpu_ioctl_run", tree=TREE)
    def kvm_run_immediate_exit(vcpu) -> int:
        """KVM_RUN with kvm_run->immediate_exit set: -EINTR before vcpu_run
        (after completing a userspace I/O, which never arises here), with
        nothing else done."""
        return -EINTR

    @origin("kernel/entry/kvm.c", "xfer_to_guest_mode_handle_work", tree=TREE)
    def xfer_to_guest_mode_handle_work(vcpu) -> int:
        """vcpu_run's check after a pass for work the thread has before the
        next entry: a pending signal exits to userspace with -EINTR
        (xfer_to_guest_mode_work); rescheduling and notify-resume work,
        the other kinds, are not modelled."""
        if vcpu.env.signal:
            vcpu.kvm_handle_signal_exit()
            return -EINTR
        return 0

    @origin("include/linux/kvm_host.h", "kvm_handle_signal_exit", tree=TREE)
    def kvm_handle_signal_exit(vcpu) -> None:
        vcpu.run.exit_reason = KVM_EXIT_INTR  # and ++stat.signal_exits

    # ---------------------------------------------- emulator, MMU, skipping --

    @origin(X86_C, "kvm_skip_emulated_instruction", tree=TREE)
    def kvm_skip_emulated_instruction(vcpu) -> int:
        return vcpu.kvm_x86_ops.skip_emulated_instruction(vcpu)

    @origin(X86_C, "toggle_interruptibility", tree=TREE)
    def toggle_interruptibility(vcpu, mask: int) -> None:
        int_shadow = vcpu.kvm_x86_ops.get_interrupt_shadow(vcpu)
        if int_shadow & mask:
            mask = 0
        if int_shadow or mask:
            vcpu.kvm_x86_ops.set_interrupt_shadow(vcpu, mask)
            if not mask:
                vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(X86_C, "inject_emulated_exception", tree=TREE)
    def inject_emulated_exception(vcpu, fault: X86Exception) -> bool:
        if fault.vector == PF:
            return vcpu.kvm_inject_emulated_page_fault(fault)
        if fault.error_code_valid:
            vcpu.kvm_queue_exception_e(fault.vector, fault.error_code)
        else:
            vcpu.kvm_queue_exception(fault.vector)
        return False

    @origin(X86_C, "x86_emulate_instruction", tree=TREE)
    def x86_emulate_instruction(vcpu, emulation_type: int = 0) -> int:
        """Emulate the guest's current instruction.  The exception queue is
        cleared first (an exception in flight is dropped); the emulator
        (impls.hw.environment) completes the instruction or raises a fault,
        which is queued; on completion the interrupt shadow is toggled and
        RIP moves."""
        vcpu.kvm_clear_exception_queue()
        if vcpu.env.emulator_decodes_rsm():
            # RSM decodes even under EMULTYPE_TRAP_UD (EmulateOnUD).
            return vcpu.x86_emulate_rsm(emulation_type)
        if emulation_type & EMULTYPE_TRAP_UD:
            # The decoder fails on a real #UD: queue it.
            vcpu.kvm_queue_exception(UD)
            return 1
        f = vcpu.env.emulator_fault()
        fault = None
        if f is not None:
            vector, ec, cr2 = f
            from impls.arch import has_error_code
            fault = X86Exception(vector, has_error_code(vector), ec, cr2)
            if vcpu.inject_emulated_exception(fault):
                return 1
        vcpu.toggle_interruptibility(0)
        if fault is None or vcpu.exception_type(fault.vector) == EXCPT_TRAP:
            vcpu.guest().rip += 1  # kvm_rip_write(ctxt->eip)
        return 1

    @origin(X86_C, "x86_emulate_instruction", tree=TREE)
    def x86_emulate_rsm(vcpu, emulation_type: int) -> int:
        """x86_emulate_instruction's path for the SMM handler's RSM: decode
        (init_emulate_ctxt), x86_emulate_insn runs em_rsm, then the
        writeback: the interrupt shadow is toggled with the emulator's
        interruptibility (0: a shadow the vCPU had is dropped), RIP and
        RFLAGS come from the emulator's context, KVM_REQ_EVENT if IF went
        from 0 to 1."""
        lv = vcpu.guest()
        ctxt = EmulateCtxt(lv.rflags_if, lv.tf)
        r = vcpu.em_rsm(ctxt)
        if r == X86EMUL_PROPAGATE_FAULT:
            vcpu.kvm_queue_exception(UD)  # inject_emulated_exception
            return 1
        if r != X86EMUL_CONTINUE:
            return vcpu.handle_emulation_failure(emulation_type)
        rflags_if = vcpu.guest().rflags_if  # kvm_x86_ops.get_rflags, after em_rsm
        vcpu.toggle_interruptibility(ctxt.interruptibility)
        vcpu.cpu.smm_handler = False  # kvm_rip_write(ctxt->eip): the RIP saved in SMRAM
        lv = vcpu.guest()
        lv.rflags_if, lv.tf = ctxt.eflags_if, ctxt.eflags_tf  # __kvm_set_rflags(ctxt->eflags)
        if ctxt.eflags_if and not rflags_if:
            vcpu.kvm_make_request(KVM_REQ_EVENT)
        return 1

    @origin(X86_C, "handle_emulation_failure", tree=TREE)
    def handle_emulation_failure(vcpu, emulation_type: int) -> int:
        vcpu.kvm_queue_exception(UD)
        if not vcpu.is_guest_mode():  # and CPL 0: the SMM handler's
            return vcpu.internal_error(KVM_INTERNAL_ERROR_EMULATION)
        return 1

    # ------------------------------------------------------------------ SMM --

    @origin(X86_C, "kvm_vcpu_ioctl_smi", tree=TREE)
    def kvm_vcpu_ioctl_smi(vcpu) -> int:
        """KVM_SMI: the VMM raises an SMI."""
        vcpu.kvm_make_request(KVM_REQ_SMI)
        return 0

    @origin(X86_C, "process_smi", tree=TREE)
    def process_smi(vcpu) -> None:
        vcpu.arch.smi_pending = True
        vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(X86_C, "enter_smm_save_state_64", tree=TREE)
    def enter_smm_save_state_64(vcpu) -> dict:
        """The state-save area (the guest has long mode in its CPUID),
        reduced to what the event paths can see: RFLAGS (IF, and TF).  5.11
        saves no interrupt shadow, and NMI blocking is not in SMRAM."""
        lv = vcpu.guest()
        return {"rflags_if": lv.rflags_if, "rflags_tf": lv.tf}

    @origin(X86_C, "enter_smm", tree=TREE)
    def enter_smm(vcpu) -> None:
        """Save the state into SMRAM, let the vendor leave guest mode, set
        HF_SMM_MASK, mask NMIs (remembering in HF_SMM_INSIDE_NMI_MASK that
        they already were), IF=0 and RIP at the handler.  The handler
        executes RSM at once (impls.hw.environment), so the port records
        `SmiHandled` here, with the level that was running."""
        ops = vcpu.kvm_x86_ops
        level = 2 if vcpu.is_guest_mode() else 1
        vcpu.rec.note(f"enter_smm: SMI taken in L{level}")
        vcpu.rec.observe(1, SmiHandled(level))
        buf = vcpu.enter_smm_save_state_64()
        ops.pre_enter_smm(vcpu, buf)
        vcpu.arch.hflags |= HF_SMM_MASK
        vcpu.cpu.smram = buf  # kvm_vcpu_write_guest(smbase + 0xfe00)
        if ops.get_nmi_mask(vcpu):
            vcpu.arch.hflags |= HF_SMM_INSIDE_NMI_MASK
        else:
            ops.set_nmi_mask(vcpu, True)
        lv = vcpu.guest()
        lv.rflags_if = lv.tf = False  # kvm_set_rflags(X86_EFLAGS_FIXED)
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        vcpu.cpu.smm_handler = True  # kvm_rip_write(0x8000)
        # CR0 (real mode), CR4, IDT limit 0, DR7, segments, EFER: not modelled.

    @origin(X86_C, "kvm_smm_changed", tree=TREE)
    def kvm_smm_changed(vcpu) -> None:
        """Leaving SMM: KVM_REQ_EVENT for a latched INIT or a pending SMI
        (the MMU context reset is not modelled)."""
        if not vcpu.arch.hflags & HF_SMM_MASK:
            vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(X86_C, "emulator_get_hflags", tree=TREE)
    def emulator_get_hflags(vcpu) -> int:
        return vcpu.arch.hflags

    @origin(X86_C, "emulator_set_hflags", tree=TREE)
    def emulator_set_hflags(vcpu, emul_flags: int) -> None:
        vcpu.arch.hflags = emul_flags

    @origin(X86_C, "emulator_set_nmi_mask", tree=TREE)
    def emulator_set_nmi_mask(vcpu, masked: bool) -> None:
        vcpu.kvm_x86_ops.set_nmi_mask(vcpu, masked)

    @origin(X86_C, "emulator_pre_leave_smm", tree=TREE)
    def emulator_pre_leave_smm(vcpu, smstate: dict) -> int:
        return vcpu.kvm_x86_ops.pre_leave_smm(vcpu, smstate)

    @origin(X86_C, "emulator_post_leave_smm", tree=TREE)
    def emulator_post_leave_smm(vcpu) -> None:
        vcpu.kvm_smm_changed()

    @origin(EMULATE_C, "rsm_load_state_64", tree=TREE)
    def rsm_load_state_64(vcpu, ctxt: "EmulateCtxt", smstate: dict) -> int:
        """RFLAGS into the emulator's context (written back by
        x86_emulate_instruction), the rest not modelled."""
        ctxt.eflags_if = smstate["rflags_if"]
        ctxt.eflags_tf = smstate["rflags_tf"]
        return X86EMUL_CONTINUE

    @origin(EMULATE_C, "em_rsm", tree=TREE)
    def em_rsm(vcpu, ctxt: "EmulateCtxt") -> int:
        """Outside SMM: #UD.  Read the state-save area, unmask NMIs unless
        SMM was entered with them masked, clear HF_SMM_MASK and
        HF_SMM_INSIDE_NMI_MASK, let the vendor re-enter guest mode, load the
        saved state, then kvm_smm_changed."""
        if not vcpu.emulator_get_hflags() & HF_SMM_MASK:
            return X86EMUL_PROPAGATE_FAULT  # emulate_ud
        smstate = vcpu.cpu.smram  # read_phys(smbase + 0xfe00)
        if not vcpu.emulator_get_hflags() & HF_SMM_INSIDE_NMI_MASK:
            vcpu.emulator_set_nmi_mask(False)
        vcpu.emulator_set_hflags(vcpu.emulator_get_hflags() & ~(HF_SMM_INSIDE_NMI_MASK | HF_SMM_MASK))
        # Back to real mode before loading CR0/CR3/CR4/EFER: not modelled.
        if vcpu.emulator_pre_leave_smm(smstate):
            return X86EMUL_UNHANDLEABLE
        if vcpu.rsm_load_state_64(ctxt, smstate) != X86EMUL_CONTINUE:
            return X86EMUL_UNHANDLEABLE
        vcpu.emulator_post_leave_smm()
        return X86EMUL_CONTINUE

    @origin(MMU_C, "kvm_handle_page_fault", tree=TREE)
    def kvm_handle_page_fault(vcpu, error_code: int, fault_address: int) -> int:
        """A #PF L0 intercepted (shadow paging): the MMU's page walk
        (impls.hw.environment) either finds a guest fault, which goes to
        kvm_inject_emulated_page_fault, or fixes the shadow page tables."""
        return vcpu.kvm_mmu_page_fault(fault_address, error_code)

    @origin(MMU_C, "kvm_mmu_page_fault", tree=TREE)
    def kvm_mmu_page_fault(vcpu, cr2_or_gpa: int, error_code: int) -> int:
        """The MMU's verdict (impls.hw.environment): an MMIO access is
        emulated (RET_PF_EMULATE), a guest fault injected, anything else
        fixed (RET_PF_RETRY / RET_PF_FIXED)."""
        if vcpu.env.last_origin is Origin.EMULATE:
            return vcpu.x86_emulate_instruction(0)
        if vcpu.env.mmu_fault_is_guest_visible():
            fault = X86Exception(PF, True, vcpu.env.guest_pf_error_code(error_code), cr2_or_gpa)
            vcpu.kvm_inject_emulated_page_fault(fault)
        return 1  # RET_PF_RETRY / fixed: resume the guest

    # ------------------------------------------------ KVM_GET/SET_VCPU_EVENTS --

    @origin(X86_C, "kvm_vcpu_ioctl_x86_get_vcpu_events", tree=TREE)
    def kvm_vcpu_ioctl_x86_get_vcpu_events(vcpu) -> KvmVcpuEvents:
        a = vcpu.arch
        ex = a.exception
        events = KvmVcpuEvents()
        vcpu.process_nmi()
        if vcpu.kvm_check_request(KVM_REQ_SMI):
            vcpu.process_smi()
        if not vcpu.kvm.exception_payload_enabled and ex.pending and ex.has_payload:
            vcpu.kvm_deliver_exception_payload()
        if kvm_exception_is_soft(ex.nr):
            if ex.injected or ex.pending:
                vcpu.rec.note("KVM_GET_VCPU_EVENTS: a soft exception is left out (its instruction executes again)")
            events.exception_injected = 0
            events.exception_pending = 0
        else:
            events.exception_injected = int(ex.injected)
            events.exception_pending = int(ex.pending)
            if not vcpu.kvm.exception_payload_enabled:
                events.exception_injected |= int(ex.pending)
        events.exception_nr = ex.nr
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
        return events

    @origin(X86_C, "kvm_vcpu_ioctl_x86_set_vcpu_events", tree=TREE)
    def kvm_vcpu_ioctl_x86_set_vcpu_events(vcpu, events: KvmVcpuEvents) -> int:
        a = vcpu.arch
        ex = a.exception
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
        if (events.exception_injected or events.exception_pending) and (
                events.exception_nr > 31 or events.exception_nr == 2):
            return -EINVAL
        if events.flags & KVM_VCPUEVENT_VALID_SMM and (events.smi_smm or events.smi_pending) \
                and vcpu.arch.mp_state == KVM_MP_STATE_INIT_RECEIVED:
            return -EINVAL
        vcpu.process_nmi()
        ex.injected = bool(events.exception_injected)
        ex.pending = bool(events.exception_pending)
        ex.nr = events.exception_nr
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

    # ------------------------------------------------------- exits to user --

    @glue("fills kvm_run for KVM_EXIT_INTERNAL_ERROR, as each exit handler does inline")
    def internal_error(vcpu, suberror: int, *data) -> int:
        """Fill kvm_run for KVM_EXIT_INTERNAL_ERROR; return 0 (to userspace)."""
        vcpu.run.exit_reason = KVM_EXIT_INTERNAL_ERROR
        vcpu.run.suberror = suberror
        vcpu.run.data = data
        return 0


# Silence "imported but unused" for names kept for readers of the C.
_ = (KVM_INTERNAL_ERROR_EMULATION, PFERR_PRESENT_MASK, PFERR_RSVD_MASK)
