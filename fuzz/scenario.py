"""The event language: a scenario is a configuration and a sequence of events.

Each event kind is declared once, in `SPECS`, with its parameters and their
types; the text format (`fuzz.text`), the binary format (`fuzz.binary`), the
Hypothesis strategies and every implementation read that one table.

Kinds, by who acts (the README has the full table with examples):

* guest configuration, per level (`l1.` / `l2.`): CPU mode, unusable IDT
  gates, the IDT limit, a handler stack that faults,
* L1 as a hypervisor: its intercepts and interrupt controls for L2
  (`l1.controls`) and its VM entry to L2 with an injected event (any value
  of the injection fields) after its edits of L2's blocking, RFLAGS.IF and
  pending debug exceptions; L2's unconditional exit to L1 (`l2.vmcall`),
* the guest's current instruction (at whatever level runs): raises an
  exception, INT n / INT3 / INTO / INT1 (software interrupts and
  exceptions, with their instruction lengths, `impls.arch.INSTRUCTION_LENGTH`),
  HLT, STI / CLI / MOV SS / IRET / STGI / CLGI, and `delivery_fault`,
  which arms a fault (an MMU fault) for the next event delivery,
* L0-internal happenings that must be invisible: `l0.mmu_fixup` (a fault
  during delivery or IRET that L0 fixes: a shadow #PF with npt off, an EPT
  violation / NPF with npt on), `l0.emulate` (L0 emulates the instruction,
  which may fault), `l0.immediate_exit`,
* platform: `irq`, `nmi`, `init`, `smi`, and `timer` (an interrupt or NMI
  due after N more guest instructions, `impls.timer`),
* userspace: KVM_SET_VCPU_EVENTS (`user.set_exception`, `user.set_nmi`,
  `user.set_irq`), KVM_INTERRUPT, KVM_NMI, `user.migrate` (GET then SET
  into a fresh vCPU), `user.get_events` (GET alone, recorded) and
  `user.run_exit` (a KVM_RUN that returns -EINTR for a signal),
* `run`: run to the next quiescent point.

Where the language can say something with no architectural meaning, it is
given one meaning here, before any implementation sees it (the text form
rejects the explicit spelling, the binary form maps it):

* an error code the manual fixes is that value (`FIXED_ERROR_CODES`), and a
  vector that pushes none has 0 (`normalise`);
* the current instruction raising #BP or #OF is INT3 or INTO, their only
  sources (SDM Table 6-1): `exception #BP` is `int3`, `exception #OF` is
  `into` (`normalise`);
* without `caps=exception_payload`, `user.set_exception` sets an injected
  exception, the only one KVM's ABI has then (`Scenario`);
* an `l1.controls` flag of the other vendor (`v_irq=1` on VMX,
  `intr_window=1` on SVM: `VENDOR_CONTROLS`) is 0 (`Scenario`).
* on SVM, `l1.vmentry activity=` is `keep`: the VMCB has no activity state
  (`svm_vmentry`, `Scenario`).

What depends on the vCPU's state as it runs (an exception a mode cannot
raise, an event userspace claims in flight where no CPU recognises it, a
mode change while an event is pending) is given its meaning by
`impls.arch.possible` and the reference's and the driver's mode change.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from impls.arch import MNEMONICS, Ev, EvType, has_error_code


class EvdiffError(Exception):
    """Root of every error evdiff reports to its user."""


class ScenarioError(EvdiffError):
    """A scenario that cannot be read.  `str()` is `FILE:LINE: what`."""

    def __init__(self, message: str, path: str = "<string>", line: int = 0):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}")


# ---------------------------------------------------------------- values --

#: Vectors an instruction, the MMU or userspace can raise as an exception:
#: the architectural exceptions of SDM Table 6-1 that are not reserved, not
#: NMI and not #VE (which needs EPT-violation #VE) or #CSO (never generated).
EXCEPTION_VECTORS = (0, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 21)
#: Exceptions that delivering an event can meet: the faults of SDM2 INT n's
#: descriptor and stack checks and pushes (#TS, #NP, #SS, #GP, #PF) and a
#: machine check, which may come at any time (SDM 6.15 Interrupt 18).  Traps
#: (#DB) come after a delivery, not during it; #UD and the rest are not raised
#: by delivery; #AC is not raised by the CPL-0 pushes of a delivery.
DELIVERY_FAULT_VECTORS = (10, 11, 12, 13, 14, 18)
#: Exceptions whose error code the processor fixes, with that code: #DF
#: always pushes 0 (SDM 6.15 Interrupt 8), #AC pushes 0 (SDM 6.15 Interrupt
#: 17; EXT would be set only for an #AC raised while delivering an event,
#: which the CPL-0 pushes of a delivery never raise).  `normalise` applies it
#: to every exception the vCPU raises or holds; an L1 injecting an event
#: (`l1.vmentry inject=`) may give any error code (SDM 26.5.1.1).
FIXED_ERROR_CODES = {8: 0, 17: 0}
#: The instructions behind a raised #BP / #OF, their only sources (SDM 6.3.1
#: Table 6-1, "Source" column): `exception #BP` is `int3`, `#OF` is `into`.
SOFT_EXCEPTION_KINDS = {3: "int3", 4: "into"}
#: Vectors KVM's instruction emulator never queues: its INT3 / INTO (and
#: INT n) go through emulate_int, which performs the interrupt itself in
#: real mode and gives up (X86EMUL_UNHANDLEABLE) in every other mode
#: (arch/x86/kvm/emulate.c, the same from 5.11 to 6.18); no emulated MMIO
#: access raises them.  `l0.emulate` with one of them completes
#: (`normalise`); the text form refuses it.
EMULATOR_NEVER_RAISES = frozenset(SOFT_EXCEPTION_KINDS)
#: The cap without which KVM_SET_VCPU_EVENTS has no pending exception.
EXCEPTION_PAYLOAD = "exception_payload"

#: `l1.vmentry interruptibility=`: what L1 writes into L2's blocking by STI
#: and MOV SS (VMX guest interruptibility state bits 0-1, SDM 24.4.2 Table
#: 24-3; SVM vmcb12's int_state INTERRUPT_SHADOW, APM 15.21.5), or `keep`
#: (L1 leaves what the last exit saved).  `both` sets bits 0 and 1 together,
#: which VM entry refuses (SDM 26.3.1.5).  SVM has one shadow bit: every
#: value but `none` and `keep` sets it, and it means what STI's blocking
#: means (`Scenario` maps `movss` and `both` to `sti` on SVM).
INTERRUPTIBILITY = ("keep", "none", "sti", "movss", "both")
#: `l1.vmentry pending_dbg=`: the bits of VMX's pending-debug-exceptions
#: field that matter to event injection (SDM 24.4.2 Table 24-4): `bs`, a
#: pending single-step trap (bit 14, which SDM 26.3.1.5 checks against STI /
#: MOV-SS blocking), and `b0`, a pending breakpoint-condition match (bit 0,
#: checked by nothing).  SVM has no such field: ignored there (`Scenario`
#: maps it to `none` on SVM).
PENDING_DBG = ("none", "bs", "b0")
#: The `l1.controls` flags that only one vendor has: VMX's window exiting
#: controls (SDM 24.6.2), SVM's int_ctl bits and VINTR intercept (APM 15.21).
#: Under the other vendor a flag has no meaning and reads as 0
#: (`vendor_controls`): a VMX scenario setting `v_irq=1` is the scenario
#: without it, so it neither diverges nor counts as new.
VENDOR_CONTROLS = {"intr_window": "vmx", "nmi_window": "vmx", "v_intr_masking": "svm", "v_irq": "svm",
                   "vintr": "svm"}
_CONTROLS = "l1.controls"
#: `l1.vmentry activity=`: vmcs12's guest activity state as L1 leaves it
#: (`keep`: as the last VM exit saved it, SDM 27.3.4; active at the first
#: entry) or writes it (SDM 24.4.2: 0 active, 1 HLT).  SVM has no such field
#: (APM Table B-2): there every value is `keep` (`Scenario`).
ACTIVITY_STATES = ("keep", "active", "hlt")

CAPS = ("exception_payload", "exception_injected_pending", "triple_fault_event")
VENDORS = ("vmx", "svm")


class PType(enum.Enum):
    """Parameter types of the event language."""

    VECTOR = "vector"  # 0..255, an interrupt vector
    EXC = "exception"  # one of EXCEPTION_VECTORS
    OPT_EXC = "exception or none"
    U8 = "u8"
    U16 = "u16"
    #: An error code KVM_SET_VCPU_EVENTS holds in 32 bits (struct
    #: kvm_vcpu_events' exception.error_code is a u32): the text form takes
    #: all 32, the binary form the low 16 (`fuzz.binary`).
    EC32 = "error code (32 bits)"
    PAGE = "page"  # an address, a multiple of 0x1000 below 0x10000000
    BOOL = "bool"
    ENUM = "enum"
    VECSET = "vector set"  # a set of exception vectors 0..31, as a bit mask
    EVENT = "event"  # an event to inject: Ev or None

    @property
    def width(self) -> int:
        """Bytes this type takes in the binary form."""
        return _WIDTHS.get(self.value, 1)


#: `PType.width`, by the type's value (EC32 keeps 16 bits in the binary form).
_WIDTHS = {"u16": 2, "error code (32 bits)": 2, "page": 2, "vector set": 4, "event": 8}


@dataclass(frozen=True)
class Param:
    name: str
    type: PType
    default: Any = 0
    choices: tuple[str, ...] = ()  # for ENUM
    positional: bool = False
    domain: tuple[int, ...] = EXCEPTION_VECTORS  # for EXC and OPT_EXC


@dataclass(frozen=True)
class EventSpec:
    kind: str
    params: tuple[Param, ...]
    doc: str
    #: Parameter positions by name (`index`), filled at construction.
    positions: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self.positions.update((p.name, i) for i, p in enumerate(self.params))

    def index(self, name: str) -> int:
        return self.positions[name]


def _p(name, type_, default=0, choices=(), positional=False, domain=EXCEPTION_VECTORS) -> Param:
    return Param(name, type_, default, tuple(choices), positional, domain)


_EXC = lambda name="vector", default=14: _p(name, PType.EXC, default, positional=True)  # noqa: E731


def _specs() -> tuple[EventSpec, ...]:
    out: list[EventSpec] = []
    for lvl in ("l1", "l2"):
        out += [
            EventSpec(f"{lvl}.mode", (_p("mode", PType.ENUM, "protected", ("real", "protected", "long"), True),),
                      f"{lvl.upper()}'s CPU mode (real mode pushes no error codes); an instruction "
                      f"while {lvl.upper()} runs"),
            EventSpec(f"{lvl}.idt", (_p("vector", PType.VECTOR, 14, positional=True),
                                     _p("gate", PType.ENUM, "not_present", ("ok", "not_present", "bad_type"))),
                      f"make {lvl.upper()}'s IDT gate for a vector unusable (or usable again)"),
            EventSpec(f"{lvl}.idt_limit", (_p("entries", PType.U8, 0, positional=True),),
                      f"{lvl.upper()}'s IDT holds only this many gates; vectors beyond fault with #GP"),
            EventSpec(f"{lvl}.stack", (_p("fault", PType.ENUM, "#PF", ("none", "#SS", "#PF"), True),),
                      f"pushes on {lvl.upper()}'s handler stack fault (or stop faulting)"),
        ]
    out += [
        # No SVM INTn / ICEBP intercepts here: INT n exits to L1 only through
        # them (VMX has no control for it), and the 13 bytes of an
        # `l1.intercept` record are the widest, so one more parameter would
        # widen every record of the binary form and change every stored
        # `.bin`.  L1 sets neither (impls.hw.environment, "L1, the hypervisor").
        EventSpec("l1.intercept", (_p("exceptions", PType.VECSET, 0), _p("pf_mask", PType.U16, 0),
                                   _p("pf_match", PType.U16, 0), _p("nmi", PType.BOOL, False),
                                   _p("intr", PType.BOOL, False), _p("shutdown", PType.BOOL, True),
                                   _p("init", PType.BOOL, False), _p("smi", PType.BOOL, False)),
                  "L1's intercepts for L2: exception bitmap, #PF error-code mask/match (VMX), "
                  "NMI and external-interrupt exiting, shutdown, INIT and SMI intercepts (SVM; on VMX "
                  "INIT always exits and SMIs never do)"),
        # `insn_len` (the length of the instruction behind an injected
        # software event), then `interruptibility`, `if`, `activity` and
        # `pending_dbg`, L1's edits of L2's saved state before the entry; their
        # defaults (0, `keep` / `none`) encode as byte 0 (an older record
        # means what it meant).
        EventSpec("l1.vmentry", (_p("inject", PType.EVENT, None),
                                 _p("insn_len", PType.U8, 0),
                                 _p("interruptibility", PType.ENUM, "keep", INTERRUPTIBILITY),
                                 _p("if", PType.ENUM, "keep", ("keep", "0", "1")),
                                 _p("activity", PType.ENUM, "keep", ACTIVITY_STATES),
                                 _p("pending_dbg", PType.ENUM, "none", PENDING_DBG)),
                  "L1 enters L2 (VMLAUNCH/VMRESUME or VMRUN), optionally injecting an event, after "
                  "writing L2's interruptibility (VMX guest interruptibility state, SVM int_state), "
                  "RFLAGS.IF, activity state and pending debug exceptions (VMX); insn_len: the length of "
                  "the instruction behind an injected software event (VMX VM-entry instruction length; "
                  "SVM next_rip = rip + insn_len)"),
        EventSpec("l2.vmcall", (), "L2 executes VMCALL / VMMCALL: an exit to L1 for an unrelated reason"),
        EventSpec("exception", (_EXC(), _p("ec", PType.U16, 0), _p("cr2", PType.PAGE, 0)),
                  "the current instruction raises this exception"),
        EventSpec("delivery_fault", (_p("vector", PType.EXC, 14, positional=True, domain=DELIVERY_FAULT_VECTORS),
                                     _p("ec", PType.U16, 0), _p("cr2", PType.PAGE, 0)),
                  "the next event delivery at the current level hits this exception (an MMU fault)"),
        EventSpec("sti", (), "STI"),
        EventSpec("cli", (), "CLI"),
        EventSpec("mov_ss", (), "MOV SS (blocks interrupts for one instruction)"),
        EventSpec("iret", (), "IRET (unblocks NMIs)"),
        EventSpec("stgi", (), "STGI (SVM: set GIF)"),
        EventSpec("clgi", (), "CLGI (SVM: clear GIF)"),
        EventSpec("l0.mmu_fixup", (_p("at", PType.ENUM, "delivery", ("delivery", "iret"), True),),
                  "an L0-internal fault that L0 fixes, during the next delivery or the next IRET"),
        EventSpec("l0.emulate", (_p("fault", PType.OPT_EXC, None, positional=True), _p("ec", PType.U16, 0),
                                 _p("cr2", PType.PAGE, 0)),
                  "L0 emulates the current instruction; the emulator may raise an exception"),
        EventSpec("l0.immediate_exit", (), "L0 asks for an exit right after the next VM entry"),
        EventSpec("irq", (_p("vector", PType.VECTOR, 0x20, positional=True),),
                  "an external interrupt becomes pending"),
        EventSpec("nmi", (), "an NMI becomes pending"),
        EventSpec("init", (), "an INIT signal (INIT IPI) becomes pending"),
        EventSpec("smi", (), "an SMI becomes pending; its SMM handler returns with RSM at once"),
        EventSpec("user.set_exception", (_EXC(), _p("ec", PType.EC32, 0), _p("injected", PType.BOOL, False)),
                  "KVM_SET_VCPU_EVENTS with a pending (or injected) exception; injected without "
                  "the exception_payload cap"),
        EventSpec("user.set_nmi", (_p("injected", PType.BOOL, False),),
                  "KVM_SET_VCPU_EVENTS with an NMI pending (or injected, where a CPU could be "
                  "delivering one)"),
        EventSpec("user.set_irq", (_p("vector", PType.VECTOR, 0x20, positional=True),),
                  "KVM_SET_VCPU_EVENTS with an injected interrupt (where a CPU could be "
                  "delivering one)"),
        EventSpec("user.interrupt", (_p("vector", PType.VECTOR, 0x20, positional=True),), "KVM_INTERRUPT"),
        EventSpec("user.nmi", (), "KVM_NMI"),
        EventSpec("user.migrate", (), "KVM_GET_VCPU_EVENTS, then KVM_SET_VCPU_EVENTS into a fresh vCPU"),
        EventSpec("run", (), "run the vCPU to its next quiescent point"),
        # Kinds added after the first release go last, so that the records
        # of the older kinds keep their bytes in the binary form.
        EventSpec("int", (_p("vector", PType.VECTOR, 0x80, positional=True),),
                  "INT n (2 bytes): a software interrupt on vector n"),
        EventSpec("int3", (), "INT3 (1 byte): #BP, a software exception"),
        EventSpec("into", (), "INTO (1 byte) with OF=1: #OF, a software exception; #UD in 64-bit mode"),
        EventSpec("icebp", (), "ICEBP / INT1 (1 byte): #DB, a privileged software exception"),
        # L1's controls for L2 beyond `l1.intercept` (whose record is full):
        # VMX interrupt-window and NMI-window exiting, SVM V_INTR_MASKING,
        # V_IRQ (a virtual interrupt pending for L2, vector
        # `impls.arch.svm.L1_V_INTR_VECTOR`) and the VINTR intercept, and HLT
        # exiting / the HLT intercept.  The other vendor's flags have no
        # meaning: `VENDOR_CONTROLS`.
        EventSpec("l1.controls", (_p("intr_window", PType.BOOL, False), _p("nmi_window", PType.BOOL, False),
                                  _p("v_intr_masking", PType.BOOL, False), _p("v_irq", PType.BOOL, False),
                                  _p("vintr", PType.BOOL, False), _p("hlt", PType.BOOL, False)),
                  "L1's controls for L2: interrupt-window and NMI-window exiting (VMX), "
                  "V_INTR_MASKING, V_IRQ and the VINTR intercept (SVM), HLT exiting (VMX) / the HLT "
                  "intercept (SVM)"),
        EventSpec("hlt", (), "HLT (1 byte): the running level halts until an event it takes wakes it"),
        EventSpec("user.run_exit", (_p("immediate", PType.BOOL, False),),
                  "KVM_RUN with a signal pending: KVM returns to userspace (-EINTR) at its next "
                  "quiescent point, still holding what it queued; the next `run` goes on.  "
                  "immediate=1: KVM_RUN with kvm_run->immediate_exit set, -EINTR before vcpu_run"),
        EventSpec("user.get_events", (),
                  "KVM_GET_VCPU_EVENTS, read only: the snapshot is an observation (`impls.api.VcpuEvents`)"),
        EventSpec("timer", (_p("after", PType.U8, 0, positional=True), _p("nmi", PType.BOOL, False),
                            _p("vector", PType.VECTOR, 0x20)),
                  "an interrupt (or, nmi=1, an NMI) that becomes pending after this many more guest "
                  "instructions (`impls.timer`): an APIC timer, a delayed NMI, another vCPU's IPI"),
    ]
    return tuple(out)


SPECS: tuple[EventSpec, ...] = _specs()
SPEC_BY_KIND: dict[str, EventSpec] = {s.kind: s for s in SPECS}
_ARITY: dict[str, int] = {s.kind: len(s.params) for s in SPECS}


# -------------------------------------------------------------- scenario --


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its kind and its arguments in the order of its spec."""

    kind: str
    args: tuple = ()

    def __post_init__(self):
        # Parameters added to a kind later take their defaults when an event
        # is built with the older, shorter argument list.
        if len(self.args) < _ARITY.get(self.kind, 0):
            spec = SPEC_BY_KIND[self.kind]
            object.__setattr__(self, "args", self.args + tuple(p.default for p in spec.params[len(self.args):]))

    @property
    def spec(self) -> EventSpec:
        return SPEC_BY_KIND[self.kind]

    def __getitem__(self, name: str) -> Any:
        return self.args[SPEC_BY_KIND[self.kind].index(name)]


