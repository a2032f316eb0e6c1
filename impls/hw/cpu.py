"""The simulated physical CPU beneath a KVM port.

KVM (L0) programs a control block -- a VMCS (`Vmcs`) on Intel, a VMCB
(`Vmcb`) on AMD -- and enters it; `Cpu.vmx_run` / `Cpu.svm_run` then do what
the hardware does: check and deliver the injected event through the guest's
IDT (following faults, merging them per SDM Table 6-5 where the control block
does not intercept them), open interrupt / NMI windows, honour an immediate
exit, execute the guest's next instruction (a scenario event), and exit to L0
with exit reason, exit interruption information, IDT-vectoring information /
EXITINTINFO and exit qualification / EXITINFO as the manuals specify.  The
level the control block runs (L1 on vmcs01 / the L1 VMCB, L2 on vmcs02 / the
VMCB rewritten for L2) is `ctl.level`.

The architectural guest state of each level (`LevelState`) lives here, not in
the control blocks: it plays the guest-state area of whichever control block
runs that level, and L2's state persists across nested exits as vmcs12 /
vmcb12 would carry it.  KVM reads and writes it through its accessors
(`vmx_get_interrupt_shadow`, `svm_set_nmi_mask`, ...).

Everything this module takes from the scenario instead of modelling is named
in `impls.hw.environment`.  Shared by every KVM port.
"""
from __future__ import annotations

from dataclasses import replace

from impls import arch
from impls.api import Delivered
from impls.arch import DB, DF, PF, UD, BR, DescriptorState, Ev, EvType, Merge, Mode, possible
from impls.arch import svm as asvm
from impls.arch import vmx as avmx
from impls.hw.environment import Environment, Origin

#: Bound on the faults met while delivering one event.
DELIVERY_BOUND = 16
#: The vectors whose VM-entry injection as a hardware exception needs the
#: deliver-error-code bit on this CPU, which raises #CP with an error code
#: (impls.hw.environment).
_HW_ERROR_CODE_VECTORS = avmx.ENTRY_ERROR_CODE_VECTORS | {21}
#: The vectors this SVM CPU takes as exceptions in EVENTINJ type 3 (APM
#: 15.20): those of SDM Table 6-1 but NMI's 2, #CSO's 9 and Intel's #VE (20);
#: 15 and 22-31 are reserved here (impls.hw.environment).
_SVM_EXCEPTIONS = frozenset(v for v in range(32) if v not in (2, 9, 15, 20) and v < 22)

# ------------------------------------------------------------ VMX encodings --

EXIT_REASON_EXCEPTION_NMI = 0
EXIT_REASON_EXTERNAL_INTERRUPT = 1
EXIT_REASON_TRIPLE_FAULT = 2
EXIT_REASON_INTERRUPT_WINDOW = 7
EXIT_REASON_NMI_WINDOW = 8
EXIT_REASON_HLT = 12
EXIT_REASON_VMCALL = 18
EXIT_REASON_VMLAUNCH = 20
EXIT_REASON_VMRESUME = 24
EXIT_REASON_INVALID_STATE = 33
EXIT_REASON_MONITOR_TRAP_FLAG = 37
EXIT_REASON_EPT_VIOLATION = 48
EXIT_REASON_EPT_MISCONFIG = 49
EXIT_REASON_PREEMPTION_TIMER = 52
VMX_EXIT_REASONS_FAILED_VMENTRY = 0x80000000
#: Exit qualification bit 12 (EPT violation) / exit interruption info bit 12:
#: NMI unblocking due to IRET (SDM 27.2.1, 27.2.2).
INTR_INFO_UNBLOCK_NMI = 1 << 12
#: VM-instruction error numbers (SDM 30.4).
VMXERR_ENTRY_INVALID_CONTROL_FIELD = 7

# ------------------------------------------------------------ SVM encodings --

INTERCEPT_INTR = 96
INTERCEPT_NMI = 97
INTERCEPT_SMI = 98
INTERCEPT_INIT = 99  # word 3 bit 3 (svm.h: INTR, NMI, SMI, INIT, VINTR, ...)
INTERCEPT_VINTR = 100
INTERCEPT_RSM = 115
INTERCEPT_HLT = 120
INTERCEPT_IRET = 116
INTERCEPT_SHUTDOWN = 127
INTERCEPT_VMRUN = 128
INTERCEPT_VMMCALL = 129
INTERCEPT_STGI = 132
INTERCEPT_CLGI = 133

SVM_EXIT_EXCP_BASE = 0x40
SVM_EXIT_INTR = 0x60
SVM_EXIT_NMI = 0x61
SVM_EXIT_SMI = 0x62
SVM_EXIT_INIT = 0x63
SVM_EXIT_VINTR = 0x64
SVM_EXIT_RSM = 0x73
SVM_EXIT_IRET = 0x74
SVM_EXIT_HLT = 0x78
SVM_EXIT_SHUTDOWN = 0x7F
SVM_EXIT_VMRUN = 0x80
SVM_EXIT_VMMCALL = 0x81
SVM_EXIT_STGI = 0x84
SVM_EXIT_CLGI = 0x85
SVM_EXIT_NPF = 0x400
SVM_EXIT_ERR = -1

#: int_ctl (APM App. B, Table B-1; 15.21): V_TPR bits 3:0, V_IRQ bit 8,
#: V_INTR_PRIO bits 19:16, V_IGN_TPR bit 20, V_INTR_MASKING bit 24.
V_TPR_MASK = 0xF
V_IRQ_MASK = 1 << 8
V_INTR_PRIO_SHIFT = 16
V_INTR_PRIO_MASK = 0xF << V_INTR_PRIO_SHIFT
V_IGN_TPR_MASK = 1 << 20
V_INTR_MASKING_MASK = 1 << 24

