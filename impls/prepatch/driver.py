"""Maps scenario events to what a VMM, L1 and the guest do to a KVM vCPU.

* Guest configuration (`lN.mode`, `lN.idt`, ...) changes the simulated CPU's
  per-level state directly, except a mode change of the running level, which
  is an instruction (as in the reference); `delivery_fault` and
  `l0.mmu_fixup` arm faults at the level running when the event comes (L2
  while KVM is in guest mode).
* An instruction event (`exception`, `sti`, ..., `l1.vmentry`, `l2.vmcall`,
  `l0.emulate`) is a KVM_RUN: `vcpu_run`'s loop runs until the guest has
  executed the instruction (or, if it belongs to the other level, reached
  the boundary where it would have) and KVM holds no event in flight (an
  exception pending or injected, an NMI or interrupt injected, a nested run
  pending, a triple fault requested): the CPU then stops at the next
  boundary.  `run` loops until an entry injected nothing, the guest executed
  a no-op and KVM has nothing to do.  A halted vCPU that `kvm_vcpu_block`
  finds nothing to wake is quiescent in every phase: KVM_RUN returns, and an
  instruction event never executes.  Each loop is bounded (`BOUND`); hitting
  the bound is a livelock.
* `l1.*` events are L1 writing vmcs12 / vmcb12 and executing VMLAUNCH /
  VMRESUME / VMRUN, which KVM emulates; `l1.intercept` and `l1.vmentry` act
  only while L1 runs, `l2.vmcall` only while L2 runs (as in the reference).
* `irq` / `nmi` / `init` are the platform (LAPIC IRR, kvm_inject_nmi, the
  LAPIC's INIT latch); an INIT that resets the vCPU ends the scenario
  (`kvm_vcpu_reset` raises `VcpuReset`, no final state); `user.*` are
  KVM_SET_VCPU_EVENTS (after KVM_GET_VCPU_EVENTS), KVM_INTERRUPT, KVM_NMI
  and the migration; see impls.hw.environment for what the VMM does.  The
  VMM sets no state a CPU cannot be in (`impls.arch.possible`, as the
  reference): such a `user.set_*` event issues no ioctl.

Shared by every KVM port: a port passes its `Vcpu` class.
"""
from __future__ import annotations

from impls import arch
from impls.api import HANDLER, FinalState, Outcome, VcpuEvents
from impls.arch import Gate, Mode, possible
from impls.arch import svm as asvm
from impls.arch import vmx as avmx
from impls.hw import CHAIN, INSTR, RUN, Cpu, Environment, Recorder, VcpuReset
from impls.hw import cpu as hw
from impls.l1 import handle_exit as l1_handles_exit
from impls.l1 import prepare_entry as l1_prepares_entry
from impls.l1 import write_guest_state as l1_writes_guest_state
from impls.origin import glue
from impls.pic import UserspacePic
from impls.timer import Timers
from impls.prepatch import state as st

#: vcpu_run iterations per KVM_RUN before the driver calls it a livelock.
BOUND = 64
#: KVM_VCPUEVENT_VALID_TRIPLE_FAULT (5.19's uapi; 5.11 never sets it).
TRIPLE_FAULT_VALID = 0x20