def event(kind: str, *positional: Any, **named: Any) -> Event:
    """Build an event, filling defaults: `event("exception", 13, ec=0)`."""
    spec = SPEC_BY_KIND[kind]
    values = {p.name: p.default for p in spec.params}
    for p, v in zip(spec.params, positional):
        values[p.name] = v
    for k, v in named.items():
        spec.index(k)
        values[k] = v
    return normalise(Event(kind, tuple(values[p.name] for p in spec.params)))


def normalise(ev: Event) -> Event:
    """The one canonical form of an event: an error code is 0 where the
    vector pushes none and the fixed value where the manual fixes it
    (`FIXED_ERROR_CODES`), so that equal scenarios print equal text and
    every implementation gets an error code a CPU can push; an
    instruction raising #BP or #OF is INT3 or INTO (`SOFT_EXCEPTION_KINDS`);
    and KVM's emulator raises neither (`EMULATOR_NEVER_RAISES`): an
    `l0.emulate` of #BP or #OF completes."""
    if ev.kind == "exception" and ev.args[0] in SOFT_EXCEPTION_KINDS:
        return Event(SOFT_EXCEPTION_KINDS[ev.args[0]])
    if ev.kind == "l0.emulate" and ev.args[0] in EMULATOR_NEVER_RAISES:
        return Event("l0.emulate", (None, 0, 0))
    spec = ev.spec
    if "ec" in {p.name for p in spec.params}:
        vec = ev.args[0]
        i = spec.index("ec")
        if vec is None or not has_error_code(vec):
            ev = Event(ev.kind, ev.args[:i] + (0,) + ev.args[i + 1 :])
        elif vec in FIXED_ERROR_CODES:
            ev = Event(ev.kind, ev.args[:i] + (FIXED_ERROR_CODES[vec],) + ev.args[i + 1 :])
        if "cr2" in {p.name for p in spec.params} and vec != 14:
            j = spec.index("cr2")
            ev = Event(ev.kind, ev.args[:j] + (0,) + ev.args[j + 1 :])
    return ev