#: Where each level's RIP starts: L1's and L2's code lie apart, so a return
#: address taken from the other level's RIP (a stale next_rip) is far from
#: the instruction it should follow (`Delivered.ret`).
RIP_BASE = {1: 0x1000, 2: 0x8000}
#: Length of every instruction but INT n / INT3 / INTO / INT1
#: (`arch.INSTRUCTION_LENGTH`): RIP counts them (impls.hw.environment).
PLAIN_LENGTH = 1

#: Address and error code of the #PF behind an L0 fix-up with shadow paging.
FIXUP_PF_ADDRESS = 0xFFFF_E000
FIXUP_PF_ERROR_CODE = 0


class LevelState:
    """Architectural state of one guest level (L1 or L2)."""

    __slots__ = ("desc", "rflags_if", "tf", "shadow", "nmi_blocked", "_cr2", "armed",
                 "fixup_delivery", "fixup_iret", "rip", "insn_rip", "_restart", "_restart_rip", "pending_dbg")

    def __init__(self, cr2_cell: list[int] | None = None, rip: int = 0):
        self.desc = DescriptorState()
        self.rflags_if = True
        self.tf = False  # RFLAGS.TF as KVM's SVM NMI window sets it
        self.shadow: str | None = None  # "sti" / "movss" ("both": only as L1 writes it, impls.l1)
        #: VMX pending debug exceptions (None, "bs", "b0"), as L1 writes them.
        self.pending_dbg: str | None = None
        self.nmi_blocked = False
        # CR2: one register shared by L1 and L2 on VMX, where the VMCS holds no
        # CR2 (SDM 24.4, 27.5); one per level on SVM, whose VMCB save area
        # holds it (APM 15.5.1).  `Cpu` passes the shared cell on VMX.
        self._cr2 = cr2_cell if cr2_cell is not None else [0]
        self.armed: list[tuple[int, int, int]] = []  # guest-visible delivery faults
        self.fixup_delivery = 0  # L0-fixable faults armed for the next deliveries
        self.fixup_iret = 0  # ... for the next IRETs
        self.rip = rip  # PLAIN_LENGTH a completed instruction
        #: Where the instruction that raised the event being delivered, or
        #: that an event interrupts, starts: what `Delivered.ret` counts
        #: from.  Set when the CPU starts an instruction, completes one,
        #: reaches a handler, or enters with no event or an external
        #: interrupt / NMI (taken between instructions); not when KVM moves
        #: RIP to inject the event of the instruction it skipped (ICEBP's
        #: #DB after handle_exception_nmi's skip).  The driver sets it at each
        #: KVM_RUN and after L1 handled a nested exit (L1 enters L2 at L2's
        #: RIP).
        self.insn_rip = rip
        #: The software event (INT n, INT3, INTO, INT1: `Cpu._op_soft`) of the
        #: instruction at RIP whose handler it has not reached: an exit before
        #: or during its delivery leaves RIP on the instruction, so the level
        #: executes it again unless an event is delivered first or RIP moves
        #: past it (`rip`).  Sources: the guest state saved is that of the
        #: moment the exit commences (SDM 27.3; APM 15.7.1), with the
        #: instruction's length reported for re-injection (SDM 27.2.4); an
        #: intercepted INT3 / INTO saves its own rIP (APM 15.12.4), an
        #: intercepted INT1 exits on the instruction itself (hardware-
        #: validated: kvm-unit-tests x86/debug.c, test "icebp", passes under
        #: KVM, which skips the ICEBP on such an exit, handle_exception_nmi).
        #: For an exit during the delivery the APM names no rIP: KVM 5.11
        #: relies on this re-execution (svm_complete_interrupts).  The VMM
        #: sets it with a #BP / #OF it sets (impls.hw.environment, "The VMM").
        self._restart: Ev | None = None
        self._restart_rip = rip

    # `rip` is a plain attribute (hot path).  When RIP moves (the level
    # completes the instruction, or KVM or L1 skips it) no software event is
    # left to raise again (`restart`); KVM 6.1 skipping an INT3 to learn its
    # next RIP and putting RIP back (svm_update_soft_interrupt_rip) leaves it.

    @property
    def restart(self) -> Ev | None:
        """The software event of the instruction at RIP (see `__init__`)."""
        return self._restart if self.rip == self._restart_rip else None

    @restart.setter
    def restart(self, ev: Ev | None) -> None:
        self._restart, self._restart_rip = ev, self.rip

    def instruction_length(self) -> int:
        """The length of the instruction at RIP, as an instruction decoder
        (KVM's emulator) finds it: INT n / INT3 / INTO / INT1 where one is
        at RIP (`restart`), else a plain instruction (PLAIN_LENGTH).  Where
        L1 injected a software event there is no such instruction."""
        ev = self.restart
        return arch.INSTRUCTION_LENGTH[ev.type] if ev is not None else PLAIN_LENGTH

    @property
    def cr2(self) -> int:
        return self._cr2[0]

    @cr2.setter
    def cr2(self, value: int) -> None:
        self._cr2[0] = value


