"""The architectural model: a vCPU running L1 and, nested, L2, as the Intel
SDM and AMD APM describe it.  Written from the manuals only (citations as in
`impls.arch`; MANUALS.md has the pages), never from KVM.

There is no L0 here: L1 sees the VMX/SVM architecture directly, so every
`l0.*` event and every `user.*` save/restore must leave no trace.

How a scenario runs.  Configuration events change tables at once, except a
mode change of the running level, which is an instruction.  Platform
events make an NMI or interrupt pending.  An instruction event (`exception`,
`int`, `int3`, `into`, `icebp`, `sti`, ..., `l1.vmentry`, `l2.vmcall`,
`l0.emulate`) first lets the CPU reach
its instruction boundary -- delivering, in priority order, every pending event
that is deliverable there (`_boundary`) -- and then executes.  `run` does the
boundary and executes no-ops until nothing deliverable is left.  After the
last event an implicit `run` gives the final state.

Where the manuals leave a choice the model asks `self.choose(...)`; the
`Reference` driver runs the model once per combination of answers and returns
every outcome (`impls.api.Allowed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from impls import arch
from impls.arch import DF, PF, DescriptorState, Ev, EvType, Gate, Merge, Mode, possible, vmx as avmx, svm as asvm
from impls.api import (HANDLER, SHADOW_MOV_SS, SHADOW_STI, Delivered, EntryFailed, FinalState, Outcome, Reset,
                       SmiHandled, Undefined, VcpuEvents, VmExit)
from impls.l1 import handle_exit as l1_handles_exit
from impls.l1 import prepare_entry as l1_prepares_entry
from impls.l1 import write_guest_state as l1_writes_guest_state
from impls.pic import UserspacePic
from impls.timer import Timers

#: Bound on deliveries at one boundary and on no-ops in one `run`.
STEP_BOUND = 64
#: Event types that are exceptions (raised, intercept-checked as exceptions).
_EXCEPTIONS = (EvType.HW_EXCEPTION, EvType.SOFT_EXCEPTION, EvType.PRIV_SOFT_EXCEPTION)


class Livelock(Exception):
    pass


class NotExecuted(Exception):
    """The running level is halted: an instruction event finds no
    instruction executing (SDM2 HLT: the processor stops executing
    instructions until an event wakes it), so it does nothing."""
class _Held(Exception):
    """`user.run_exit`: the boundary's next event is held in flight
    (recognised, its delivery not begun) instead of being delivered;
    `ev` is None when it was in flight already."""

    def __init__(self, ev: Ev | None):
        super().__init__()
        self.ev = ev


class Stopped(Exception):
    """The vCPU shut down (reported to userspace) or an INIT reset it: the
    model follows nothing after that moment, not even the rest of the event
    that caused it (`Machine._stop`)."""


@dataclass
class LevelState:
    """Architectural state of one guest level (L1, or L2 as vmcs12/vmcb12
    holds it while L1 runs)."""

    desc: DescriptorState = field(default_factory=DescriptorState)
    rflags_if: bool = True
    shadow: str | None = None  # "sti" or "movss": blocking for one instruction ("both": only L1 writes it)
    pending_dbg: str | None = None  # VMX, L2's pending debug exceptions as L1 wrote them (impls.l1)
    nmi_blocked: bool = False  # VMX only; SVM has one mask, Machine.svm_nmi_mask
    cr2: int = 0  # SVM only; VMX has one CR2, Machine.vmx_cr2
    rip: int = 0  # moved only by L1 skipping an L2 instruction (impls.l1); not compared
    # In the HLT state (SDM2 HLT).  For L2 while L1 runs: vmcs12's guest
    # activity state (SDM 24.4.2); SVM keeps none and resumes active.
    halted: bool = False
    armed: list = field(default_factory=list)  # delivery faults for the next deliveries


@dataclass
class Intercepts:
    exceptions: int = 0
    pf_mask: int = 0
    pf_match: int = 0
    nmi: bool = False
    intr: bool = False
    shutdown: bool = True
    init: bool = False  # SVM only: VMX has no INIT control, INIT always exits
    smi: bool = False  # SVM only: on VMX (default treatment) SMIs never exit


@dataclass
class Controls:
    """L1's controls for L2 (`l1.controls`): VMX's interrupt-window and
    NMI-window exiting (SDM 24.6.2, primary processor-based controls bits 2
    and 22); SVM's V_INTR_MASKING and V_IRQ in vmcb12's int_ctl (APM
    15.21.1, 15.21.4) and the VINTR intercept (APM 15.21.6); HLT exiting
    (VMX, bit 7) / the HLT intercept (SVM, APM 15.9).  `v_irq`
    is vmcb12's bit: the processor clears it when it dispatches the virtual
    interrupt and writes it back at #VMEXIT (APM 15.21.4), so it stays what
    L2 left until L1 writes it again."""

    intr_window: bool = False
    nmi_window: bool = False
    v_intr_masking: bool = False
    v_irq: bool = False
    vintr: bool = False
    hlt: bool = False


class Machine:
    def __init__(self, scenario, answers: list[int]):
        self.cfg = scenario.config
        self.vendor = self.cfg.vendor
        self.svm = self.vendor == "svm"
        self.events = scenario.events
        self.answers = answers  # choices to take, in order
        self.asked: list[tuple[str, int]] = []  # choice points met: (rule, options)
        self.lv = {1: LevelState(), 2: LevelState()}
        self._switch(1)
        self.icpt = Intercepts()
        self.ctl = Controls()
        self.gif = True  # SVM only
        # VMX: CR2 is not part of the VMCS guest or host state, so L1 and L2
        # share the one register (SDM 24.4, 27.5); SVM saves and loads CR2 in
        # the VMCB save area (APM 15.5.1, Table B-2).
        self.vmx_cr2 = 0
        # SVM (no vNMI): NMI masking is processor state that the VMCB does not
        # hold, so one mask serves L1 and L2; VMX keeps L2's (virtual-)NMI
        # blocking in the VMCS (SDM Table 24-3).
        self.svm_nmi_mask = False
        self.pic = UserspacePic()  # the VMM's PIC: `user.interrupt` (impls.pic)
        self.timers = Timers()  # `timer`: events due after guest instructions (impls.timer)
        self.holding = False  # `user.run_exit`'s trial of the boundary: hold, do not deliver
        self.extint_given: int | None = None  # the vector KVM_INTERRUPT gave, until delivered
        self.nmi_pending = 0
        self.irq_pending: set[int] = set()
        self.init_pending = False
        self.smi_pending = False
        # From KVM_SET_VCPU_EVENTS: an exception the vCPU raised (pending) and
        # an event it was delivering (in flight: an exception, NMI or IRQ).
        self.user_pending: Ev | None = None
        self.user_in_flight: Ev | None = None
        self.forced_fault: tuple[int, int, int] | None = None
        self.l1_trace: list = []
        self.l2_trace: list = []
        self.shutdown: int | None = None
        self.reset = False  # an INIT reset the vCPU: nothing is followed past it
        self.step = 0
        self.notes: list[tuple[int, str]] = []
        self.undefined_from: int | None = None

    def note(self, text: str) -> None:
        self.notes.append((self.step, text))

    # ------------------------------------------------------------ choices --

    def choose(self, rule: str, options: int) -> int:
        i = len(self.asked)
        self.asked.append((rule, options))
        return self.answers[i] if i < len(self.answers) else 0

    # ------------------------------------------------------------ helpers --

    def _switch(self, level: int) -> None:
        """The running level is now `level`; `cur` is its state (an
        attribute, read on every event)."""
        self.level = level
        self.cur: LevelState = self.lv[level]

    def nmi_blocked(self, level: int) -> bool:
        return self.svm_nmi_mask if self.svm else self.lv[level].nmi_blocked

    def set_nmi_blocked(self, level: int, value: bool) -> None:
        if self.svm:
            self.svm_nmi_mask = value
        else:
            self.lv[level].nmi_blocked = value

    def cr2(self, level: int) -> int:
        return self.lv[level].cr2 if self.svm else self.vmx_cr2

    def set_cr2(self, value: int) -> None:
        if self.svm:
            self.cur.cr2 = value
        else:
            self.vmx_cr2 = value

    def _outside(self, why: str) -> None:
        """The scenario left the architecture: nothing is defined from here."""
        if self.undefined_from is None:
            self.undefined_from = self.step
            self.note(f"outside the architecture from here: {why}")

    def _impossible_exception(self, vector: int) -> bool:
        """#PF cannot be raised in real mode (no paging, SDM 20.1).  (#BR in
        64-bit mode has one meaning instead: `possible.raised`.)"""
        mode = self.cur.desc.mode
        if vector == PF and mode is Mode.REAL:
            self._outside("#PF raised in real mode")
            return True
        return False

    def _exc(self, vector: int, error_code: int | None, typ: EvType = EvType.HW_EXCEPTION) -> Ev:
        """An exception as delivered at the current level: no error code in
        real mode (SDM 20.1.4; SDM 26.5.1.3 for injection), none for vectors
        that push none (SDM Table 6-1).  A hardware exception unless `typ`
        says otherwise (`arch.raised_type`: the #BP / #OF of INT3 / INTO)."""
        if self.cur.desc.mode is Mode.REAL or not arch.has_error_code(vector):
            error_code = None
        elif error_code is None:
            error_code = 0
        return Ev(typ, vector, error_code)

    def _raised(self, vector: int, error_code: int | None) -> Ev:
        """The exception the current instruction raises on `vector`: #BP and
        #OF are INT3's and INTO's software exceptions (`arch.raised_type`)."""
        return self._exc(vector, error_code, arch.raised_type(vector))

    def _intercepted(self, ev: Ev) -> bool:
        """Whether L1 intercepts exception `ev` raised in L2.  VMX: exception
        bitmap and the #PF error-code mask/match (SDM 25.2, 24.6.3), INT1's
        #DB included (`arch.INT1`).  SVM: exception intercept vector (APM
        15.12), which INT1's #DB does not trigger (APM 15.12.2; L1 sets no
        ICEBP intercept); SVM has no mask/match.  INT n is no exception:
        never (`arch.soft_interrupt`; L1 sets no SVM INTn intercept)."""
        if ev.type is EvType.SOFT_INT or (self.svm and ev.type is EvType.PRIV_SOFT_EXCEPTION):
            return False
        bit = bool(self.icpt.exceptions >> ev.vector & 1)
        if ev.vector == PF and not self.svm:
            return arch.pf_intercepted(bit, self.icpt.pf_mask, self.icpt.pf_match, ev.error_code or 0)
        return bit

    # ------------------------------------------------------------ exits --

    def _vmexit(self, exit_: VmExit) -> None:
        """A VM exit to L1.  VMX: RFLAGS is cleared but bit 1 (SDM 27.5.3), so
        L1 runs with IF=0; no STI/MOV-SS blocking after any exit (SDM 27.5.5,
        MANUALS 6).  SVM: #VMEXIT clears GIF (APM 15.17).  L1 then does
        what the scenario's L1 does with L2's state (`impls.l1`)."""
        l2 = self.lv[2]
        if self.level == 2 and l2.halted:
            if self.svm:
                # The VMCB saves no activity state (APM Table B-2): the HLT
                # completed, rIP is past it, and VMRUN resumes L2 active.
                l2.halted = False
            else:
                # An event that exits directly from the HLT state leaves the
                # processor inactive until the exit completes (SDM 27.1), and
                # the exit saves that activity state (SDM 27.3.4).
                exit_ = replace(exit_, halted=True)
        self.l1_trace.append((self.step, exit_))
        self._switch(1)
        l1 = self.lv[1]
        l1.shadow = None
        if self.svm:
            self.gif = False
        else:
            l1.rflags_if = False
        l1_handles_exit(exit_, self.lv[2])

    def _exception_exit(self, ev: Ev, vectoring, address: int | None, length: int | None = None) -> None:
        """L1 intercepted exception `ev`.  VMX: reason 0, exit interruption
        info = the exception (SDM 27.2.2), exit qualification = #PF address
        (SDM 27.2.1); CR2 is not written (SDM 27.1).  SVM: exit code 0x40+vector,
        EXITINFO1 = error code for some vectors, EXITINFO2 = #PF address
        (APM 15.12), checked before CR2 is written.  The guest RIP saved is
        the instruction's (`VmExit.ret` +0: SDM 27.3.3, "the return pointer
        that would have been saved" for a fault, and for INT3 / INTO "the
        value saved references the INT3 or INTO instruction"; APM 15.7.1,
        the state "as of the moment the intercept triggers", and APM 15.12
        for INT3 / INTO intercepts).  `length`: `_soft_length`."""
        addr = address if ev.vector == PF else None
        if self.svm and isinstance(vectoring, Ev):
            # EXITINTINFO holds the event in AMD's encoding: INT1's #DB is an
            # exception, type 3 (APM 15.7.2, after Table 15-1).
            vectoring = asvm.decode(*asvm.encode(vectoring))
        if self.svm and isinstance(vectoring, Ev) and vectoring.type is EvType.NMI:
            # Whether the NMI mask stays set after a #VMEXIT during NMI
            # delivery: NOT FOUND for physical NMIs (APM 15.21.10 says vNMI
            # saves V_NMI_MASK=0; MANUALS open question 2): both allowed.
            if self.choose("APM: NMI mask after #VMEXIT during NMI delivery (not found)", 2):
                self.svm_nmi_mask = False
        if self.svm:
            info = asvm.exception_exit_info(ev.vector, ev.error_code or 0)
            self._vmexit(VmExit(asvm.exit_name(asvm.EXIT_EXCP_BASE + ev.vector), info, vectoring, addr,
                                length=length))
        else:
            self._vmexit(VmExit(avmx.reason_name(avmx.EXCEPTION_NMI), ev, vectoring, addr, length=length))

    def _soft_length(self, intercepted: Ev, vectoring, vectoring_length: int) -> int | None:
        """What an exception exit reports of an instruction's length
        (`VmExit.length`).  VMX, the VM-exit instruction length (SDM 27.2.4):
        an exit on a software exception (INT3 / INTO) gives its length; an
        exit during the delivery of a software interrupt or (privileged)
        software exception gives the instruction's length, or for an event
        injected by VM entry the VM-entry instruction length
        (`vectoring_length`); undefined for other exits (None).  An exit on
        INT1's #DB is treated like INT3's: the 059 edition lists only INT3
        and INTO, but KVM skips an intercepted ICEBP by this length and
        kvm-unit-tests x86/debug.c ("icebp") passes on hardware
        (`LevelState.restart` in impls.hw.cpu).  SVM: nRIP is saved for the
        INT3 / INTO exception intercepts and reset to zero for every other
        exit here (APM 15.7.1) -- exits during delivery included."""
        if self.svm:
            return arch.INSTRUCTION_LENGTH[intercepted.type] if intercepted.type is EvType.SOFT_EXCEPTION else None
        if intercepted.type in avmx.INSTRUCTION_TYPES:
            return arch.INSTRUCTION_LENGTH[intercepted.type]
        if isinstance(vectoring, Ev) and vectoring.type in avmx.INSTRUCTION_TYPES:
            return vectoring_length
        return None

    def _triple_fault(self) -> None:
        """A shutdown condition (SDM 6.15 #DF: a contributory or #PF while
        calling the #DF handler).  In L2: VMX always exits with reason 2 and
        invalid IDT-vectoring (SDM 25.2, 27.2.3 exclusion 4); SVM exits with
        SHUTDOWN when L1 intercepts it (APM 15.14.3), after which the VMCB
        state is undefined, so EXITINTINFO is not compared; otherwise the
        processor shuts down (APM 15.14.3, by implication).  In L1: shutdown,
        which KVM reports to userspace."""
        self.note("triple fault (SDM 6.15 #DF; in L2: SDM 25.2, APM 15.14.3)")
        if self.level == 2 and not self.svm:
            # SDM 27.3.3: RIP saved is what delivering the #DF would have
            # pushed, which SDM 6.15 (Interrupt 8) leaves undefined.
            self._vmexit(VmExit(avmx.reason_name(avmx.TRIPLE_FAULT), ret=Undefined("SDM 27.3.3, 6.15")))
        elif self.level == 2 and self.icpt.shutdown:
            self._vmexit(VmExit(asvm.exit_name(asvm.EXIT_SHUTDOWN), None, Undefined("APM 15.14.3"),
                                ret=Undefined("APM 15.14.3")))
        else:
            self.shutdown = self.step
            self._stop()

    # ---------------------------------------------------------- delivery --

    def deliver(self, ev: Ev, *, check_first: bool, injected_by_l1: bool = False, ret: int | Undefined = 0) -> None:
        """Deliver `ev` through the current level's IDT, following faults.

        SDM 6.15 Table 6-5 for what a fault during delivery becomes.  In L2,
        each exception raised (the first, if `check_first`, and every fault
        during delivery) is checked against L1's intercepts before any #DF
        merge, and a merged #DF against the #DF intercept: SDM 26.5.1.2 and
        27.2.3, APM 15.7.3 and 15.12.  An exit caused by a fault during
        delivery reports the event being delivered as IDT-vectoring info /
        EXITINTINFO (SDM 27.2.3; APM 15.7.2).

        `ret`: the return address `ev` pushes, as an offset from the
        instruction behind it (`Delivered.ret`); an exception met during the
        delivery pushes +0, the address of that instruction (SDM 6.5: a
        fault's return address is the faulting instruction; SDM 26.5.1.1:
        after a nested exception during an injection, the guest RIP without
        the instruction length), unless `ev`'s was undefined, and #DF pushes
        an undefined one (SDM 6.15, Interrupt 8: saved CS and EIP undefined).
        """
        if self.cur.halted:
            # SDM2 HLT: an event the halted level takes resumes execution,
            # with the instruction after the HLT as return address; an exit
            # during its delivery finds the processor active (SDM 27.1).
            self.note(f"{ev} wakes L{self.level} from the HLT state (SDM2 HLT)")
            self.cur.halted = False
        if self.level == 2 and check_first and ev.type in _EXCEPTIONS and self._intercepted(ev):
            # A pending exception userspace set (KVM_SET_VCPU_EVENTS, no
            # payload): a #PF's address is what CR2 holds (KVM's ABI: without
            # a payload CR2 is already written), so the exit reports it.
            self._exception_exit(ev, None, self.cr2(self.level) if ev.vector == PF else None,
                                 self._soft_length(ev, None, ret))
            return
        if self.holding:
            raise _Held(ev)
        if ev.type is EvType.NMI and not (self.svm and injected_by_l1):
            # NMI blocking starts with the delivery: an exit or fault during
            # it leaves NMIs blocked (SDM 27.1; SDM 6.7.1).  An NMI injected
            # through EVENTINJ does not block NMIs (APM 15.20).
            self.set_nmi_blocked(self.level, True)
        cur = ev
        for _ in range(STEP_BOUND):
            fault = self._delivery_fault(cur)
            if fault is None:
                self._delivered(cur, ret)
                return
            fvec, fec, faddr = fault
            fev = self._exc(fvec, fec)
            if self.level == 2 and self._intercepted(fev):
                self.note(f"{fev} during delivery of {cur} is intercepted by L1: exit with it as "
                          "IDT-vectoring (SDM 27.2.3, APM 15.7.2)")
                self._exception_exit(fev, cur, faddr, self._soft_length(fev, cur, ret))
                return
            if not isinstance(ret, Undefined):
                # Where the event's own return address is undefined (a #DB
                # that may be a fault or a trap, `_instruction_length`), so
                # is the one of a fault during its delivery: before the
                # instruction for a fault, after it for a trap (SDM 6.5).
                ret = 0
            if fvec == PF:
                self.set_cr2(faddr)  # SDM 4.7: CR2 is loaded when the #PF is raised
            merge = arch.second_exception(cur, fvec)
            self.note(f"{fev} during delivery of {cur}: {merge.value} (SDM Table 6-5)")
            if merge is Merge.SERIAL:
                cur = fev
            elif merge is Merge.DOUBLE_FAULT:
                df = self._exc(DF, 0)
                if self.level == 2 and self._intercepted(df):
                    self.note("L1 intercepts #DF: exit (SDM 27.2.3 exclusion 2; APM 15.7.3)")
                    self._exception_exit(df, self._df_exit_vectoring(cur), None)
                    return
                cur = df
            else:
                self._triple_fault()
                return
        raise Livelock("delivery did not end")

    def _df_exit_vectoring(self, first: Ev):
        """IDT-vectoring of an exit on a #DF made by merging.  VMX: invalid,
        SDM 27.2.3 exclusion 2.  SVM: the 15.7.3 pseudo-code sets EXITINTINFO
        only after the #DF intercept check, which suggests the prior event;
        the prose is silent (MANUALS open question 1): both are allowed."""
        if not self.svm:
            return None
        return (None, first)[self.choose("APM 15.7.3: EXITINTINFO on a merged #DF exit", 2)]

    def _delivery_fault(self, ev: Ev):
        """The fault delivering `ev` meets: the IDT gate (SDM2 INT n), then an
        armed MMU fault (the scenario's `delivery_fault`), then the stack."""
        lv = self.cur
        if self.forced_fault is not None:
            fault, self.forced_fault = self.forced_fault, None
            return fault
        gate = arch.gate_fault(lv.desc, ev, self.vendor)
        if gate is not None:
            return (gate[0], gate[1], 0)
        while lv.armed:
            fault = lv.armed.pop(0)
            if possible.delivery_fault_applies(fault[0], lv.desc.mode):
                return fault
        return arch.push_fault(lv.desc, ev, self.vendor)

    def _delivered(self, ev: Ev, ret: int | Undefined) -> None:
        """The handler is reached.  Every gate here is an interrupt gate: IF is
        cleared (SDM 6.12.1.2; real mode likewise, SDM 20.1.4), an STI/MOV-SS
        shadow ends with the delivery (SDM 6.8.3, and per the newer edition
        7.8.1).  The return address pushed is `ret` (`deliver`), undefined
        for #DF and #MC (SDM 6.15: Interrupt 8, "saved CS and EIP are
        undefined"; Interrupt 18, the saved instruction pointer is what
        IA32_MCG_STATUS's RIPV / EIPV say, not fixed by the architecture)."""
        lv = self.cur
        if lv.desc.mode is Mode.REAL or ev.type is not EvType.HW_EXCEPTION:
            ev = ev.without_error_code() if ev.error_code is not None else ev
        pushed: int | Undefined = ret
        if ev.type is EvType.HW_EXCEPTION and ev.vector in (DF, arch.MC):
            pushed = Undefined("SDM 6.15")
        trace = self.l1_trace if self.level == 1 else self.l2_trace
        trace.append((self.step, Delivered(self.level, ev, pushed)))
        lv.rflags_if = False
        lv.shadow = None

    # --------------------------------------------------------- boundary --

    def _boundary(self) -> bool:
        """Deliver, in priority order, what is deliverable at an instruction
        boundary; False when nothing was.  SDM 6.9 Table 6-2: an event already
        raised (here: one userspace set) first, then NMI (tier 5), then
        maskable interrupts (tier 6); lower-priority interrupts stay pending.
        VMX nested: NMI exiting before interrupts (SDM 25.5.2 ordering)."""
        if self.user_in_flight is not None:
            if self.holding:
                raise _Held(None)
            # An exception raised while an event was being delivered is a
            # fault during that delivery (SDM 6.15, Table 6-5; nested: SDM
            # 27.2.3, APM 15.7.2).
            ev, self.user_in_flight = self.user_in_flight, None
            if self.user_pending is not None:
                p, self.user_pending = self.user_pending, None
                self.forced_fault = (p.vector, p.error_code or 0, 0)
            self.deliver(ev, check_first=False, ret=self._instruction_length(ev))
            return True
        if self.user_pending is not None:
            ev, self.user_pending = self.user_pending, None
            self.deliver(ev, check_first=True, ret=self._instruction_length(ev))
            return True
        # The order of SMI and INIT matters only where both could be taken:
        # neither is held by GIF=0 (APM 15.17), nor INIT by VMX root (SDM 23.8).
        if self.smi_pending and self.init_pending and self.gif and (self.svm or self.level == 2) and \
                self.choose("SDM Table 6-2: SMI and INIT are one class, their order IMPL-SPECIFIC", 2) and \
                self._init_taken():
            return True
        if self.smi_pending and self._smi_taken():
            return True
        if self.init_pending and self._init_taken():
            return True
        lv = self.cur
        ctl = self.ctl if self.level == 2 else None  # L1's controls act only in L2
        if ctl is not None and ctl.nmi_window and self._nmi_window_exit(lv):
            return True
        if self.nmi_pending and self._nmi_ready(lv):
            return True
        if ctl is not None and ctl.intr_window and self._intr_window_exit(lv):
            return True
        if (self.irq_pending or self.extint_given is not None) and self._irq_ready(lv):
            return True
        return ctl is not None and ctl.v_irq and self._virtual_irq_ready(lv)

    def _nmi_window_exit(self, lv: LevelState) -> bool:
        """VMX NMI-window exiting in L2 (L1 set it with virtual NMIs, else its
        entry failed: `_entry_failure`): an exit, reason 8 (App. C), before
        any instruction when there is no virtual-NMI blocking and no MOV-SS
        blocking; a processor may also hold it under STI blocking (SDM 25.2,
        V3-1080: IMPL-SPECIFIC).  SMI and INIT (higher priority events; no
        debug traps or preemption timer here) come first, NMIs after it
        (SDM 25.2, 26.6.6).  Nothing is consumed."""
        if self.svm or self.level != 2 or not self.ctl.nmi_window:
            return False
        if lv.nmi_blocked or lv.shadow == "movss":
            return False
        if lv.shadow == "sti" and self.choose("SDM 25.2: NMI-window exit under STI blocking", 2):
            return False
        self._wake_for_window_exit(lv)
        self._vmexit(VmExit(avmx.reason_name(avmx.NMI_WINDOW)))
        return True

    def _intr_window_exit(self, lv: LevelState) -> bool:
        """VMX interrupt-window exiting in L2: an exit, reason 7 (App. C),
        before any instruction when RFLAGS.IF=1 and there is no STI or MOV-SS
        blocking (SDM 25.2, V3-1080).  NMIs and higher priority events come
        first, external interrupts after it, so a pending interrupt waits
        (SDM 25.2, 26.6.5).  Nothing is consumed."""
        if self.svm or self.level != 2 or not self.ctl.intr_window:
            return False
        if not lv.rflags_if or lv.shadow:
            return False
        self._wake_for_window_exit(lv)
        self._vmexit(VmExit(avmx.reason_name(avmx.INTERRUPT_WINDOW)))
        return True

    def _wake_for_window_exit(self, lv: LevelState) -> None:
        """A window exit from the HLT state: SDM 26.6.5 and 26.6.6 say these
        exits "wake the logical processor" that a VM entry left in HLT, but
        not whether the activity state the exit saves (SDM 27.3.4: the state
        "before the VM exit") is HLT or active.  SDM 27.1 answers HLT only
        for an event that causes the exit directly and for MTF ("a return to
        the active state occurs only after the VM exit completes"); a window
        exit is caused by a control, not an event.  Both allowed.
        (kvm-unit-tests' verify_intr_window_exit / verify_nmi_window_exit
        write the active state back without reading it.)"""
        if lv.halted and self.choose("SDM 26.6.5-6: activity saved by a window exit that wakes HLT (not said)", 2):
            lv.halted = False

    def _virtual_irq_ready(self, lv: LevelState) -> bool:
        """SVM: the virtual interrupt L1 left pending in vmcb12 (V_IRQ) is
        taken in L2 when GIF=1, L2's RFLAGS.IF=1 (it controls virtual
        interrupts whatever V_INTR_MASKING says, APM 15.21.1) and L2 is not
        in an interrupt shadow; its priority beats V_TPR (`asvm.L1_V_INTR_PRIO`)
        (APM 15.21.4).  Physical interrupts come first (APM 15.21.4), and so
        do NMIs (SDM Table 6-2).  With L1's VINTR intercept it is a #VMEXIT
        (VINTR, 64h) "just before the guest takes" it (APM 15.21.6), and
        V_IRQ stays set: it is cleared only after the intercept check, when
        the interrupt is dispatched through the IDT (APM 15.21.4).  The
        vector is V_INTR_VECTOR, with no INTACK to the local APIC."""
        if not self.svm or self.level != 2 or not self.ctl.v_irq:
            return False
        if not self.gif or not lv.rflags_if or lv.shadow:
            return False
        if self.ctl.vintr:
            self._vmexit(VmExit(asvm.exit_name(asvm.EXIT_VINTR)))
            return True
        self.ctl.v_irq = False
        self.deliver(Ev(EvType.EXT_INTR, asvm.L1_V_INTR_VECTOR), check_first=False)
        return True

    def _v_intr_masking(self) -> bool:
        """vmcb12's V_INTR_MASKING: L1 sets it with `l1.controls
        v_intr_masking=1`, and with the INTR intercept (`l1.intercept
        intr=1` always meant an L1 that masks physical interrupts with its
        own IF; impls.hw.environment, "L1, the hypervisor")."""
        return self.svm and (self.ctl.v_intr_masking or self.icpt.intr)

    def _physical_if(self, lv: LevelState) -> bool:
        """The IF that masks physical interrupts at the current level: in L2
        on SVM with V_INTR_MASKING the host's (L1's) RFLAGS.IF saved at
        VMRUN, else the running level's (APM 15.21.1)."""
        if self.level == 2 and self._v_intr_masking():
            return self.lv[1].rflags_if
        return lv.rflags_if

    def _acts_at_boundary(self, lv: LevelState) -> bool:
        """Whether a pending event would be taken or exit at the boundary
        after a VM entry, leaving the choices of STI blocking aside: then
        that boundary is the next event's, as for every event pending at an
        entry (`ev_l1_vmentry`)."""
        if self.user_in_flight or self.user_pending or self.smi_pending or self.init_pending:
            return True
        if self.nmi_pending and (self.icpt.nmi or not (self.nmi_blocked(2) or lv.shadow)):
            return True
        if self.irq_pending or self.extint_given is not None:
            if self.svm:
                return self._physical_if(lv) and (self.icpt.intr or not lv.shadow)
            return self.icpt.intr or (lv.rflags_if and not lv.shadow)
        return False

    @staticmethod
    def _instruction_length(ev: Ev) -> int | Undefined:
        """The return address an event the vCPU raised itself pushes: past
        the instruction for INT n, INT3, INTO and INT1 (SDM2 INT n/INTO/
        INT3/INT1: the return address is that of the next instruction; SDM
        6.5: a trap's return address follows the trapping instruction;
        `arch.INSTRUCTION_LENGTH`), the instruction itself for a fault (SDM
        6.5) and for an event taken between instructions.  A #BP / #OF
        userspace sets comes with RIP on its INT3 / INTO (impls.hw.
        environment, "The VMM").  A #DB an instruction raises (`exception
        #DB`, `l0.emulate fault=#DB`, userspace's) is a fault or a trap
        (SDM Table 6-1; SDM 17.3.1: instruction breakpoints and general
        detect are faults, data breakpoints and single steps traps), which
        the scenario does not say: its return address is undefined."""
        if ev.type is EvType.HW_EXCEPTION and ev.vector == arch.DB:
            return Undefined("SDM Table 6-1, 17.3.1: #DB fault or trap")
        return arch.INSTRUCTION_LENGTH.get(ev.type, 0)

    def _init_taken(self) -> bool:
        """A pending INIT at a boundary: SDM Table 6-2 puts INIT (tier 3)
        above NMI and maskable interrupts; neither IF nor an STI/MOV-SS
        shadow holds it (SDM 6.8.3 and Table 24-3 name interrupts, NMIs and
        debug exceptions, not INIT).  L1 is a hypervisor from the start.

        VMX: INIT is blocked in VMX root operation, so it stays pending while
        L1 runs (SDM 23.8); in VMX non-root operation it causes a VM exit,
        basic reason 3 (SDM 25.2, App. C), with no exit interruption or
        IDT-vectoring information since it is taken at a boundary; the exit
        consumes it and clears no other pending event (SDM 25.2).

        SVM: GIF=0 holds INIT pending (APM 15.17).  In L2 with L1's INIT
        intercept: #VMEXIT(INIT), and the INIT stays pending (APM 15.13),
        held by the GIF=0 the exit leaves.  Otherwise the INIT does what it
        does outside SVM: it resets the processor (SDM 9.1; the APM redirects
        INIT to #SX only when VM_CR.R_INIT is set, APM 15.21.8, which L1
        does not set)."""
        if self.svm:
            if not self.gif:
                return False
            if self.level == 2 and self.icpt.init:
                self._vmexit(VmExit(asvm.exit_name(asvm.EXIT_INIT)))
                return True
            self._reset()
            return True
        if self.level == 1:
            return False
        self.init_pending = False
        self._vmexit(VmExit(avmx.reason_name(avmx.INIT_SIGNAL)))
        return True

    def _smi_taken(self) -> bool:
        """A pending SMI at a boundary (SDM Table 6-2 tier 3, above NMI and
        maskable interrupts).  SVM: GIF=0 holds it (APM 15.17).  Whether
        STI or MOV-SS blocking holds it is IMPL-SPECIFIC (SDM2 STI: SMI may be
        blocked after STI; SDM 34.14.1: processors that do not recognise SMIs
        under STI / MOV-SS blocking need not save it).

        In L2 on SVM with L1's SMI intercept: #VMEXIT(SMI), exit code 62h
        (APM Table 15-33 via MANUALS 7).  Whether the SMI stays pending after
        that exit, as APM 15.13 says of INTR, NMI and INIT, is NOT FOUND for
        SMI: both are allowed.  On VMX, SMIs never exit to L1 under the
        default treatment: SMI delivery leaves VMX operation and RSM returns
        to it, restoring the VMX-critical state (STI / MOV-SS blocking,
        virtual-NMI blocking) and NMI blocking (SDM 34.14.1, 34.14.2).

        Otherwise SMM is entered and, by the scenario's definition of the
        SMM handler, left at once with RSM, which restores the interrupted
        state (SDM 34.3.1 and 34.14.2; APM 10.3): nothing changes but the
        SMI being consumed and the `SmiHandled` observation."""
        if self.svm and not self.gif:
            return False
        lv = self.cur
        if lv.shadow and self.choose("SDM 34.14.1, SDM2 STI: SMI under STI / MOV-SS blocking", 2):
            return False
        if self.svm and self.level == 2 and self.icpt.smi:
            self._vmexit(VmExit(asvm.exit_name(asvm.EXIT_SMI)))
            if self.choose("APM 15.13: an intercepted SMI stays pending (not found)", 2):
                self.smi_pending = False
            return True
        self.smi_pending = False
        self.note(f"SMI taken in L{self.level}: SMM entered and left by RSM (SDM 34.3.1, 34.14)")
        if lv.halted:
            # SDM 34.10 "Auto HALT Restart": an SMI taken in the HLT state
            # sets the SMRAM auto-HALT-restart bit; the handler leaves it set,
            # so RSM returns to the HLT state.
            self.note("SMI in the HLT state: RSM re-enters HLT (SDM 34.10 auto HALT restart)")
        self.l1_trace.append((self.step, SmiHandled(self.level)))
        return True

    def _reset(self) -> None:
        self.note(f"INIT taken in L{self.level}: the vCPU is reset (SDM 9.1); not followed further")
        self.init_pending = False
        self.l1_trace.append((self.step, Reset(self.level)))
        self.reset = True
        self._stop()

    def _stop(self) -> None:
        """The one place where the vCPU stops: a shutdown or a reset ends the
        scenario at once (`run_events` catches `Stopped`), so no event goes
        on executing after it -- an STI, MOV SS, CLI or IRET whose boundary
        shut the vCPU down does not execute."""
        raise Stopped

    def _shadow_blocks(self, lv: LevelState, rule: str) -> bool:
        """MOV-SS blocking holds NMIs and interrupts (SDM Table 24-3, 6.8.3),
        after STI, NMIs may or may not be held (STI in SDM2: IMPL-SPECIFIC)."""
        if lv.shadow == "movss":
            return True
        if lv.shadow == "sti":
            return bool(self.choose(rule, 2))
        return False

    def _nmi_ready(self, lv: LevelState) -> bool:
        if self.svm and not self.gif:
            return False  # APM 15.17: GIF=0 holds NMIs pending
        if self.level == 2 and self.icpt.nmi:
            # SDM 24.6.1 NMI exiting / APM 15.13 NMI intercept.  Whether STI or
            # MOV SS hold the exit is IMPL-SPECIFIC (SDM 25.4.1).
            if lv.shadow and self.choose("SDM 25.4.1: shadow vs NMI exiting", 2):
                return False
            if self.svm:
                # APM 15.13: an intercepted NMI stays pending after #VMEXIT.
                self._vmexit(VmExit(asvm.exit_name(asvm.EXIT_NMI)))
            else:
                # SDM 27.2.2: exit interruption info NMI; SDM 27.5.5: NMIs are
                # blocked in the host after an NMI-caused exit.
                self.nmi_pending -= 1
                self._vmexit(VmExit(avmx.reason_name(avmx.EXCEPTION_NMI), Ev(EvType.NMI, 2)))
                self.set_nmi_blocked(1, True)
            return True
        if self.nmi_blocked(self.level) or (lv.shadow and self._shadow_blocks(lv, "SDM2 STI: NMI after STI")):
            return False
        self.nmi_pending -= 1
        self.deliver(Ev(EvType.NMI, 2), check_first=False)
        return True

    def _irq_ready(self, lv: LevelState) -> bool:
        if self.svm and not self.gif:
            return False  # APM 15.17
        if self.level == 2 and self.icpt.intr:
            # VMX external-interrupt exiting ignores IF (SDM 24.6.1); SVM INTR
            # intercept with V_INTR_MASKING.  Without "acknowledge interrupt on
            # exit" the interrupt stays pending and the exit carries no info
            # (SDM 27.2.2); APM 15.13: it stays pending.  Shadow: IMPL-SPECIFIC
            # (SDM 25.4.1).
            if self.svm and not self._physical_if(lv):
                # APM 15.21.1: physical interrupts are masked by the host's
                # (L1's) IF with V_INTR_MASKING, else by the guest's.
                return False
            if lv.shadow and self.choose("SDM 25.4.1: shadow vs interrupt exiting", 2):
                return False
            name = asvm.exit_name(asvm.EXIT_INTR) if self.svm else avmx.reason_name(avmx.EXTERNAL_INTERRUPT)
            self._vmexit(VmExit(name))
            return True
        if not self._physical_if(lv) or lv.shadow:
            return False  # SDM 6.8.1 IF; 6.8.3 STI / MOV SS; APM 15.21.1
        # An ExtINT from the 8259 (KVM_INTERRUPT) is delivered without the
        # local APIC's priority logic, so before APIC vectors; among APIC
        # vectors the highest priority first (SDM 10.8.3, 10.5.1 ExtINT).
        if self.extint_given is not None:
            vector, self.extint_given = self.extint_given, None
        else:
            vector = max(self.irq_pending)
            self.irq_pending.discard(vector)
        self.deliver(Ev(EvType.EXT_INTR, vector), check_first=False)
        return True

    def _boundaries(self) -> None:
        for _ in range(STEP_BOUND):
            if not self._boundary():
                return
        raise Livelock(f"more than {STEP_BOUND} deliveries at one boundary")

    def _kvm_run(self) -> None:
        """The VMM is about to run the vCPU: it gives KVM_INTERRUPT the
        highest vector its PIC holds, unless KVM still has one (`impls.pic`,
        the same definition the KVM ports' driver uses)."""
        if self.extint_given is None:
            self.extint_given = self.pic.next_vector()

    def _execute(self, level: int | None = None) -> LevelState:
        """An instruction boundary, then the start of an instruction: the
        shadow of the previous one ends (SDM 6.8.3).  An instruction of
        `level` does not start if the boundary left that level."""
        self._kvm_run()
        self._boundaries()
        lv = self.cur
        if level is not None and self.level != level:
            return lv
        if lv.halted:
            raise NotExecuted
        lv.shadow = None
        self._instruction()
        return lv

    def _instruction(self) -> None:
        """A guest instruction starts executing (`impls.timer`): the timed
        events due after it become pending, to be recognised at the next
        boundary (SDM 6.9)."""
        for due in self.timers.tick():
            self._pend(due)

    def _pend(self, due) -> None:
        if due.nmi:
            self.ev_nmi(None)
        else:
            self.irq_pending.add(due.vector)

    # ------------------------------------------------------------ events --

    def run_events(self) -> None:
        try:
            for self.step, ev in enumerate(self.events):
                try:
                    getattr(self, HANDLER[ev.kind])(ev)
                except NotExecuted:
                    self.note(f"L{self.level} is halted: {ev.kind} does not execute (SDM2 HLT)")
            self.step = len(self.events)
            self.ev_run(None)
        except Stopped:
            pass

    def _level_state(self, ev) -> LevelState:
        return self.lv[int(ev.kind[1])]

    def _set_desc(self, ev, **changes) -> None:
        lv = self._level_state(ev)
        lv.desc = replace(lv.desc, **changes)

    def ev_l1_mode(self, ev):
        """A mode changes only by an instruction of its level (MOV to CR0,
        WRMSR to EFER), so the running level's mode change is an instruction:
        the boundary first, which delivers what is pending or in flight, then
        the change; if the boundary left that level (an exit to L1), the
        instruction never runs.  The other level's mode is configuration (L1
        writing vmcs12 / vmcb12 guest state), at once."""
        level = int(ev.kind[1])
        if level == self.level:
            self._execute(level)
            if self.level != level:
                return
        self._set_desc(ev, mode=Mode(ev.args[0]))

    ev_l2_mode = ev_l1_mode

    def ev_l1_idt(self, ev):
        vector, gate = ev.args
        gates = dict(self._level_state(ev).desc.gates)
        gates[vector] = Gate(gate)
        self._set_desc(ev, gates=tuple(sorted((v, g) for v, g in gates.items() if g is not Gate.OK)))

    ev_l2_idt = ev_l1_idt

    def ev_l1_idt_limit(self, ev):
        self._set_desc(ev, idt_entries=ev.args[0])

    ev_l2_idt_limit = ev_l1_idt_limit

    def ev_l1_stack(self, ev):
        self._set_desc(ev, stack_fault={"none": None, "#SS": arch.SS, "#PF": PF}[ev.args[0]])

    ev_l2_stack = ev_l1_stack

    def ev_l1_intercept(self, ev):
        if self.level == 1:
            self.icpt = Intercepts(*ev.args)

    def ev_hlt(self, ev):
        """HLT (1 byte).  In L2 with L1's HLT exiting (SDM 25.1.3: an exit,
        basic reason 12, App. C) or HLT intercept (APM 15.9: #VMEXIT(HLT),
        code 78h, App. C) it exits before executing, so the activity state
        saved is active and an STI / MOV-SS shadow is still in effect (as
        VMCALL's, `ev_l2_vmcall`).  Otherwise the level enters the HLT state
        (SDM2 HLT) until an event it takes wakes it (`deliver`, `_vmexit`);
        the return address of that event is the next instruction."""
        self._kvm_run()
        self._boundaries()
        lv = self.cur
        if lv.halted:
            raise NotExecuted
        self._instruction()
        if self.level == 2 and self.ctl.hlt:
            self._vmexit(VmExit(asvm.exit_name(asvm.EXIT_HLT) if self.svm else avmx.reason_name(avmx.HLT)))
            return
        lv.shadow = None
        lv.halted = True
        self.note(f"L{self.level} executes HLT: halted until an event it takes (SDM2 HLT)")

    def ev_l1_controls(self, ev):
        """L1 writes its controls into vmcs12 / vmcb12 (V_IRQ included:
        `v_irq=0` clears a virtual interrupt L2 has not taken)."""
        if self.level == 1:
            self.ctl = Controls(*ev.args)

    def ev_l1_vmentry(self, ev):
        """VMLAUNCH/VMRESUME or VMRUN with an optional injected event.  The
        language's `inject=#BP` is the encoding L1 writes, type 3 vector 3: on
        VMX a hardware exception (SDM 24.8.3 Table 24-13; EXT=1 for a fault
        during its delivery, SDM 26.5.1.2), on SVM INT3's trap (APM 15.20)."""
        if self.level != 1:
            return
        self._kvm_run()
        self._boundaries()
        if self.level != 1:
            return
        if self.cur.halted:
            raise NotExecuted
        self._instruction()
        shadow, self.cur.shadow = self.cur.shadow, None
        inject: Ev | None = ev.args[0]
        insn_len: int = ev["insn_len"]
        l2 = self.lv[2]
        # L1's writes of L2's state (VMWRITEs, vmcb12 stores) come before
        # its VMLAUNCH / VMRUN and stay whether or not the entry succeeds.
        activity = ev["activity"]
        if activity != "keep":  # never on SVM (fuzz.scenario.svm_vmentry)
            l2.halted = activity == "hlt"
        l1_prepares_entry(inject, l2, self.vendor)
        l1_writes_guest_state(l2, ev["interruptibility"], ev["if"], ev["pending_dbg"])
        if shadow == "movss" and not self.svm:
            # SDM2 VMLAUNCH/VMRESUME: events blocked by MOV SS -> VMfailValid(26).
            self.note("VM entry fails: events blocked by MOV SS (SDM2 VMLAUNCH/VMRESUME)")
            self.l1_trace.append((self.step, EntryFailed("VMfailValid(26)")))
            return
        failure = self._entry_failure(inject, insn_len, l2)
        if failure:
            self.l1_trace.append((self.step, EntryFailed(failure)))
            if failure.startswith("FAILED_ENTRY"):
                # SDM 26.7: a failed entry after the control checks loads host
                # state like a VM exit: RFLAGS cleared but bit 1 (SDM 27.5.3).
                self.cur.rflags_if = False
            elif self.svm:
                # APM 15.5.1: illegal guest state, illegal event injection
                # included, makes VMRUN take a #VMEXIT with VMEXIT_INVALID;
                # APM 15.6: a #VMEXIT clears GIF.
                self.gif = False
            return
        self._switch(2)
        if self.svm:
            self.gif = True  # APM 15.17: VMRUN sets GIF
        pending_db = self._pending_debug_after_entry(l2)
        if inject is not None:
            self._inject(inject, insn_len, l2)
        elif l2.halted:
            # SDM 26.6.2: a non-vectoring entry ends in the activity state of
            # the guest-state area.
            self.note("VM entry in the HLT activity state: L2 is halted (SDM 26.6.2)")
        if pending_db and self.level == 2:
            self.deliver(Ev(EvType.HW_EXCEPTION, arch.DB), check_first=True)
        windows = self.ctl.v_irq if self.svm else self.ctl.intr_window or self.ctl.nmi_window
        if self.level == 2 and windows and not self._acts_at_boundary(l2):
            # The window exits "occur immediately after VM entry" when their
            # conditions hold, after any injection (SDM 25.2, 26.6.5-6);
            # SVM's virtual interrupt is taken, or VINTR intercepted, at the
            # same first boundary (APM 15.21.4).  With nothing else pending
            # that boundary belongs to the entry.
            self._boundaries()

    def _inject(self, inject: Ev, insn_len: int, l2: LevelState) -> None:
        """Deliver the event L1's entry injects (SDM 26.5, APM 15.20), with
        the return address `_injected_return` gives it."""
        if inject.type is EvType.OTHER_EVENT:
            # SDM 24.8.3 Table 24-13 (V3-1066, MANUALS.md 6): type 7 with
            # vector 0 injects a pending MTF VM exit, taken before L2's first
            # instruction; nothing is delivered, and blocking by STI / MOV SS
            # stays (the entry is not vectoring, SDM 26.6.1).
            self._vmexit(VmExit(avmx.reason_name(avmx.MONITOR_TRAP_FLAG)))
            return
        # SDM 26.6.1: no STI/MOV-SS blocking after a vectoring entry; SDM
        # 26.6.2: the processor is active after it, whatever the activity
        # state field says.
        l2.shadow = None
        l2.halted = False
        if self.svm:
            # APM 15.20: EVENTINJ type 3 with vector 3 or 4 behaves like INT3 /
            # INTO; the event is what L1's EVENTINJ encodes; an NMI's vector
            # is ignored.
            inject = asvm.decode(*asvm.encode(inject))
            if inject.type is EvType.NMI:
                inject = Ev(EvType.NMI, 2)
        ev2 = self._exc(inject.vector, inject.error_code, inject.type) if inject.type in _EXCEPTIONS else inject
        if self.svm and l2.desc.mode is not Mode.REAL:
            # APM 15.20: EV is "set to 1 if the exception should push an
            # error code": EVENTINJ's EV decides, whatever the vector.
            ev2 = inject
        if self.svm and ev2 != inject and inject.error_code is not None and l2.desc.mode is Mode.REAL and \
                self.choose("APM 15.20: EVENTINJ's error code (EV=1) in real mode: NOT FOUND", 2):
            # SDM 20.1.4's "no error code in real mode" is Intel's; the APM
            # says neither whether VMRUN drops EVENTINJ's error code there nor
            # what EXITINTINFO then holds: both are allowed.
            ev2 = inject
        # SDM 26.5.1 / APM 15.20: the injected event is not intercept-checked;
        # faults during its delivery are.
        self.deliver(ev2, check_first=False, injected_by_l1=True, ret=self._injected_return(inject, insn_len))

    def _injected_return(self, inject: Ev, insn_len: int) -> int:
        """The return address an injected event pushes, as an offset from
        L2's RIP at the entry.  VMX: RIP + the VM-entry instruction length
        for software interrupts and (privileged) software exceptions (types
        4, 5, 6), RIP for the others (SDM 26.5.1.1).  SVM: next_rip, which
        L1 wrote as rip + `insn_len`, for a software interrupt (type 4) and
        for an exception of type 3 with vector 3 or 4, which "behaves like a
        trap raised by INT3 and INTO" (APM 15.20; software interrupts need
        the NextRIP field); RIP for the others.  The APM does not name
        next_rip as what the injection pushes; hardware-validated evidence
        does: the KVM selftest svm_nested_soft_inject_test.c has L1 inject
        INT 0x20 with next_rip = rip and asserts the handler's return RIP is
        L2's first instruction, then inject #BP (type 3) with next_rip = rip
        + 2 and asserts L2 resumes after the 2-byte UD2 (its bp_fired
        check); it passes on AMD hardware (read_file id 7061553748)."""
        if self.svm:
            return insn_len if inject.type in (EvType.SOFT_INT, EvType.SOFT_EXCEPTION) else 0
        return insn_len if inject.type in avmx.INSTRUCTION_TYPES else 0

    def _pending_debug_after_entry(self, l2: LevelState) -> bool:
        """VMX: L1 left a debug exception pending in L2's pending-debug-
        exceptions field (BS or B0; an entry with BS under STI / MOV-SS
        blocking has failed, `_entry_failure`).  What the processor does with
        it after VM entry (SDM 26.6.3) is on a page missing from the stored
        copy of the manual: NOT FOUND, so both are allowed, a #DB trap
        raised at L2's first instruction boundary, after an injected event
        reached its handler (subject to L1's #DB intercept), or nothing.  The
        field is consumed either way.  True: the #DB is raised."""
        if l2.pending_dbg is None:
            return False
        l2.pending_dbg = None
        return bool(self.choose("SDM 26.6.3: pending debug exceptions after VM entry (NOT FOUND)", 2))

    def _entry_failure(self, inject: Ev | None, insn_len: int, l2: LevelState) -> str | None:
        if not self.svm and self.ctl.nmi_window and not self.icpt.nmi:
            # SDM 26.2.1.1 (VM-execution control fields): with "virtual NMIs"
            # 0, "NMI-window exiting" must be 0 (and "virtual NMIs" needs
            # "NMI exiting", which `l1.intercept nmi=` sets with it);
            # VMfailValid, VM-instruction error 7 (SDM 30.4).
            return self._fails("NMI-window exiting without virtual NMIs (SDM 26.2.1.1)", "VMfailValid(7)")
        return self._injection_failure(inject, insn_len, l2)

    def _injection_failure(self, inject: Ev | None, insn_len: int, l2: LevelState) -> str | None:
        """VM-entry checks on the injected event and L2's blocking state.

        VMX: the control checks of SDM 26.2.1.3 (`avmx.entry_control_error`:
        types 1 and 7, vectors, the deliver-error-code bit, reserved bits
        30:12, error-code bits 31:16), VMfailValid(7); then SDM 26.3.1.4-5,
        exits with reason 33 and bit 31: blocking by STI and by MOV SS
        together, blocking by STI with RFLAGS.IF=0 (both SDM 26.3.1.5 on
        V3-1104, a page missing from the stored copy: MANUALS.md 6 and
        newer editions' 27.3.1.5), an external interrupt injected with IF=0
        (26.3.1.4) or under STI / MOV-SS blocking, an NMI under MOV-SS
        blocking, and (IMPL-SPECIFIC) under STI blocking (V3-1105); a pending
        single-step (BS) with STI or MOV-SS blocking while TF=0, which it
        always is here (V3-1105, "Pending debug exceptions").  The monitor
        trap flag is supported: KVM exposes it to L1 (impls.hw.environment).

        SVM (APM 15.20, APMe): VMEXIT_INVALID for a reserved type, for type 3
        with a vector that is no exception (vector 2 named; vectors 32-255;
        the vectors Intel reserves or AMD lacks: `_svm_exception_vector`),
        for an event impossible in the guest's mode (#BR in 64-bit mode).
        Reserved bits 30:12 ("SBZ") and EV on a type other than exception
        the APM leaves undefined: the scenario leaves the architecture.  The
        consistency checks of APM 15.5.1 say nothing of INTERRUPT_SHADOW
        (APMe): no check on it."""
        if self.svm:
            return self._svm_entry_failure(inject, l2)
        protected = l2.desc.mode is not Mode.REAL
        if inject is not None and avmx.entry_control_error(inject, protected):
            return self._fails("the injected event fails the control checks (SDM 26.2.1.3)",
                               f"VMfailValid({avmx.ENTRY_INVALID_CONTROL_FIELD})")
        # SDM 26.2.1.3: for types 4, 5 and 6 the VM-entry instruction length
        # is 0 to 15, and 0 only where IA32_VMX_MISC bit 30 is 1 -- a
        # capability of the processor L1 runs on, which the scenario does
        # not fix (IMPL-SPECIFIC): with length 0 both outcomes are allowed.
        if inject is not None and inject.type in avmx.INSTRUCTION_TYPES and (insn_len > 15 or (
                insn_len == 0 and self.choose(
                    "SDM 26.2.1.3: zero VM-entry instruction length without IA32_VMX_MISC[30]", 2))):
            return self._fails("VM-entry instruction length out of range (SDM 26.2.1.3)",
                               f"VMfailValid({avmx.ENTRY_INVALID_CONTROL_FIELD})")
        bad = avmx.reason_name(avmx.FAILED_VMENTRY | avmx.INVALID_GUEST_STATE)
        if l2.shadow == "both" or (l2.shadow == "sti" and not l2.rflags_if):
            return self._fails("interruptibility state inconsistent (SDM 26.3.1.5)", bad)
        if l2.pending_dbg == "bs" and l2.shadow:
            return self._fails("pending single-step under STI / MOV-SS blocking with TF=0 (SDM 26.3.1.5)", bad)
        if inject is None:
            return None
        if l2.halted and not avmx.hlt_state_accepts(inject):
            return self._fails("an event the HLT activity state does not accept is injected (SDM 26.3.1.5)", bad)
        if inject.type is EvType.EXT_INTR and (not l2.rflags_if or l2.shadow):
            return self._fails("an external interrupt injected while blocked (SDM 26.3.1.4-5)", bad)
        if inject.type is EvType.NMI:
            if l2.shadow == "movss":
                return self._fails("an NMI injected under MOV-SS blocking (SDM 26.3.1.5)", bad)
            if l2.shadow == "sti" and self.choose("SDM 26.3.1.5: NMI injection under STI blocking", 2):
                return self._fails("an NMI injected under STI blocking (SDM 26.3.1.5, IMPL-SPECIFIC)", bad)
        return None

    def _fails(self, rule: str, reason: str) -> str:
        """A VM entry that fails: noted with the rule it breaks (notes are
        never compared; they say why, and name the cause of an
        implementation that enters anyway, `fuzz.causes`)."""
        self.note(f"VM entry fails: {rule}")
        return reason

    def _svm_exception_vector(self, vector: int) -> bool:
        """Whether EVENTINJ type 3 may carry `vector` (APM 15.20: "a vector
        that does not correspond to an exception ... includes vector 2").
        The APM's own exception table (vol. 2 ch. 8) is NOT FOUND: the
        vectors SDM Table 6-1 defines as exceptions, #CP included, are;
        2 and 32-255 are not; for 9 (#CSO), 15, 20 (#VE, Intel only) and
        22-31 (AMD defines #HV, #VC, #SX among them) both are allowed."""
        if vector == arch.NMI_VECTOR or vector > 31:
            return False
        if vector in (9, 15, 20) or vector >= 22:
            return not self.choose("APM 15.20: EVENTINJ exception vector 9/15/20/22-31 (table NOT FOUND)", 2)
        return True

    def _svm_entry_failure(self, inject: Ev | None, l2: LevelState) -> str | None:
        if inject is None:
            return None
        invalid = asvm.exit_name(asvm.EXIT_ERR)
        if int(inject.type) not in asvm.EVTINJ_TYPES:
            return self._fails("EVENTINJ with a reserved type (APM 15.20)", invalid)
        if inject.type is EvType.HW_EXCEPTION and not self._svm_exception_vector(inject.vector):
            return self._fails("EVENTINJ type 3 with a vector that is no exception (APM 15.20)", invalid)
        if inject.type is EvType.HW_EXCEPTION and inject.vector == arch.BR and l2.desc.mode is Mode.LONG:
            return self._fails("EVENTINJ of an exception impossible in the guest's mode (APM 15.20)", invalid)
        if inject.reserved:
            self._outside("EVENTINJ with reserved bits 30:12 set (APM 15.20: SBZ)")
        elif inject.error_code is not None and inject.type is not EvType.HW_EXCEPTION:
            self._outside("EVENTINJ's EV on a type other than exception (APM 15.20 defines EV for exceptions)")
        return None

    def ev_l2_vmcall(self, ev):
        """VMCALL (VMX, exit reason 18, App. C) / VMMCALL (SVM exit 0x81, when
        intercepted; L1 as a hypervisor intercepts it).  The exit comes
        before the instruction completes, so an STI / MOV-SS shadow is still
        in effect when it is saved; L1 skipping the instruction ends it
        (`impls.l1.handle_exit`)."""
        if self.level != 2:
            return
        self._kvm_run()
        self._boundaries()
        if self.level != 2:
            return
        if self.cur.halted:
            raise NotExecuted
        self._instruction()
        name = asvm.exit_name(asvm.EXIT_VMMCALL) if self.svm else avmx.reason_name(avmx.VMCALL)
        self._vmexit(VmExit(name))

    def _raise(self, vector: int, ec: int, cr2: int) -> None:
        """The current instruction raises `vector` (an exception, not an INT n;
        #BP and #OF as INT3 / INTO: `_raised`), as its mode allows
        (`possible.raised`: BOUND and INTO are #UD in 64-bit mode)."""
        self._execute()
        vector = possible.raised(vector, self.cur.desc.mode)
        if vector is None:
            self.note("an exception no instruction raises in real mode: the instruction completes (possible.raised)")
            return
        if self._impossible_exception(vector):
            return
        self._take(self._raised(vector, ec), cr2)

    def _take(self, ev: Ev, cr2: int = 0) -> None:
        """The event `ev` the executing instruction raises: an exception, or
        the software interrupt of INT n.  In L2, one L1 intercepts exits
        (`_intercepted`: SDM 25.2, APM 15.12); INT n never does.  A #PF loads
        CR2 unless intercepted (SDM 27.1, APM 15.12).  An intercepted INT3 /
        INTO exits with type 6 on VMX, INT1 with type 5 (SDM 27.2.2, `arch.INT1`);
        an exit during the delivery of one of these or of INT n reports it as
        IDT-vectoring type 6 / 5 / 4 (SDM 27.2.3), on SVM as EXITINTINFO
        type 3, or 4 for INT n (APM 15.7.2).  L2 does not execute the
        instruction again after such an exit: what L1 does next is the
        scenario's (impls.hw.environment, "L1, the hypervisor").  The
        VM-exit instruction length (SDM 27.2.4) is `_soft_length`, the
        return address pushed `_instruction_length`.  The gate
        DPL check of INT n / INT3 / INTO (SDM2 INT n) never fails here: the
        levels run at CPL 0."""
        if self.level == 2 and self._intercepted(ev):
            self.note(f"{ev} raised in L2 is intercepted by L1 (SDM 25.2 exception bitmap, APM 15.12)")
            self._exception_exit(ev, None, cr2, self._soft_length(ev, None, 0))
            return
        if ev.vector == PF and ev.type is EvType.HW_EXCEPTION:
            self.set_cr2(cr2)
        self.deliver(ev, check_first=False, ret=self._instruction_length(ev))

    def ev_exception(self, ev):
        self._raise(*ev.args)

    def ev_int(self, ev):
        """INT n: a software interrupt (`arch.soft_interrupt`)."""
        self._execute()
        self._take(arch.soft_interrupt(ev.args[0]))

    def ev_int3(self, ev):
        """INT3: #BP, a software exception (`arch.raised_type`)."""
        self._raise(arch.BP, 0, 0)

    def ev_into(self, ev):
        """INTO with OF=1: #OF, a software exception; #UD in 64-bit mode
        (`possible.raised`)."""
        self._raise(arch.OF, 0, 0)

    def ev_icebp(self, ev):
        """ICEBP / INT1: #DB, a privileged software exception (`arch.INT1`)."""
        self._execute()
        self._take(arch.INT1)

    def ev_delivery_fault(self, ev):
        vector, ec, cr2 = ev.args
        if not self._impossible_exception(vector):
            self.cur.armed.append((vector, ec, cr2))

    def ev_sti(self, ev):
        """STI: if IF was 0, interrupts stay blocked for one more instruction
        (SDM2 STI)."""
        lv = self._execute()
        if not lv.rflags_if:
            lv.shadow = "sti"
        lv.rflags_if = True

    def ev_cli(self, ev):
        self._execute().rflags_if = False

    def ev_mov_ss(self, ev):
        """MOV SS blocks interrupts for the next instruction; of consecutive
        ones only the first is sure to (SDM 6.8.3)."""
        was = self.cur.shadow
        lv = self._execute()
        if was == "movss" and self.choose("SDM 6.8.3: consecutive MOV SS", 2):
            return
        lv.shadow = "movss"

    def ev_iret(self, ev):
        """IRET unblocks NMIs (SDM 6.7.1); in L2 with NMI exiting, virtual-NMI
        blocking, which IRET clears likewise (SDM 25.3)."""
        self._execute()
        self.set_nmi_blocked(self.level, False)

    def _gif(self, ev, value: bool):
        """STGI / CLGI (APM 15.17).  On VMX they are invalid opcodes: #UD."""
        if self.level != 1:
            return
        if not self.svm:
            self._raise(arch.UD, 0, 0)
            return
        self._execute()
        self.gif = value

    def ev_stgi(self, ev):
        self._gif(ev, True)

    def ev_clgi(self, ev):
        self._gif(ev, False)

    def ev_l0_mmu_fixup(self, ev):
        """Invisible to the guest: L0 fixes its own fault and resumes."""

    def ev_l0_emulate(self, ev):
        """An emulated instruction is an instruction: it may fault."""
        fault, ec, cr2 = ev.args
        if fault is None:
            self._execute()
        else:
            self._raise(fault, ec, cr2)

    def ev_l0_immediate_exit(self, ev):
        """Invisible to the guest."""

    def ev_irq(self, ev):
        self.irq_pending.add(ev.args[0])

    def ev_nmi(self, ev):
        """How many NMIs are held while one is pending: NOT FOUND outside SMM
        (MANUALS open question 6); one or two are allowed."""
        if self.nmi_pending == 0:
            self.nmi_pending = 1
        elif self.nmi_pending == 1 and self.choose("NMIs held while one is pending (not found)", 2):
            self.nmi_pending = 2

    def ev_init(self, ev):
        """An INIT signal becomes pending.  Modelling decision: INIT is a
        signal, pending or not; the manuals count no INITs, so a second one
        while one is pending changes nothing."""
        self.init_pending = True

    def ev_smi(self, ev):
        """An SMI becomes pending; like INIT, a signal that is pending or not
        (modelling decision: the manuals count no SMIs outside SMM)."""
        self.smi_pending = True

    def ev_user_set_exception(self, ev):
        """Userspace says the vCPU raised (pending) or was delivering
        (injected) this exception; the vCPU has one exception, so it replaces
        an earlier one.  A pending one is raised at the next boundary and is
        subject to L1's intercepts; one in flight is delivered without that
        check.  A pending exception beside an NMI or interrupt in flight was
        raised during that delivery (`_boundary`).  KVM_SET_VCPU_EVENTS names a
        vector, not a type: the vCPU's #BP / #OF is INT3's / INTO's software
        exception (`_raised`), the only source of either (SDM Table 6-1).  One
        a vCPU in this mode cannot have raised is not set
        (`possible.exception_settable`)."""
        vector, ec, injected = ev.args
        if not self._settable_in_hlt(ev):
            return
        if not possible.exception_settable(vector, self.cur.desc.mode):
            self.note(f"userspace set {arch.mnemonic(vector)}, which no instruction raises in "
                      f"{self.cur.desc.mode.value} mode: not set (possible.exception_settable)")
            return
        if self._impossible_exception(vector):
            return
        exc = self._raised(vector, ec)
        if not self.svm and (exc.error_code or 0) >> 16:
            # Bits 31:16 of the error codes these exceptions push are
            # reserved on Intel: the selector format (SDM 6.13, Figure 6-7)
            # and #PF's (SDM 4.7, Figure 4-12); KVM's ABI holds 32 bits,
            # which AMD CPUs use (KVM 6.1's vmx_inject_exception says as
            # much), so on SVM the error code is as given.
            self._outside(f"userspace set {exc}: no Intel CPU pushes error-code bits 31:16")
        if self.user_in_flight is not None and self.user_in_flight.type in _EXCEPTIONS:
            self.user_in_flight = None
        self.user_pending = None
        if injected:
            self._set_in_flight(exc)
        else:
            self.user_pending = exc

    def _settable_in_hlt(self, ev) -> bool:
        """Userspace describes no exception raised and no event in flight in
        a halted level (`possible.raised_or_in_flight_possible`)."""
        if possible.raised_or_in_flight_possible(self.cur.halted):
            return True
        self.note(f"userspace set {ev.kind} in the HLT state, where nothing is raised or in flight: not set "
                  "(possible.raised_or_in_flight_possible)")
        return False

    def _set_in_flight(self, ev: Ev) -> None:
        """A CPU delivers one event at a time: userspace claiming two in flight
        at once describes a state no CPU can be in."""
        if self.user_in_flight is not None and self.user_in_flight != ev:
            self._outside(f"userspace set {ev} in flight beside {self.user_in_flight}")
        self.user_in_flight = ev

    def _in_flight_possible(self, ev: Ev) -> bool:
        """Userspace sets an NMI or interrupt in flight only where a CPU could
        have recognised it (`possible.in_flight_possible`); otherwise the
        event does nothing."""
        lv = self.cur
        if possible.in_flight_possible(ev.type, lv.rflags_if, lv.shadow, self.nmi_blocked(self.level)):
            return True
        self.note(f"userspace set {ev} in flight where no CPU recognises it: not set "
                  "(possible.in_flight_possible)")
        return False

    def ev_user_set_nmi(self, ev):
        if not ev.args[0]:
            self.ev_nmi(ev)
        elif self._settable_in_hlt(ev) and self._in_flight_possible(Ev(EvType.NMI, 2)):
            self._set_in_flight(Ev(EvType.NMI, 2))

    def ev_user_set_irq(self, ev):
        """An interrupt in flight (`_in_flight_possible`: IF=1, no shadow)."""
        irq = Ev(EvType.EXT_INTR, ev.args[0])
        if self._settable_in_hlt(ev) and self._in_flight_possible(irq):
            self._set_in_flight(irq)

    def ev_user_interrupt(self, ev):
        self.pic.raise_vector(ev.args[0])

    def ev_user_nmi(self, ev):
        self.ev_nmi(ev)

    def ev_user_migrate(self, ev):
        """Save/restore changes nothing the guest can see."""

    def ev_timer(self, ev):
        """A timed event source (`impls.timer`): the interrupt or NMI
        becomes pending after `after` more guest instructions."""
        after, nmi, vector = ev.args
        for due in self.timers.arm(after, nmi, vector):
            self._pend(due)

    #: Machine attributes a `user.run_exit` trial does not save: the
    #: scenario, the choices and the step.
    _FIXED = frozenset({"cfg", "vendor", "svm", "events", "answers", "asked", "step"})

    def ev_user_run_exit(self, ev):
        """KVM_RUN returning to userspace before the guest executes an
        instruction (a signal, -EINTR).  The guest executes nothing, so
        nothing completes that needs guest code; the vCPU may still have
        reached its instruction boundary and begun on what is pending there
        (SDM 6.9: events are recognised at instruction boundaries; when the
        VMM's thread is interrupted is not architectural).  So every prefix
        of the boundary's events, in the order `_boundary` takes them, is
        allowed: after each one taken (an exit to L1, an SMI, an INIT) the
        run may return or go on; an event to deliver through an IDT is at
        most held in flight (recognised, its delivery not begun: what
        KVM_GET_VCPU_EVENTS calls injected, an interrupt acknowledged),
        and the run returns with it.  An event in flight already may also
        be delivered (its handler is reached, none of its instructions
        runs), the boundary going on to what follows it (an INIT, say); a
        newly recognised one ends the run held, the one ending offered
        there (its delivery as well would be allowed, but no KVM does it,
        and each option doubles the reference's runs).  Nothing the guest
        can see changes otherwise: a later `run` delivers what is held.  With `immediate`
        (kvm_run->immediate_exit) the vCPU does not run at all: nothing
        changes."""
        self._kvm_run()
        if ev.args[0]:
            return
        for _ in range(STEP_BOUND):
            saved = self._save()
            took, held, stopped = self._trial(hold=True)
            if held and not took:
                # In flight already: stopping leaves it so; going on delivers
                # it (no handler instruction runs), and the boundary goes on.
                vars(self).update(saved)
                saved = self._save()
                took, held, stopped = self._trial(hold=False)
            if not took or not self.choose("user.run_exit: KVM_RUN returns before the vCPU takes its boundary's "
                                           "next event, or after (SDM 6.9)", 2):
                vars(self).update(saved)
                return
            if stopped:
                raise Stopped
            if held:
                self.note(f"user.run_exit: {self.user_in_flight} held in flight, not delivered")
                return
        raise Livelock("user.run_exit did not reach a quiescent point")

    def _trial(self, hold: bool) -> tuple[bool, bool, bool]:
        """One `_boundary` of `user.run_exit`, holding (`hold`) the event it
        would deliver: (took something, held an event, stopped the vCPU)."""
        self.holding = hold
        try:
            return self._boundary(), False, False
        except _Held as h:
            if h.ev is not None:
                self.user_in_flight = h.ev
            return h.ev is not None, True, False
        except Stopped:
            return True, False, True
        finally:
            self.holding = False

    def _save(self) -> dict:
        """What a boundary may change, copied (`ev_user_run_exit` puts it
        back): the scalars, each level's state, the pending interrupts and
        the traces.  The intercepts, the PIC and the timers change only by
        events and instructions, never at a boundary."""
        saved = {k: v for k, v in vars(self).items() if k not in self._FIXED}
        saved["lv"] = {n: replace(lv, armed=list(lv.armed)) for n, lv in self.lv.items()}
        saved["cur"] = saved["lv"][self.level]  # `cur` is the running level's state: the copy's, not the old one
        for name in ("l1_trace", "l2_trace", "notes"):
            saved[name] = list(saved[name])
        saved["irq_pending"] = set(self.irq_pending)
        return saved

    def ev_user_get_events(self, ev):
        """KVM_GET_VCPU_EVENTS as the ABI describes it
        (Documentation/virt/kvm/api.rst 4.31 and 4.32, read in gregkh/linux
        at 4055f250a329; its KVM_CAP_EXCEPTION_PAYLOAD entry, and the commit
        that added the fields, 59073aaf6de0: without the cap "the original
        ABI is preserved, and the exception.injected field is set for either
        pending or injected exceptions"), from the
        architectural state: an exception raised and not yet delivered is
        pending (with the cap; injected without it), one being delivered is
        injected, as is an NMI or interrupt in flight; NMIs pending; NMI
        blocking (masked); STI / MOV-SS blocking (interrupt.shadow); an SMI
        pending; an INIT held (latched_init).  No exception the language
        raises carries a payload (`user.set_exception` gives none).  Where
        the ABI does not say, each reading is allowed:

        * a software exception (INT3's #BP, INTO's #OF) pending or in
          flight: reported, or left out with the instruction to execute
          again (api.rst names no rule for them);
        * an NMI in flight: masked as NMI blocking is now, or masked
          already (blocking starts with its delivery, SDM 6.7.1);
        * two NMIs pending: nmi.pending 1 or 2 (api.rst does not say
          whether nmi.pending counts);
        * a shadow on SVM: its own bit or both (the VMCB has one
          INTERRUPT_SHADOW bit, APM 15.21.5 / Table B-1, which cannot tell
          STI from MOV SS)."""
        payload_cap = "exception_payload" in self.cfg.caps
        flight, pending = self.user_in_flight, self.user_pending
        exc_flight = flight if flight is not None and flight.type in _EXCEPTIONS else None
        exc, exc_pending, exc_injected = None, False, False
        for e, is_pending in ((pending, True), (exc_flight, False)):
            if e is None:
                continue
            if e.type is EvType.SOFT_EXCEPTION and self.choose(
                    "api.rst 4.31: a software exception held, reported or left out (not found)", 2):
                continue
            exc = Ev(EvType.HW_EXCEPTION, e.vector, e.error_code)
            if is_pending and payload_cap:
                exc_pending = True
            else:
                exc_injected = True
        nmi_flight = flight is not None and flight.type is EvType.NMI
        masked = self.nmi_blocked(self.level)
        if nmi_flight and not masked and self.choose("SDM 6.7.1: an NMI in flight already masks NMIs", 2):
            masked = True
        nmis = self.nmi_pending
        if nmis == 2 and self.choose("api.rst 4.31: nmi.pending of two NMIs, 1 or 2 (not found)", 2):
            nmis = 1
        shadow = {None: 0, "sti": SHADOW_STI, "movss": SHADOW_MOV_SS}[self.cur.shadow]
        if self.svm and shadow and self.choose("APM 15.21.5: one INTERRUPT_SHADOW bit, STI or MOV SS", 2):
            shadow = SHADOW_STI | SHADOW_MOV_SS
        irq = flight.vector if flight is not None and flight.type is EvType.EXT_INTR else None
        self.l1_trace.append((self.step, VcpuEvents(
            exception=exc, exception_pending=exc_pending, exception_injected=exc_injected,
            nmi_injected=nmi_flight, nmi_pending=nmis, nmi_masked=masked, interrupt=irq, shadow=shadow,
            smi_pending=self.smi_pending, latched_init=self.init_pending)))

    def ev_run(self, ev):
        self._kvm_run()
        for _ in range(STEP_BOUND):
            self._boundaries()
            lv = self.cur
            if not lv.shadow or lv.halted:
                return  # quiescent: a halted level waits for an event (SDM2 HLT)
            lv.shadow = None  # a no-op instruction ends the shadow
        raise Livelock("run did not reach a quiescent point")

    # ------------------------------------------------------------ result --

    def outcome(self, livelock: str | None = None) -> Outcome:
        lv = self.cur
        final = None if self.reset else FinalState(
            level=self.level,
            nmi_pending=self.nmi_pending,
            irq_pending=tuple(sorted(self.irq_pending | set(self.pic.held)
                                     | ({self.extint_given} if self.extint_given is not None else set()))),
            nmi_blocked=self.nmi_blocked(self.level),
            interrupt_shadow=bool(lv.shadow),
            interrupts_enabled=lv.rflags_if,
            cr2=self.cr2(self.level),
            init_pending=self.init_pending,
            smi_pending=self.smi_pending,
            halted=lv.halted,
        )
        return Outcome(tuple(self.l1_trace), tuple(self.l2_trace), self.shutdown, final, (), livelock,
                       tuple(self.notes), self.undefined_from)