@dataclass(frozen=True)
class Config:
    vendor: str = "vmx"
    npt: bool = True  # EPT on VMX, NPT on SVM: L0's nested paging
    caps: frozenset[str] = frozenset()


_SET_EXCEPTION = "user.set_exception"
_VMENTRY = "l1.vmentry"
#: `interruptibility=` on SVM: the one INTERRUPT_SHADOW bit (`INTERRUPTIBILITY`).
_SVM_SHADOW = {"movss": "sti", "both": "sti"}


def svm_vmentry(ev: Event) -> Event:
    """An `l1.vmentry` under SVM, with its one meaning there: `movss` and
    `both` are the one INTERRUPT_SHADOW bit, written `sti`; `pending_dbg=`
    is VMX's field, `none`; `activity=` is `keep`: the VMCB has no
    activity-state field (APM 15.5.1, Table B-2 lists none), VMRUN always
    resumes the guest active (`INTERRUPTIBILITY`, `PENDING_DBG`,
    `ACTIVITY_STATES`)."""
    spec = ev.spec
    i, j, k = spec.index("interruptibility"), spec.index("pending_dbg"), spec.index("activity")
    args = list(ev.args)
    args[i] = _SVM_SHADOW.get(args[i], args[i])
    args[j] = "none"
    args[k] = "keep"
    return ev if tuple(args) == ev.args else Event(ev.kind, tuple(args))