class Vmcs:
    """The VMCS fields KVM and the CPU use here (SDM ch. 24)."""

    __slots__ = ("name", "level", "exception_bitmap", "pf_mask", "pf_match", "nmi_exiting",
                 "virtual_nmis", "ext_intr_exiting", "intr_window_exiting", "nmi_window_exiting", "hlt_exiting",
                 "preemption_timer_zero", "entry_intr_info", "entry_error_code", "entry_instruction_len",
                 "exit_reason", "exit_intr_info", "exit_intr_error_code", "idt_vectoring_info",
                 "idt_vectoring_error_code", "exit_qualification", "exit_instruction_len", "instr_error",
                 "launched")

    def __init__(self, name: str, level: int):
        self.name, self.level = name, level
        self.exception_bitmap = 0
        self.pf_mask = self.pf_match = 0
        self.nmi_exiting = self.virtual_nmis = self.ext_intr_exiting = True  # L0's pin controls
        self.intr_window_exiting = self.nmi_window_exiting = False
        # L0's primary control, in vmcs01 and vmcs02 alike (KVM sets HLT
        # exiting unless the VM may halt in the guest, which no port allows).
        self.hlt_exiting = True
        self.preemption_timer_zero = False
        self.entry_intr_info = self.entry_error_code = self.entry_instruction_len = 0
        self.exit_reason = self.exit_intr_info = self.exit_intr_error_code = 0
        self.idt_vectoring_info = self.idt_vectoring_error_code = 0
        self.exit_qualification = self.exit_instruction_len = 0
        self.instr_error = 0
        self.launched = False


class Vmcb:
    """The VMCB control fields KVM and the CPU use here (APM 15.5, App. B)."""

    __slots__ = ("level", "intercepts", "intercept_exceptions", "int_ctl", "int_vector",
                 "event_inj", "event_inj_err", "exit_code", "exit_info_1", "exit_info_2",
                 "exit_int_info", "exit_int_info_err", "next_rip", "pending_intr")

    def __init__(self, level: int = 1):
        self.level = level
        self.intercepts: set[int] = set()
        self.intercept_exceptions = 0
        self.int_ctl = 0
        self.int_vector = 0
        self.event_inj = self.event_inj_err = 0
        self.exit_code = 0
        self.exit_info_1 = self.exit_info_2 = 0
        self.exit_int_info = self.exit_int_info_err = 0
        #: nRIP (NRIPS): written by #VMEXIT (APM 15.7.1: the next RIP for
        #: instruction intercepts and INT3 / INTO exception intercepts, else
        #: 0); read by VMRUN as the return address an injected software
        #: interrupt or INT3 / INTO trap pushes (APM 15.20; `svm_run`).
        self.next_rip = 0
        #: A physical interrupt (KVM's self-IPI for an immediate exit) that
        #: arrives as soon as the guest runs.
        self.pending_intr = False

    def copy_control_from(self, src: "Vmcb") -> None:
        """copy_vmcb_control_area: every control field."""
        self.intercepts = set(src.intercepts)
        for f in ("intercept_exceptions", "int_ctl", "int_vector", "event_inj", "event_inj_err",
                  "exit_code", "exit_info_1", "exit_info_2", "exit_int_info", "exit_int_info_err", "next_rip"):
            setattr(self, f, getattr(src, f))


class Recorder:
    """What every implementation reports, filled as the run goes: the L1 and
    L2 traces, alarms, notes, and the current scenario step."""

    __slots__ = ("l1", "l2", "alarms", "notes", "step")

    def __init__(self):
        self.l1: list = []
        self.l2: list = []
        self.alarms: list[str] = []
        self.notes: list[tuple[int, str]] = []
        self.step = 0

    def observe(self, level: int, obs) -> None:
        (self.l1 if level == 1 else self.l2).append((self.step, obs))

    def alarm(self, text: str) -> None:
        if text not in self.alarms:
            self.alarms.append(text)

    def note(self, text: str) -> None:
        if not self.notes or self.notes[-1] != (self.step, text):  # a loop says it once
            self.notes.append((self.step, text))


# What the CPU does at the instruction boundary after an entry (set by the driver).
INSTR = "instr"  # execute `Cpu.instr` (once), if the level matches
CHAIN = "chain"  # the instruction is done: stop at the boundary
RUN = "run"  # execute no-ops