@glue("the scenario driver: the VMM, L1 and the guest acting on KVM (no kernel code)")
class Driver:
    def __init__(self, scenario, vcpu_cls):
        cfg = scenario.config
        self.events = scenario.events
        self.cfg = cfg
        self.svm = cfg.vendor == "svm"
        self.rec = Recorder()
        self.env = Environment()
        self.cpu = Cpu(cfg.vendor, cfg.npt, self.rec, self.env)
        self.vcpu = vcpu_cls(cfg, self.cpu, self.env, self.rec)
        self.dead = False
        self.shutdown: int | None = None
        self.reset = False  # an INIT reset the vCPU (not followed further)
        self.livelock: str | None = None
        self.pic = UserspacePic()  # the VMM's PIC (split irqchip), as the reference's
        self.timers = Timers()  # `timer` (impls.timer), counted on `Cpu.instructions`
        self.instructions_seen = 0
        self.intr_intercept = False  # l1.intercept intr=, which sets V_INTR_MASKING on SVM
        self.controls: dict[str, bool] = {}  # `l1.controls` as L1 last wrote them, by name (none: all off)
        self.l1_intercept(0, 0, 0, False, False, True, False, False)

    # -------------------------------------------------------------- helpers --

    def level(self) -> int:
        return 2 if self.vcpu.is_guest_mode() else 1

    def in_flight(self) -> bool:
        """KVM still holds an event it must deliver before the guest moves on
        (`Vcpu.event_in_flight`, which a port with other state overrides),
        or the guest has an INT3 / INTO to execute again, whose delivery an
        exit interrupted and KVM did not re-inject (`LevelState.restart`)."""
        return self.vcpu.event_in_flight() or self.cpu.lv[self.level()].restart is not None

    def userspace_exit(self) -> None:
        """KVM_RUN returned with an exit the VMM must handle."""
        run = self.vcpu.run
        reason = run.exit_reason
        run.exit_reason = st.KVM_EXIT_UNKNOWN
        if reason == st.KVM_EXIT_SHUTDOWN:
            self.shutdown = self.rec.step
        else:
            name = st.EXIT_NAMES.get(reason, f"exit {reason}")
            detail = ",".join(f"{d:#x}" for d in run.data)
            self.rec.alarm(f"{name}({run.suberror}) {detail}".rstrip())
        self.dead = True

    def kvm_run(self, phase: str, instr: tuple | None = None, instr_level: int | None = None) -> None:
        """KVM_RUN until the phase's goal (see the module docstring).  Each
        KVM_RUN starts at an instruction of the scenario: what it raises, and
        what interrupts it, counts its return address from the RIP the vCPU
        has now (`LevelState.insn_rip`), whatever KVM did to RIP before."""
        self.vmm_push_extint()
        cpu, vcpu = self.cpu, self.vcpu
        lv1, lv2 = cpu.lv[1], cpu.lv[2]
        lv1.insn_rip, lv2.insn_rip = lv1.rip, lv2.rip
        cpu.phase, cpu.instr, cpu.instr_level, cpu.consumed = phase, instr, instr_level, False
        clean = 0
        for _ in range(BOUND):
            cpu.ran_noop = cpu.entered_with_event = False
            vcpu.blocked = False
            try:
                r = vcpu.vcpu_run_once()
            except VcpuReset:
                # kvm_vcpu_reset recorded the Reset: nothing is followed past it.
                self.reset = True
                self.dead = True
                return
            if self.timers.armed:
                self.timers_due()
            if r <= 0:
                self.userspace_exit()
                return
            if vcpu.blocked:
                return  # halted with nothing to wake it (impls.hw.environment, "HLT")
            if cpu.phase == INSTR and cpu.consumed:
                cpu.phase = CHAIN
            if cpu.phase == CHAIN and not self.in_flight():
                return
            if cpu.phase == RUN:
                # Quiescent: twice in a row, an entry that injected nothing
                # ran a no-op and left KVM nothing to do (the second one
                # catches a window the no-op opened).
                if cpu.ran_noop and not cpu.entered_with_event and not self.in_flight() \
                        and not vcpu.requests & (st.KVM_REQ_EVENT | st.KVM_REQ_NMI):
                    clean += 1
                    if clean == 2:
                        return
                else:
                    clean = 0
        self.livelock = f"step {self.rec.step}: KVM_RUN did not settle in {BOUND} entries"
        self.dead = True

    def timers_due(self) -> None:
        """The timed events due after the guest instructions the last pass
        executed (`impls.timer`) become pending: an interrupt through the
        LAPIC, an NMI through kvm_inject_nmi."""
        while self.instructions_seen < self.cpu.instructions:
            self.instructions_seen += 1
            for due in self.timers.tick():
                self.pend(due)

    def pend(self, due) -> None:
        if due.nmi:
            self.vcpu.kvm_inject_nmi()
        else:
            self.vcpu.kvm_apic_set_irq(due.vector)

    def vmm_push_extint(self) -> None:
        """The VMM's userspace PIC retries KVM_INTERRUPT (split irqchip)."""
        while self.pic.held and self.vcpu.pending_external_vector == -1:
            if self.vcpu.kvm_vcpu_ioctl_interrupt(self.pic.peek()) != 0:
                break
            self.pic.next_vector()

    # ------------------------------------------------------------- the run --

    def run_events(self) -> None:
        for step, ev in enumerate(self.events):
            if self.dead:
                break
            self.rec.step = step
            self._run_event(getattr(self, HANDLER[ev.kind]), ev)
        self.rec.step = len(self.events)
        if not self.dead:
            self._run_event(self.ev_run, None)

    def _run_event(self, handler, ev) -> None:
        """One scenario event; then L1 answers the nested exits it observed
        meanwhile, as the scenario defines L1 (`impls.l1`), on L2's state,
        which the simulated CPU holds as vmcs12 / vmcb12 would."""
        seen = len(self.rec.l1)
        handler(ev)
        l2 = self.cpu.lv[2]
        for _, obs in self.rec.l1[seen:]:
            l1_handles_exit(obs, l2)
            l2.insn_rip = l2.rip  # L1 next enters L2 at its RIP

    def outcome(self) -> Outcome:
        if self.reset:
            return Outcome(tuple(self.rec.l1), tuple(self.rec.l2), self.shutdown, None, tuple(self.rec.alarms),
                           self.livelock, tuple(self.rec.notes))
        v = self.vcpu
        a = v.arch
        lv = self.cpu.lv[self.level()]
        irqs = set(v.apic.irr) | set(self.pic.held)
        if v.pending_external_vector != -1:
            irqs.add(v.pending_external_vector)
        if a.interrupt.injected and not a.interrupt.soft:
            irqs.add(a.interrupt.nr)
        final = FinalState(
            level=self.level(),
            nmi_pending=a.nmi_pending + a.nmi_queued + (1 if a.nmi_injected else 0),
            irq_pending=tuple(sorted(irqs)),
            nmi_blocked=bool(v.kvm_x86_ops.get_nmi_mask(v)),
            interrupt_shadow=bool(lv.shadow),
            interrupts_enabled=lv.rflags_if,
            cr2=lv.cr2,
            init_pending=bool(v.apic.pending_events & (1 << st.KVM_APIC_INIT)),  # smi.latched_init
            smi_pending=bool(a.smi_pending or v.requests & st.KVM_REQ_SMI),  # smi.pending after process_smi
            halted=a.mp_state == st.KVM_MP_STATE_HALTED,  # KVM_GET_MP_STATE
        )
        return Outcome(tuple(self.rec.l1), tuple(self.rec.l2), self.shutdown, final, tuple(self.rec.alarms),
                       self.livelock, tuple(self.rec.notes))

    # ------------------------------------------------- guest configuration --

    def _level_of(self, ev) -> int:
        return int(ev.kind[1])

    def ev_l1_mode(self, ev):
        """The running level's mode changes by an instruction of its own
        (KVM_RUN, `Cpu._op_mode`); the other level's is vmcs12 / vmcb12 guest
        state L1 writes, at once."""
        level, mode = self._level_of(ev), Mode(ev.args[0])
        if level == self.level():
            self.kvm_run(INSTR, ("mode", mode), level)
        else:
            self.cpu.set_desc(level, mode=mode)

    ev_l2_mode = ev_l1_mode

    def ev_l1_idt(self, ev):
        level = self._level_of(ev)
        vector, gate = ev.args
        gates = dict(self.cpu.lv[level].desc.gates)
        gates[vector] = Gate(gate)
        self.cpu.set_desc(level, gates=tuple(sorted((v, g) for v, g in gates.items() if g is not Gate.OK)))

    ev_l2_idt = ev_l1_idt

    def ev_l1_idt_limit(self, ev):
        self.cpu.set_desc(self._level_of(ev), idt_entries=ev.args[0])

    ev_l2_idt_limit = ev_l1_idt_limit

    def ev_l1_stack(self, ev):
        self.cpu.set_desc(self._level_of(ev), stack_fault={"none": None, "#SS": arch.SS, "#PF": arch.PF}[ev.args[0]])

    ev_l2_stack = ev_l1_stack

    # ------------------------------------------------------------------ L1 --

    def l1_intercept(self, exceptions, pf_mask, pf_match, nmi, intr, shutdown, init, smi) -> None:
        """L1 writes its intercepts for L2 into vmcs12 / vmcb12."""
        if self.svm:
            c12 = self.vcpu.svm.nested.vmcb12.control
            c12.intercept_exceptions = exceptions
            c12.intercepts = {hw.INTERCEPT_VMRUN, hw.INTERCEPT_VMMCALL}
            if self.controls.get("hlt"):
                c12.intercepts.add(hw.INTERCEPT_HLT)
            if nmi:
                c12.intercepts.add(hw.INTERCEPT_NMI)
            if intr:
                c12.intercepts.add(hw.INTERCEPT_INTR)
            self.intr_intercept = intr
            self.svm_int_controls(c12)
            if shutdown:
                c12.intercepts.add(hw.INTERCEPT_SHUTDOWN)
            if init:
                c12.intercepts.add(hw.INTERCEPT_INIT)
            if smi:
                c12.intercepts.add(hw.INTERCEPT_SMI)
        else:
            # VMX has no INIT control: an INIT in VMX non-root operation
            # always exits (`init` is ignored).
            vmcs12 = self.vcpu.vmx.nested.vmcs12
            vmcs12.exception_bitmap = exceptions
            vmcs12.page_fault_error_code_mask = pf_mask
            vmcs12.page_fault_error_code_match = pf_match
            pin = 0
            if nmi:
                pin |= st.PIN_BASED_NMI_EXITING | st.PIN_BASED_VIRTUAL_NMIS
            if intr:
                pin |= st.PIN_BASED_EXT_INTR_MASK
            vmcs12.pin_based_vm_exec_control = pin

    def ev_l1_intercept(self, ev):
        if self.level() == 1:
            self.l1_intercept(*ev.args)

    def svm_int_controls(self, c12) -> None:
        """L1's interrupt controls in vmcb12: V_INTR_MASKING with the INTR
        intercept or `v_intr_masking=1` (as the reference: an intercepted
        interrupt exits whatever L2's IF), the VINTR intercept.  V_IRQ is
        not touched here: L1 writes it only with `l1.controls`."""
        v_intr_masking, vintr = self.controls.get("v_intr_masking"), self.controls.get("vintr")
        c12.int_ctl &= ~hw.V_INTR_MASKING_MASK
        if v_intr_masking or self.intr_intercept:
            c12.int_ctl |= hw.V_INTR_MASKING_MASK
        if vintr:
            c12.intercepts.add(hw.INTERCEPT_VINTR)
        else:
            c12.intercepts.discard(hw.INTERCEPT_VINTR)

    def ev_l1_controls(self, ev):
        """L1 writes its controls into vmcs12 (interrupt-window and NMI-window
        exiting, HLT exiting) or vmcb12 (V_INTR_MASKING, the VINTR and HLT
        intercepts, and V_IRQ with L1's priority and vector,
        `asvm.L1_V_INTR_VECTOR`, or V_IRQ cleared)."""
        if self.level() != 1:
            return
        self.controls = {p.name: v for p, v in zip(ev.spec.params, ev.args)}
        intr_window, nmi_window, v_irq, hlt = (self.controls[n] for n in ("intr_window", "nmi_window", "v_irq", "hlt"))
        if self.svm:
            c12 = self.vcpu.svm.nested.vmcb12.control
            self.svm_int_controls(c12)
            c12.int_ctl &= ~(hw.V_IRQ_MASK | hw.V_INTR_PRIO_MASK | hw.V_IGN_TPR_MASK)
            if v_irq:
                c12.int_ctl |= hw.V_IRQ_MASK | asvm.L1_V_INTR_PRIO << hw.V_INTR_PRIO_SHIFT
                c12.int_vector = asvm.L1_V_INTR_VECTOR
            if hlt:
                c12.intercepts.add(hw.INTERCEPT_HLT)
            else:
                c12.intercepts.discard(hw.INTERCEPT_HLT)
        else:
            vmcs12 = self.vcpu.vmx.nested.vmcs12
            ctl = vmcs12.cpu_based_vm_exec_control & ~(st.CPU_BASED_INTR_WINDOW_EXITING
                                                        | st.CPU_BASED_NMI_WINDOW_EXITING
                                                        | st.CPU_BASED_HLT_EXITING)
            if intr_window:
                ctl |= st.CPU_BASED_INTR_WINDOW_EXITING
            if nmi_window:
                ctl |= st.CPU_BASED_NMI_WINDOW_EXITING
            if hlt:
                ctl |= st.CPU_BASED_HLT_EXITING
            vmcs12.cpu_based_vm_exec_control = ctl

    def ev_l1_vmentry(self, ev):
        """L1 writes the event to inject and the length of the instruction
        behind it: VMX's VM-entry instruction length, SVM's next_rip (L2's
        RIP + the length), then enters."""
        if self.level() != 1:
            return
        inject, insn_len = ev["inject"], ev["insn_len"]
        l1_prepares_entry(inject, self.cpu.lv[2], self.cfg.vendor)
        # L2's interruptibility, RFLAGS.IF and pending debug exceptions are
        # vmcs12's / vmcb12's guest state, which lives in the simulated CPU
        # (impls.hw.environment, "L1, the hypervisor"): L1 writes them there,
        # and KVM's prepare_vmcs02 / nested_vmcb02_prepare_save carry them
        # to vmcs02 / vmcb02 unchanged.
        l1_writes_guest_state(self.cpu.lv[2], ev["interruptibility"], ev["if"], ev["pending_dbg"])
        if self.svm:
            c12 = self.vcpu.svm.nested.vmcb12.control
            c12.event_inj, c12.event_inj_err = asvm.encode_inj(inject)
            c12.next_rip = self.cpu.lv[2].rip + insn_len
            self.kvm_run(INSTR, ("vmentry", False), 1)
        else:
            vmcs12 = self.vcpu.vmx.nested.vmcs12
            if ev["activity"] != "keep":
                vmcs12.guest_activity_state = (st.GUEST_ACTIVITY_HLT if ev["activity"] == "hlt"
                                               else st.GUEST_ACTIVITY_ACTIVE)
            vmcs12.vm_entry_intr_info_field, vmcs12.vm_entry_exception_error_code = avmx.encode(inject)
            vmcs12.vm_entry_instruction_len = insn_len
            self.kvm_run(INSTR, ("vmentry", vmcs12.launch_state == 1), 1)

    def ev_l2_vmcall(self, ev):
        if self.level() == 2:
            self.kvm_run(INSTR, ("vmcall",), 2)

    # --------------------------------------------------------------- guest --

    def ev_exception(self, ev):
        self.kvm_run(INSTR, ("exception", *ev.args))

    def ev_int(self, ev):
        self.kvm_run(INSTR, ("int", ev.args[0]))

    def ev_int3(self, ev):
        self.kvm_run(INSTR, ("exception", arch.BP, 0, 0))

    def ev_into(self, ev):
        self.kvm_run(INSTR, ("exception", arch.OF, 0, 0))

    def ev_icebp(self, ev):
        self.kvm_run(INSTR, ("icebp",))

    def ev_hlt(self, ev):
        self.kvm_run(INSTR, ("hlt",))

    def ev_delivery_fault(self, ev):
        self.cpu.lv[self.level()].armed.append(tuple(ev.args))

    def ev_sti(self, ev):
        self.kvm_run(INSTR, ("sti",))

    def ev_cli(self, ev):
        self.kvm_run(INSTR, ("cli",))

    def ev_mov_ss(self, ev):
        self.kvm_run(INSTR, ("mov_ss",))

    def ev_iret(self, ev):
        self.kvm_run(INSTR, ("iret",))

    def ev_stgi(self, ev):
        if self.level() == 1:
            self.kvm_run(INSTR, ("gif", True), 1)

    def ev_clgi(self, ev):
        if self.level() == 1:
            self.kvm_run(INSTR, ("gif", False), 1)

    # ------------------------------------------------------------------ L0 --

    def ev_l0_mmu_fixup(self, ev):
        lv = self.cpu.lv[self.level()]
        if ev.args[0] == "iret":
            lv.fixup_iret += 1
        else:
            lv.fixup_delivery += 1

    def ev_l0_emulate(self, ev):
        fault, ec, cr2 = ev.args
        self.env.emulate_fault = None if fault is None else (fault, ec, cr2)
        self.kvm_run(INSTR, ("emulate",))
        self.env.emulate_fault = None

    def ev_l0_immediate_exit(self, ev):
        self.env.kick = True

    # ------------------------------------------------------------ platform --

    def ev_irq(self, ev):
        self.vcpu.kvm_apic_set_irq(ev.args[0])

    def ev_nmi(self, ev):
        self.vcpu.kvm_inject_nmi()

    def ev_timer(self, ev):
        after, nmi, vector = ev.args
        if not self.timers.armed:  # instructions are counted only while a timer is armed
            self.instructions_seen = self.cpu.instructions
        for due in self.timers.arm(after, nmi, vector):
            self.pend(due)

    def ev_smi(self, ev):
        """The VMM's KVM_SMI (impls.hw.environment, SMM)."""
        self.vcpu.kvm_vcpu_ioctl_smi()

    def ev_init(self, ev):
        """An INIT IPI (edge, asserted) the in-kernel LAPIC accepts."""
        self.vcpu._apic_accept_irq(st.APIC_DM_INIT, 0, 1, 0)

    # ----------------------------------------------------------- userspace --

    def _set_events(self, events) -> None:
        r = self.vcpu.kvm_vcpu_ioctl_x86_set_vcpu_events(events)
        if r < 0:
            self.rec.alarm(f"KVM_SET_VCPU_EVENTS failed ({r})")

    def _nmi_blocked(self) -> bool:
        """The running level's NMI blocking: the guest interruptibility state
        on VMX; on SVM (no vNMI) the CPU holds none, KVM's NMI mask is the
        guest's."""
        if self.svm:
            return bool(self.vcpu.kvm_x86_ops.get_nmi_mask(self.vcpu))
        return self.cpu.lv[self.level()].nmi_blocked

    def _in_flight_possible(self, kind: arch.EvType) -> bool:
        lv = self.cpu.lv[self.level()]
        return possible.in_flight_possible(kind, lv.rflags_if, lv.shadow,
                                           kind is arch.EvType.NMI and self._nmi_blocked())

    def _halted(self) -> bool:
        """The VMM sets no raised exception and no event in flight in a
        halted vCPU (`possible.raised_or_in_flight_possible`); it reads
        KVM_GET_MP_STATE."""
        return not possible.raised_or_in_flight_possible(self.vcpu.arch.mp_state == st.KVM_MP_STATE_HALTED)

    def ev_user_set_exception(self, ev):
        vector, ec, injected = ev.args
        if self._halted():
            return
        if not possible.exception_settable(vector, self.cpu.lv[self.level()].desc.mode):
            return
        v = self.vcpu
        events = v.kvm_vcpu_ioctl_x86_get_vcpu_events()
        if v.kvm.exception_payload_enabled:
            events.exception_pending = int(not injected)
            events.exception_injected = int(injected)
        else:
            events.exception_pending = 0
            events.exception_injected = 1  # the only exception this ABI can set
        events.exception_nr = vector
        real = self.cpu.lv[self.level()].desc.mode is Mode.REAL
        events.exception_has_error_code = int(arch.has_error_code(vector) and not real)
        events.exception_error_code = ec
        events.exception_has_payload = 0
        events.exception_payload = 0
        # RIP on the INT3 / INTO that raised a #BP / #OF, else on no such
        # instruction (impls.hw.environment, "The VMM").
        soft = vector in arch.SOFT_EXCEPTION_VECTORS
        self.cpu.lv[self.level()].restart = arch.Ev(arch.EvType.SOFT_EXCEPTION, vector) if soft else None
        self._set_events(events)

    def ev_user_set_nmi(self, ev):
        if ev.args[0] and (self._halted() or not self._in_flight_possible(arch.EvType.NMI)):
            return
        events = self.vcpu.kvm_vcpu_ioctl_x86_get_vcpu_events()
        if ev.args[0]:
            events.nmi_injected = 1
        else:
            events.nmi_pending = 1
        self._set_events(events)

    def ev_user_set_irq(self, ev):
        if self._halted() or not self._in_flight_possible(arch.EvType.EXT_INTR):
            return
        events = self.vcpu.kvm_vcpu_ioctl_x86_get_vcpu_events()
        events.interrupt_injected = 1
        events.interrupt_nr = ev.args[0]
        events.interrupt_soft = 0
        self._set_events(events)

    def ev_user_interrupt(self, ev):
        """The VMM's PIC raises the vector (`impls.pic`); the VMM issues
        KVM_INTERRUPT before the next KVM_RUN (`vmm_push_extint`)."""
        self.pic.raise_vector(ev.args[0])

    def ev_user_nmi(self, ev):
        self.vcpu.kvm_vcpu_ioctl_nmi()

    def ev_user_migrate(self, ev):
        """KVM_GET_VCPU_EVENTS, a fresh vCPU that gets every other piece of
        state (registers, nested state, LAPIC) faithfully, KVM_SET_VCPU_EVENTS."""
        old = self.vcpu
        events = old.kvm_vcpu_ioctl_x86_get_vcpu_events()
        new = type(old)(self.cfg, self.cpu, self.env, self.rec)
        new.apic.irr = set(old.apic.irr)
        new.apic.pending_events = old.apic.pending_events
        new.arch.mp_state = old.arch.mp_state  # KVM_GET_MP_STATE / KVM_SET_MP_STATE
        new.apic.sipi_vector = old.apic.sipi_vector
        new.pending_external_vector = old.pending_external_vector
        new.arch.hflags = old.arch.hflags & (st.HF_GUEST_MASK | st.HF_GIF_MASK)
        new.walk_mmu_inject_page_fault = old.walk_mmu_inject_page_fault
        for lv in self.cpu.lv.values():
            lv.tf = False  # KVM's single-step TF is not the guest's (svm_get_rflags hides it)
        if self.svm:
            s, n = old.svm, new.svm
            n.nested = s.nested
            n.vmcb = s.vmcb
            n.vmcb.int_ctl &= ~hw.V_IRQ_MASK
            if old.is_guest_mode():
                # KVM_SET_NESTED_STATE rebuilds vmcb02's int_ctl from vmcb12's
                # (nested_vmcb02_prepare_control): L1's V_IRQ, not KVM's window.
                n.vmcb.int_ctl |= s.nested.ctl.int_ctl & hw.V_IRQ_MASK
                n.vmcb.int_vector = s.nested.ctl.int_vector
            n.vmcb.pending_intr = False
            n.vmcb.event_inj = s.nested.ctl.event_inj if old.is_guest_mode() else 0
            host = s.nested.hsave if old.is_guest_mode() else s.vmcb
            host.intercepts.discard(hw.INTERCEPT_VINTR)
            host.intercepts.discard(hw.INTERCEPT_IRET)
            if old.is_guest_mode():
                new.recalc_intercepts()
        else:
            x, n = old.vmx, new.vmx
            n.nested = x.nested
            n.vmcs01.vmcs = x.vmcs01.vmcs
            n.vmcs02.vmcs = x.vmcs02.vmcs
            for vmcs in (n.vmcs01.vmcs, n.vmcs02.vmcs):
                vmcs.intr_window_exiting = vmcs.nmi_window_exiting = False
                vmcs.preemption_timer_zero = False
                vmcs.entry_intr_info = 0
            if old.is_guest_mode():
                # KVM_SET_NESTED_STATE rebuilds vmcs02's window controls from
                # vmcs12's (prepare_vmcs02_early).
                exec12 = x.nested.vmcs12.cpu_based_vm_exec_control
                n.vmcs02.vmcs.intr_window_exiting = bool(exec12 & st.CPU_BASED_INTR_WINDOW_EXITING)
                n.vmcs02.vmcs.nmi_window_exiting = bool(exec12 & st.CPU_BASED_NMI_WINDOW_EXITING)
                n.loaded_vmcs = n.vmcs02
                if x.nested.nested_run_pending:
                    n.vmcs02.vmcs.entry_intr_info = x.nested.vmcs12.vm_entry_intr_info_field
                    n.vmcs02.vmcs.entry_error_code = x.nested.vmcs12.vm_entry_exception_error_code
                    n.vmcs02.vmcs.entry_instruction_len = x.nested.vmcs12.vm_entry_instruction_len
        self.vcpu = new
        self._set_events(events)

    def ev_user_get_events(self, ev):
        """KVM_GET_VCPU_EVENTS alone: the snapshot is an observation."""
        self.rec.observe(1, self.vcpu_events(self.vcpu.kvm_vcpu_ioctl_x86_get_vcpu_events()))

    def vcpu_events(self, e) -> VcpuEvents:
        """struct kvm_vcpu_events as `VcpuEvents`: only the fields its flags
        and its own valid bits make valid (api.rst 4.31)."""
        payload_valid = bool(e.flags & st.KVM_VCPUEVENT_VALID_PAYLOAD)
        pending = payload_valid and bool(e.exception_pending)
        held = pending or bool(e.exception_injected)
        exc = arch.Ev(arch.EvType.HW_EXCEPTION, e.exception_nr,
                      e.exception_error_code if e.exception_has_error_code else None) if held else None
        return VcpuEvents(
            exception=exc, exception_pending=pending, exception_injected=bool(e.exception_injected),
            payload=e.exception_payload if held and payload_valid and e.exception_has_payload else None,
            nmi_injected=bool(e.nmi_injected), nmi_pending=e.nmi_pending, nmi_masked=bool(e.nmi_masked),
            interrupt=e.interrupt_nr if e.interrupt_injected else None,
            interrupt_soft=bool(e.interrupt_injected and e.interrupt_soft),
            shadow=e.interrupt_shadow if e.flags & st.KVM_VCPUEVENT_VALID_SHADOW else 0,
            smi_pending=bool(e.flags & st.KVM_VCPUEVENT_VALID_SMM and e.smi_pending),
            latched_init=bool(e.flags & st.KVM_VCPUEVENT_VALID_SMM and e.smi_latched_init),
            triple_fault=bool(e.flags & TRIPLE_FAULT_VALID and getattr(e, "triple_fault_pending", 0)))

    def ev_user_run_exit(self, ev):
        """KVM_RUN with a signal pending for the vCPU thread: a pass of
        vcpu_run (kvm_vcpu_running, then vcpu_enter_guest: its requests and
        injection, cancelled by kvm_vcpu_exit_request, which sees the
        signal), then vcpu_run's check for work before the next entry
        (xfer_to_guest_mode_handle_work) returns -EINTR with KVM_EXIT_INTR.
        What KVM queued stays queued; the next KVM_RUN goes on.

        The quiescent point is never inside the scenario's SMM handler,
        which returns at once (impls.hw.environment, SMM): a pass that
        entered SMM is followed by passes without the signal until the
        handler's RSM has run, as if the signal came just after it.  With
        `immediate` the VMM sets kvm_run->immediate_exit instead: KVM_RUN
        returns -EINTR before vcpu_run."""
        self.vmm_push_extint()
        cpu, vcpu = self.cpu, self.vcpu
        if ev.args[0]:
            vcpu.kvm_run_immediate_exit()  # -EINTR before vcpu_run: nothing held changes
            return
        cpu.phase, cpu.instr, cpu.instr_level, cpu.consumed = CHAIN, None, None, False
        try:
            for _ in range(BOUND):
                self.env.kick = not cpu.smm_handler
                r = vcpu.vcpu_run_once()
                self.timers_due()
                if r > 0 and not cpu.smm_handler:
                    self.env.signal = True
                    r = vcpu.xfer_to_guest_mode_handle_work()
                if r <= 0:
                    break
            else:
                self.livelock = f"step {self.rec.step}: the SMM handler did not return in {BOUND} entries"
                self.dead = True
                return
        except VcpuReset:
            self.reset = self.dead = True
            return
        finally:
            self.env.kick = self.env.signal = False
        if r == -st.EINTR and vcpu.run.exit_reason == st.KVM_EXIT_INTR:
            vcpu.run.exit_reason = st.KVM_EXIT_UNKNOWN  # the VMM handles its signal
        else:
            self.userspace_exit()

    # ----------------------------------------------------------------- run --

    def ev_run(self, ev):
        self.kvm_run(RUN)