def foreign_controls(config: Config, ev: Event) -> list[str]:
    """The flags of an `l1.controls` event set to 1 that belong to the other
    vendor (`VENDOR_CONTROLS`)."""
    if ev.kind != _CONTROLS:
        return []
    return [p.name for p, v in zip(ev.spec.params, ev.args)
            if v and VENDOR_CONTROLS.get(p.name, config.vendor) != config.vendor]


def vendor_controls(config: Config, ev: Event) -> Event:
    """`ev` with the other vendor's `l1.controls` flags cleared (their one
    meaning: none)."""
    foreign = foreign_controls(config, ev)
    if not foreign:
        return ev
    return Event(ev.kind, tuple(False if p.name in foreign else v for p, v in zip(ev.spec.params, ev.args)))


def pending_exception_unsettable(config: Config, ev: Event) -> bool:
    """`ev` asks KVM_SET_VCPU_EVENTS for a pending exception that the
    configuration's ABI cannot express: without KVM_CAP_EXCEPTION_PAYLOAD
    there is no pending exception, only an injected one."""
    return ev.kind == _SET_EXCEPTION and not ev.args[2] and EXCEPTION_PAYLOAD not in config.caps


@dataclass(frozen=True)
class Scenario:
    """A configuration and its events.  Constructing one gives each event
    its one meaning under the configuration: without `caps=exception_payload`
    a `user.set_exception` is injected (`pending_exception_unsettable`); an
    `l1.controls` flag of the other vendor is 0 (`vendor_controls`)."""

    config: Config = field(default_factory=Config)
    events: tuple[Event, ...] = ()
    #: Leading comment of a text file; not part of equality.
    description: str = field(default="", compare=False)

    def __post_init__(self):
        events = self.events
        if self.config.vendor == "svm" and any(e.kind == _VMENTRY for e in events):
            events = tuple(svm_vmentry(e) if e.kind == _VMENTRY else e for e in events)
        if EXCEPTION_PAYLOAD not in self.config.caps:
            events = tuple(Event(e.kind, e.args[:2] + (True,)) if pending_exception_unsettable(self.config, e)
                           else e for e in events)
        if any(e.kind == _CONTROLS for e in events):
            events = tuple(vendor_controls(self.config, e) for e in events)
        if events != self.events:
            object.__setattr__(self, "events", events)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def parse_exception_vector(text: str) -> int:
    """`#PF`, `14` or `0xe` to 14."""
    if text.upper() in {k.upper() for k in MNEMONICS}:
        return next(v for k, v in MNEMONICS.items() if k.upper() == text.upper())
    return int(text, 0)