class Cpu:
    """One logical CPU with the guest levels L1 and L2."""

    def __init__(self, vendor: str, npt: bool, rec: Recorder, env: Environment):
        self.vendor = vendor
        self.svm = vendor == "svm"
        self.npt = npt
        self.rec = rec
        self.env = env
        shared_cr2 = None if self.svm else [0]
        self.lv = {level: LevelState(shared_cr2, RIP_BASE[level]) for level in (1, 2)}
        # Driver interface.
        self.phase = CHAIN
        self.instr: tuple | None = None
        self.instr_level: int | None = None
        self.consumed = False  # the instruction was executed (or dropped)
        self.ran_noop = False  # this entry executed a no-op (RUN phase)
        self.entered_with_event = False  # this entry injected an event
        self.vmfail = False  # the last VMX entry failed with VMfail
        #: Guest instructions (`impls.timer`: the driver's instruction
        #: events, not the RUN phase's no-ops, RSM or re-executions) started.
        self.instructions = 0
        #: Length of the instruction behind the software event being raised or
        #: delivered (INT n, INT3, INTO, INT1: `arch.INSTRUCTION_LENGTH`, or an
        #: injection's VM-entry instruction length): what a VMX exit reports
        #: for it (SDM 27.2.4).
        self.soft_event_length = 0
        # SMM (impls.hw.environment): the state-save area KVM's enter_smm
        # writes into SMRAM (a dict of what the port saves, or None), and
        # whether the guest is running the SMM handler, whose first
        # instruction is RSM.
        self.smram: dict | None = None
        self.smm_handler = False

    # ----------------------------------------------------------- helpers --

    def _exc(self, lv: LevelState, vector: int, error_code: int | None,
             typ: EvType = EvType.HW_EXCEPTION) -> Ev:
        """An exception as raised at a level: no error code in real mode (SDM
        20.1.4) or for vectors that push none (SDM Table 6-1).  A hardware
        exception unless `typ` says otherwise (`arch.raised_type`)."""
        if lv.desc.mode is Mode.REAL or not arch.has_error_code(vector):
            error_code = None
        elif error_code is None:
            error_code = 0
        return Ev(typ, vector, error_code)

    def _intercepts(self, ctl, ev: Ev) -> bool:
        """Whether the control block makes exception `ev` a VM exit: the
        exception bitmap and #PF error-code mask/match (SDM 25.2, 24.6.3), the
        exception intercepts (APM 15.12).  INT n is not an exception
        (`arch.soft_interrupt`; nobody sets SVM's INTn intercept); INT1's #DB
        is caught by bit 1 of the bitmap, never by SVM's #DB intercept
        (`arch.INT1`; nobody sets SVM's ICEBP intercept: KVM never does)."""
        if ev.type is EvType.SOFT_INT or (self.svm and ev.type is EvType.PRIV_SOFT_EXCEPTION):
            return False
        v = ev.vector
        if self.svm:
            return bool(ctl.intercept_exceptions >> v & 1)
        bit = bool(ctl.exception_bitmap >> v & 1)
        if v == PF:
            return arch.pf_intercepted(bit, ctl.pf_mask, ctl.pf_match, ev.error_code or 0)
        return bit

    # -------------------------------------------------------------- exits --

    def _vmx_exit(self, vmcs: Vmcs, reason: int, intr: Ev | None = None, vectoring: Ev | None = None,
                  qual: int = 0, unblock_nmi: bool = False) -> None:
        vmcs.exit_reason = reason
        vmcs.exit_intr_info, ec = avmx.encode(intr)
        if intr is not None:
            if unblock_nmi:
                vmcs.exit_intr_info |= INTR_INFO_UNBLOCK_NMI
            if intr.error_code is not None:
                vmcs.exit_intr_error_code = ec
        vmcs.idt_vectoring_info, ec = avmx.encode(vectoring)
        if vectoring is not None and vectoring.error_code is not None:
            vmcs.idt_vectoring_error_code = ec
        vmcs.exit_qualification = qual
        # SDM 27.2.4: an exit on INT3 / INTO / INT1 (exit interruption type 6
        # or 5) or during the delivery of a type 4/5/6 event reports the
        # length of its instruction; for other exits the field is not
        # modelled (0).
        soft = (intr is not None and intr.type in avmx.INSTRUCTION_TYPES) or (
            vectoring is not None and vectoring.type in avmx.INSTRUCTION_TYPES)
        vmcs.exit_instruction_len = self.soft_event_length if soft else 0

    def _svm_exit(self, vmcb: Vmcb, code: int, info1: int = 0, info2: int = 0,
                  vectoring: Ev | None = None, next_rip: int = 0) -> None:
        """A #VMEXIT; `next_rip` the nRIP it saves (APM 15.7.1: that of an
        instruction intercept or an INT3 / INTO exception intercept, zero for
        every other exit, exits during event delivery included)."""
        vmcb.next_rip = next_rip
        vmcb.exit_code = code
        vmcb.exit_info_1, vmcb.exit_info_2 = info1, info2
        vmcb.exit_int_info, ec = asvm.encode(vectoring)
        if vectoring is not None and vectoring.error_code is not None:
            vmcb.exit_int_info_err = ec

    def _exception_exit(self, ctl, ev: Ev, vectoring: Ev | None, address: int,
                        unblock_nmi: bool = False) -> None:
        """An intercepted exception: VMX reason 0 with the exception in the
        exit interruption info and the #PF address in the exit qualification
        (SDM 27.2.1-2); SVM exit code 0x40+vector, EXITINFO1 the error code,
        EXITINFO2 the #PF address (APM 15.12).  A guest's own #PF under
        shadow paging exits with the shadow tables' error code
        (`Environment.shadow_pf_exit`)."""
        if ev.vector == PF:
            self.env.guest_pf = None
            if not self.npt and self.env.last_origin is Origin.GUEST and ev.error_code is not None:
                ev = Ev(ev.type, PF, self.env.shadow_pf_exit(ev.error_code))
        if self.svm:
            # APM 15.7.1: the INT3 / INTO intercepts save nRIP.
            lv = self.lv[ctl.level]
            nrip = lv.rip + arch.INSTRUCTION_LENGTH[ev.type] if ev.type is EvType.SOFT_EXCEPTION else 0
            self._svm_exit(ctl, SVM_EXIT_EXCP_BASE + ev.vector, ev.error_code or 0,
                           address if ev.vector == PF else 0, vectoring, nrip)
        else:
            self._vmx_exit(ctl, EXIT_REASON_EXCEPTION_NMI, ev, vectoring,
                           address if ev.vector == PF else 0, unblock_nmi)

    def _shutdown(self, ctl) -> None:
        """A triple fault: VMX exit reason 2 with invalid IDT-vectoring (SDM
        25.2, 27.2.3); SVM: the SHUTDOWN intercept, which L0 always sets (APM
        15.14.3)."""
        if self.svm:
            self._svm_exit(ctl, SVM_EXIT_SHUTDOWN)
        else:
            self._vmx_exit(ctl, EXIT_REASON_TRIPLE_FAULT)

    def _l0_fault_exit(self, ctl, vectoring: Ev | None, unblock_nmi: bool = False) -> None:
        """An L0-fixable fault (`l0.mmu_fixup`): EPT violation / NPF with
        nested paging, else a #PF that L0's shadow paging intercepts."""
        self.env.last_origin = Origin.FIXUP
        if self.npt:
            if self.svm:
                self._svm_exit(ctl, SVM_EXIT_NPF, 1, FIXUP_PF_ADDRESS, vectoring)
            else:
                self._vmx_exit(ctl, EXIT_REASON_EPT_VIOLATION, None, vectoring,
                               INTR_INFO_UNBLOCK_NMI if unblock_nmi else 0)
        else:
            self._exception_exit(ctl, Ev(EvType.HW_EXCEPTION, PF, FIXUP_PF_ERROR_CODE), vectoring,
                                 FIXUP_PF_ADDRESS, unblock_nmi)

    def _host_interrupt_exit(self, ctl) -> None:
        """The host's timer (or KVM's self-IPI) interrupts the guest."""
        if self.svm:
            self._svm_exit(ctl, SVM_EXIT_INTR)
        else:
            self._vmx_exit(ctl, EXIT_REASON_EXTERNAL_INTERRUPT)

    # ----------------------------------------------------------- delivery --

    def _delivery_fault(self, lv: LevelState, ev: Ev):
        """The fault delivering `ev` meets, with its origin: an L0 fix-up,
        then the IDT gate (SDM2 INT n), an armed MMU fault, the stack."""
        if lv.fixup_delivery:
            lv.fixup_delivery -= 1
            return None, Origin.FIXUP
        gate = arch.gate_fault(lv.desc, ev, self.vendor)
        if gate is not None:
            return (gate[0], gate[1], 0), Origin.GUEST
        while lv.armed:
            fault = lv.armed.pop(0)
            if possible.delivery_fault_applies(fault[0], lv.desc.mode):
                return fault, Origin.GUEST
        push = arch.push_fault(lv.desc, ev, self.vendor)
        return (push, Origin.GUEST) if push is not None else (None, None)

    def deliver(self, ctl, ev: Ev, pushed: int | None = None) -> bool:
        """Deliver `ev` through the IDT of the level `ctl` runs; True if its
        handler was reached, False if a VM exit (to L0) ended the delivery.
        `pushed`: the return address `ev` pushes (default RIP); an exception
        met during the delivery pushes RIP (SDM 6.5, 26.5.1.1).

        A fault during delivery that the control block intercepts exits with
        the event being delivered as IDT-vectoring info / EXITINTINFO (SDM
        27.2.3, APM 15.7.2); one it does not intercept is merged per SDM
        Table 6-5 (`arch.second_exception`), a merged #DF is checked against
        the intercepts again (VMX: IDT-vectoring invalid, SDM 27.2.3; SVM:
        EXITINTINFO the first event, APM 15.7.3 pseudo-code), a shutdown is a
        triple-fault exit.  NMI blocking starts with an NMI's delivery (SDM
        27.1, 6.7.1); on SVM an NMI comes only through EVENTINJ, which does
        not block NMIs (APM 15.20).
        """
        lv = self.lv[ctl.level]
        if ev.type is EvType.NMI and not self.svm:
            lv.nmi_blocked = True
        cur = ev
        for _ in range(DELIVERY_BOUND):
            fault, origin = self._delivery_fault(lv, cur)
            if origin is Origin.FIXUP:
                self._l0_fault_exit(ctl, cur)
                return False
            if fault is None:
                self._delivered(ctl.level, lv, cur, lv.rip if pushed is None else pushed)
                return True
            pushed = None
            fvec, fec, faddr = fault
            fev = self._exc(lv, fvec, fec)
            self.env.last_origin = origin
            if self._intercepts(ctl, fev):
                self._exception_exit(ctl, fev, cur, faddr)
                return False
            if fvec == PF:
                lv.cr2 = faddr
            merge = arch.second_exception(cur, fvec)
            if merge is Merge.SERIAL:
                cur = fev
            elif merge is Merge.DOUBLE_FAULT:
                df = self._exc(lv, DF, 0)
                if self._intercepts(ctl, df):
                    self._exception_exit(ctl, df, cur if self.svm else None, 0)
                    return False
                cur = df
            else:
                self._shutdown(ctl)
                return False
        self._shutdown(ctl)
        return False

    def _delivered(self, level: int, lv: LevelState, ev: Ev, pushed: int) -> None:
        """The handler is reached: IF cleared (interrupt gates), the STI /
        MOV-SS shadow ends (SDM 6.8.3), RIP is the handler's, so no INT3 /
        INTO is left to execute again (`LevelState.restart`).  Real mode and
        events other than hardware exceptions push no error code.  The
        return address `pushed` is recorded relative to RIP, which is still
        on the instruction that raised the event or was interrupted
        (`Delivered.ret`): relative to `LevelState.insn_rip`."""
        if ev.error_code is not None and (lv.desc.mode is Mode.REAL or ev.type is not EvType.HW_EXCEPTION):
            ev = ev.without_error_code()
        self.rec.observe(level, Delivered(level, ev, pushed - lv.insn_rip))
        lv.insn_rip = lv.rip
        lv.rflags_if = False
        lv.shadow = None
        lv._restart = None  # no software event left to raise again (`restart`)

    # -------------------------------------------------------------- entry --

    def vmx_run(self, vmcs: Vmcs) -> None:
        """VMLAUNCH/VMRESUME of `vmcs` by L0, up to the next VM exit.

        Checks on the event-injection fields (SDM 26.2.1.3,
        `avmx.entry_control_error`, else VMfailValid) and on the guest's
        blocking state (SDM 26.3.1.4-5, `_vmx_guest_state_invalid`; a failure
        is an exit with reason 33 and bit 31), then the injection (SDM 26.5)
        or, for type 7, the pending MTF exit.
        """
        self.vmfail = False
        self.entered_with_event = False
        self.ran_noop = False
        lv = self._enter(vmcs.level)
        inj = avmx.decode_entry(vmcs.entry_intr_info, vmcs.entry_error_code)
        self._anchor(lv, inj)
        if inj is not None and avmx.entry_control_error(inj, lv.desc.mode is not Mode.REAL,
                                                        error_code_vectors=_HW_ERROR_CODE_VECTORS):
            self.vmfail = True
            vmcs.instr_error = VMXERR_ENTRY_INVALID_CONTROL_FIELD
            return
        if self._vmx_guest_state_invalid(vmcs, lv, inj):
            vmcs.entry_intr_info = 0
            self._vmx_exit(vmcs, VMX_EXIT_REASONS_FAILED_VMENTRY | EXIT_REASON_INVALID_STATE)
            return
        vmcs.entry_intr_info = 0
        vmcs.launched = True
        lv.pending_dbg = None  # not delivered after the entry (impls.hw.environment)
        if inj is not None and inj.type is EvType.OTHER_EVENT:
            # Type 7, vector 0: a pending MTF VM exit before the guest's first
            # instruction (SDM 24.8.3 Table 24-13).
            self._vmx_exit(vmcs, EXIT_REASON_MONITOR_TRAP_FLAG)
            return
        if inj is not None:
            self.entered_with_event = True
            # SDM 26.6.1: no blocking by STI or MOV SS after a vectoring
            # entry, also where the delivery then faults into an exit or a
            # triple fault (which save the interruptibility state).
            lv.shadow = None
            self.soft_event_length = vmcs.entry_instruction_len if inj.type in avmx.INSTRUCTION_TYPES else 0
            # SDM 26.5.1.1: types 4, 5 and 6 push RIP + the VM-entry
            # instruction length, the others RIP.
            if not self.deliver(vmcs, inj, lv.rip + self.soft_event_length):
                return
        if vmcs.preemption_timer_zero:
            # SDM 25.5.1: a zero preemption timer exits before any instruction,
            # after the injected event is delivered.
            self._vmx_exit(vmcs, EXIT_REASON_PREEMPTION_TIMER)
            return
        if vmcs.nmi_window_exiting and not lv.nmi_blocked and lv.shadow != "movss":
            self._vmx_exit(vmcs, EXIT_REASON_NMI_WINDOW)  # SDM 25.3
            return
        if vmcs.intr_window_exiting and lv.rflags_if and not lv.shadow:
            self._vmx_exit(vmcs, EXIT_REASON_INTERRUPT_WINDOW)  # SDM 25.3
            return
        self._boundary(vmcs, lv)

    @staticmethod
    def _vmx_guest_state_invalid(vmcs: Vmcs, lv: LevelState, inj: Ev | None) -> bool:
        """SDM 26.3.1.4-5 on the guest's blocking state: not blocking by STI
        and MOV SS together, no blocking by STI with IF=0, no pending BS with
        either blocking (TF is 0 here); an external interrupt needs IF=1 and
        neither blocking, an NMI no MOV-SS blocking (this CPU does not
        require the absence of STI blocking, which the SDM allows) and, with
        virtual NMIs, no virtual-NMI blocking."""
        if lv.shadow == "both" or (lv.shadow == "sti" and not lv.rflags_if):
            return True
        if lv.pending_dbg == "bs" and lv.shadow:
            return True
        if inj is None:
            return False
        return (inj.type is EvType.EXT_INTR and (not lv.rflags_if or bool(lv.shadow))) or (
            inj.type is EvType.NMI and (lv.shadow == "movss" or (vmcs.virtual_nmis and lv.nmi_blocked)))

    def svm_run(self, vmcb: Vmcb) -> None:
        """VMRUN of `vmcb` by L0, up to the next #VMEXIT.  EVENTINJ that
        cannot occur in the guest's mode (#BR in 64-bit mode) fails the VMRUN
        with VMEXIT_INVALID (APM 15.20); a physical interrupt pending at VMRUN
        (KVM's self-IPI) exits after the injection; then a virtual interrupt
        (V_IRQ) is taken, or exits if VINTR is intercepted (APM 15.21.4,
        15.21.6: `_virtual_interrupt`)."""
        self.vmfail = False
        self.entered_with_event = False
        self.ran_noop = False
        lv = self._enter(vmcb.level)
        inj = asvm.decode(vmcb.event_inj, vmcb.event_inj_err)
        self._anchor(lv, inj)
        if inj is not None and inj.type is EvType.NMI:
            inj = Ev(EvType.NMI, 2, inj.error_code)  # the vector of an NMI is ignored (APM 15.20)
        if inj is not None and ((vmcb.event_inj >> 8) & 7 not in asvm.EVTINJ_TYPES or (
                inj.type in (EvType.HW_EXCEPTION, EvType.SOFT_EXCEPTION) and inj.vector not in _SVM_EXCEPTIONS) or (
                inj.type is EvType.HW_EXCEPTION and inj.vector == BR and lv.desc.mode is Mode.LONG)):
            self._svm_exit(vmcb, SVM_EXIT_ERR)
            return
        vmcb.event_inj = 0
        if inj is not None:
            self.entered_with_event = True
            # APM 15.20: an INTn (type 4) or an INT3 / INTO trap (type 3,
            # vector 3 or 4) pushes next_rip (see impls.reference.model,
            # `_injected_return`); every other event pushes RIP.
            soft = inj.type in (EvType.SOFT_INT, EvType.SOFT_EXCEPTION)
            if not self.deliver(vmcb, inj, vmcb.next_rip if soft else lv.rip):
                return
        if vmcb.pending_intr:
            vmcb.pending_intr = False
            self._svm_exit(vmcb, SVM_EXIT_INTR)
            return
        if self._virtual_interrupt(vmcb, lv):
            if INTERCEPT_VINTR in vmcb.intercepts:
                self._svm_exit(vmcb, SVM_EXIT_VINTR)
                return
            # APM 15.21.4: V_IRQ is cleared after the intercept check, before
            # the IDT is read; the vector is V_INTR_VECTOR (no INTACK).
            vmcb.int_ctl &= ~V_IRQ_MASK
            if not self.deliver(vmcb, Ev(EvType.EXT_INTR, vmcb.int_vector)):
                return
        self._boundary(vmcb, lv)

    @staticmethod
    def _anchor(lv: LevelState, inj: Ev | None) -> None:
        """At an entry: an external interrupt or NMI, or nothing, is taken
        at RIP, between instructions (`LevelState.insn_rip`); an exception
        or software event injected belongs to the instruction it came from."""
        if inj is None or inj.type in (EvType.EXT_INTR, EvType.NMI):
            lv.insn_rip = lv.rip

    @staticmethod
    def _virtual_interrupt(vmcb: Vmcb, lv: LevelState) -> bool:
        """A virtual interrupt is taken (or its VINTR intercept exits) at the
        first boundary: V_IRQ set with V_INTR_PRIO above V_TPR unless
        V_IGN_TPR, RFLAGS.IF=1 (the guest's IF controls virtual interrupts
        with or without V_INTR_MASKING, APM 15.21.1), no interrupt shadow
        (APM 15.21.4; GIF is 1 while a guest runs: no vGIF)."""
        ctl = vmcb.int_ctl
        if not ctl & V_IRQ_MASK or not lv.rflags_if or lv.shadow:
            return False
        return bool(ctl & V_IGN_TPR_MASK) or (ctl & V_INTR_PRIO_MASK) >> V_INTR_PRIO_SHIFT > ctl & V_TPR_MASK

    def _enter(self, level: int) -> LevelState:
        """The guest state of the level an entry runs.  Entering a level
        forgets an INT3 / INTO the other level had left to execute again:
        after a nested exit L1 does not let L2 execute it again
        (impls.hw.environment, "L1, the hypervisor"), and L0 never makes L1
        run one again from L2."""
        self.lv[3 - level]._restart = None  # `LevelState.restart`
        return self.lv[level]

    # -------------------------------------------------------- instructions --

    def _boundary(self, ctl, lv: LevelState) -> None:
        """The instruction boundary: execute what the driver asked for; the
        SMM handler executes RSM first, whatever the driver asked; an INT n /
        INT3 / INTO / INT1 whose delivery an exit interrupted executes again
        next (`LevelState.restart`), as when L0 re-enters without re-injecting
        its event (KVM 5.11 on SVM, svm_complete_interrupts)."""
        lv.insn_rip = lv.rip
        if self.smm_handler:
            self._op_rsm(ctl, lv)
            return
        restart = lv.restart
        if restart is not None:
            self._op_soft(ctl, lv, restart)
            return
        if self.phase == RUN:
            self.ran_noop = True
            self._op_noop(ctl, lv)
            return
        if self.phase == CHAIN or self.consumed:
            self._host_interrupt_exit(ctl)
            return
        if self.instr_level is not None and self.instr_level != ctl.level:
            # The instruction belongs to the other level: it never runs.
            self.consumed = True
            self._host_interrupt_exit(ctl)
            return
        self.consumed = True
        self.instructions += 1  # a guest instruction starts executing (impls.timer)
        getattr(self, "_op_" + self.instr[0])(ctl, lv, *self.instr[1:])

    def _complete(self, ctl, lv: LevelState) -> None:
        """An instruction completed: its shadow ends (unless it set one), RIP
        moves; a single-step trap follows if TF is set, else the host's timer
        interrupt ends the slice."""
        lv.rip += PLAIN_LENGTH
        lv.insn_rip = lv.rip
        self._slice_end(ctl, lv)

    def _slice_end(self, ctl, lv: LevelState) -> None:
        if lv.tf:
            self.env.last_origin = Origin.GUEST
            db = Ev(EvType.HW_EXCEPTION, DB)
            if self._intercepts(ctl, db):
                self._exception_exit(ctl, db, None, 0)
                return
        self._host_interrupt_exit(ctl)

    def _op_noop(self, ctl, lv):
        lv.shadow = None
        self._complete(ctl, lv)

    def _op_sti(self, ctl, lv):
        """STI: with IF=0, interrupts stay blocked for one more instruction."""
        shadow = "sti" if not lv.rflags_if else None
        lv.rflags_if = True
        lv.shadow = shadow
        self._complete(ctl, lv)

    def _op_cli(self, ctl, lv):
        lv.shadow = None
        lv.rflags_if = False
        self._complete(ctl, lv)

    def _op_mov_ss(self, ctl, lv):
        lv.shadow = "movss"
        self._complete(ctl, lv)

    def _op_iret(self, ctl, lv):
        """IRET unblocks NMIs (SDM 6.7.1).  SVM: the IRET intercept exits
        before it executes.  An L0 fix-up during IRET exits after the
        unblocking, which VMX reports with bit 12 (SDM 27.2.1-2)."""
        if self.svm and INTERCEPT_IRET in ctl.intercepts:
            self.consumed = False
            self._svm_exit(ctl, SVM_EXIT_IRET, next_rip=lv.rip + PLAIN_LENGTH)
            return
        if lv.fixup_iret:
            lv.fixup_iret -= 1
            self.consumed = False
            unblocked = lv.nmi_blocked
            lv.nmi_blocked = False
            self._l0_fault_exit(ctl, None, unblock_nmi=unblocked and not self.svm)
            return
        lv.nmi_blocked = False
        lv.shadow = None
        self._complete(ctl, lv)

    def _op_exception(self, ctl, lv, vector: int, ec: int, cr2: int):
        """The instruction raises `vector` (as its mode allows:
        `possible.raised`): an exit if intercepted (a #PF loads no CR2 then,
        SDM 27.1 / APM 15.12), else delivered.  #BP and #OF are INT3's and
        INTO's software exceptions (`arch.raised_type`, `_op_soft`)."""
        vector = possible.raised(vector, lv.desc.mode)
        if vector is None:  # raises nothing: a plain instruction
            self._op_noop(ctl, lv)
            return
        ev = self._exc(lv, vector, ec, arch.raised_type(vector))
        if ev.type is EvType.SOFT_EXCEPTION:
            self._op_soft(ctl, lv, ev)
            return
        lv.shadow = None
        self.env.last_origin = Origin.GUEST
        if self._intercepts(ctl, ev):
            self._exception_exit(ctl, ev, None, cr2)
            return
        if vector == PF:
            lv.cr2 = cr2
        if self.deliver(ctl, ev):
            self._slice_end(ctl, lv)

    def _op_soft(self, ctl, lv, ev: Ev):
        """An instruction that raises the software event `ev`: INT n (type 4),
        INT3 / INTO (6), INT1 (5), `arch.INSTRUCTION_LENGTH` bytes long.  An
        exit if intercepted (`_intercepts`), else delivered; until its
        handler is reached RIP stays on the instruction
        (`LevelState.restart`)."""
        lv.shadow = None
        self.env.last_origin = Origin.GUEST
        self.soft_event_length = arch.INSTRUCTION_LENGTH[ev.type]
        lv.restart = ev
        if self._intercepts(ctl, ev):
            self._exception_exit(ctl, ev, None, 0)
            return
        if self.deliver(ctl, ev, lv.rip + self.soft_event_length):
            self._slice_end(ctl, lv)

    def _op_int(self, ctl, lv, vector: int):
        """INT n (`arch.soft_interrupt`)."""
        self._op_soft(ctl, lv, arch.soft_interrupt(vector))

    def _op_icebp(self, ctl, lv):
        """ICEBP / INT1 (`arch.INT1`)."""
        self._op_soft(ctl, lv, arch.INT1)

    def _op_hlt(self, ctl, lv):
        """HLT: an exit before it executes under HLT exiting (SDM 25.1.3,
        reason 12, instruction length 1, SDM 27.2.4) or the HLT intercept
        (APM 15.9, code 78h), which L0 always sets.  The HLT state itself is
        not modelled (impls.hw.environment, "HLT"): a HLT that nothing
        intercepts is an alarm."""
        if self.svm and INTERCEPT_HLT in ctl.intercepts:
            self._svm_exit(ctl, SVM_EXIT_HLT)
            return
        if not self.svm and ctl.hlt_exiting:
            self._vmx_exit(ctl, EXIT_REASON_HLT)
            ctl.exit_instruction_len = 1
            return
        self.rec.alarm("simulated CPU: HLT executed without an HLT intercept (the HLT state is not modelled)")
        self._op_noop(ctl, lv)

    def _op_vmentry(self, ctl, lv, resume: bool):
        """L1's VMLAUNCH / VMRESUME / VMRUN: always an exit to L0."""
        if self.svm:
            self._svm_exit(ctl, SVM_EXIT_VMRUN, next_rip=lv.rip + PLAIN_LENGTH)
        else:
            self._vmx_exit(ctl, EXIT_REASON_VMRESUME if resume else EXIT_REASON_VMLAUNCH)

    def _op_vmcall(self, ctl, lv):
        """L2's VMCALL (always an exit, SDM 25.1.2) / VMMCALL (an exit if
        intercepted, else #UD, APM 15.9)."""
        if not self.svm:
            self._vmx_exit(ctl, EXIT_REASON_VMCALL)
        elif INTERCEPT_VMMCALL in ctl.intercepts:
            self._svm_exit(ctl, SVM_EXIT_VMMCALL, next_rip=lv.rip + PLAIN_LENGTH)
        else:
            self._op_exception(ctl, lv, UD, 0, 0)

    def _op_gif(self, ctl, lv, value: bool):
        """STGI / CLGI: intercepted by L0 (no vGIF); #UD on VMX."""
        if not self.svm:
            self._op_exception(ctl, lv, UD, 0, 0)
            return
        code = SVM_EXIT_STGI if value else SVM_EXIT_CLGI
        if (INTERCEPT_STGI if value else INTERCEPT_CLGI) in ctl.intercepts:
            self._svm_exit(ctl, code, next_rip=lv.rip + PLAIN_LENGTH)
        else:
            lv.shadow = None
            self._complete(ctl, lv)

    def _op_rsm(self, ctl, lv):
        """The SMM handler's RSM.  KVM's SMM is not the processor's, so RSM
        is executed outside SMM: #UD (SDM2 RSM), which L0 intercepts on VMX,
        and on SVM the RSM intercept (APM 15.9), which L0 sets.  The
        emulator sees it as RSM (`Origin.RSM`)."""
        self.env.last_origin = Origin.RSM
        if self.svm and INTERCEPT_RSM in ctl.intercepts:
            self._svm_exit(ctl, SVM_EXIT_RSM, next_rip=lv.rip + PLAIN_LENGTH)
            return
        ud = Ev(EvType.HW_EXCEPTION, UD)
        if self._intercepts(ctl, ud):
            self._exception_exit(ctl, ud, None, 0)
            return
        self._op_exception(ctl, lv, UD, 0, 0)

    def _op_mode(self, ctl, lv, mode: Mode):
        """MOV to CR0 / WRMSR to EFER changing the level's mode (KVM's CR0 and
        EFER intercepts are not modelled: the CPU executes it)."""
        lv.desc = replace(lv.desc, mode=mode)
        lv.shadow = None
        self._complete(ctl, lv)

    def _op_emulate(self, ctl, lv):
        """An access L0 must emulate (MMIO): an exit L0 handles by emulation;
        the emulator decodes the instruction in the level's mode."""
        self.env.last_origin = Origin.EMULATE
        self.env.decode_in(lv.desc.mode)
        if self.svm:
            self._svm_exit(ctl, SVM_EXIT_NPF, 1 | (1 << 3), 0xFEE0_0000)
        else:
            self._vmx_exit(ctl, EXIT_REASON_EPT_MISCONFIG)

    # ----------------------------------------------------- scenario state --

    def set_desc(self, level: int, **changes) -> None:
        lv = self.lv[level]
        lv.desc = replace(lv.desc, **changes)

