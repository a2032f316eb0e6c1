"""What an implementation is, what it produces, and the registry of them.

An implementation turns a `Scenario` into an `Outcome`: what L1 and L2 could
observe.  The reference model returns `Allowed` (several outcomes) where the
manuals leave a choice.  Implementations are registered by name in
`IMPLEMENTATIONS` and loaded lazily; loading checks the class against this
spec and names what is wrong.
"""
from __future__ import annotations

import abc
import difflib
import importlib
from dataclasses import dataclass, field, fields
from typing import ClassVar

from impls.arch import Ev, EvType


class Undefined:
    """A value the manuals leave undefined: it matches any value.  Every use
    names the rule that makes it undefined."""

    __slots__ = ("why",)

    def __init__(self, why: str):
        self.why = why

    def __eq__(self, other):
        return isinstance(other, Undefined)

    def __hash__(self):
        return 0

    def __repr__(self):
        return f"Undefined({self.why!r})"

    def __str__(self):
        return "undefined"


def matches(expected, actual) -> bool:
    """Equality in which an `Undefined` part of `expected` matches anything."""
    if expected == actual:  # equal values match (the oracle's common case)
        return True
    if isinstance(expected, Undefined):
        return True
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, tuple):
        return len(expected) == len(actual) and all(map(matches, expected, actual))
    names = _FIELD_NAMES.get(type(expected))
    if names is None and hasattr(expected, "__dataclass_fields__"):
        names = _FIELD_NAMES[type(expected)] = tuple(f.name for f in fields(expected))
    if names is not None:
        return all(matches(getattr(expected, n), getattr(actual, n)) for n in names)
    return False


#: Field names of the dataclasses `matches` met, by type.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


# ---------------------------------------------------------- observations --


def _offset(value) -> str:
    """` ret=+2`: a return address / saved RIP as an offset in bytes from the
    start of the instruction that raised or was interrupted; nothing for +0
    (the guest resumes at that instruction: a fault, or an event taken
    between instructions) or where the manuals leave it undefined."""
    if isinstance(value, Undefined) or not value:
        return ""
    return f" ret={value:+d}"


@dataclass(frozen=True, slots=True)
class Delivered:
    """An event delivered through a guest's IDT (its handler will run).

    A handler sees a vector and an error code, not how the exception was
    raised: a software exception (INT3, INTO, INT1) is recorded as the
    hardware exception it delivers (SDM 6.4.2 "Software-Generated
    Exceptions" -- the processor generates the exception as it would for a
    fault or trap of that vector).

    `ret`: the return address the delivery pushed, as an offset in bytes
    from the start of the instruction that raised the event or was
    interrupted by it (`_offset`): +0 for a fault (the instruction executes
    again) and for an event taken between instructions, the instruction's
    length after INT n / INT3 / INTO / INT1, the VM-entry instruction length
    (VMX) or next_rip - rip (SVM) for an injected software event; undefined
    for #DF and #MC (SDM 6.15).  What the rules are: impls.reference.model,
    `Machine._delivered`."""

    level: int
    event: Ev
    ret: int | Undefined = 0

    def __post_init__(self):
        if self.event.type in (EvType.SOFT_EXCEPTION, EvType.PRIV_SOFT_EXCEPTION):
            object.__setattr__(self, "event", Ev(EvType.HW_EXCEPTION, self.event.vector, self.event.error_code))

    def __str__(self):
        return f"L{self.level} handles {self.event}{_offset(self.ret)}"


@dataclass(frozen=True, slots=True)
class VmExit:
    """A nested VM exit from L2 to L1, as L1 reads it in vmcs12 / vmcb12.

    `reason`: VMX basic exit reason name, or SVM exit code name.  `info`: the
    exit interruption information (VMX) or the intercepted exception with
    EXITINFO1's error code (SVM).  `vectoring`: IDT-vectoring information
    (VMX) or EXITINTINFO (SVM).  `address`: exit qualification / EXITINFO2
    of a #PF exit.  `ret`: the guest RIP saved in vmcs12 / vmcb12, as an
    offset from the instruction that raised or was interrupted (`_offset`;
    +0 for every exit the language makes, undefined after a triple fault or
    shutdown).  `length`: the VM-exit instruction length (VMX) or nRIP -
    rIP (SVM with NRIPS) where the manuals define it for a software event
    (an exit on INT3 / INTO, or on ICEBP on VMX, or during the delivery of
    an INT n / INT3 / INTO / INT1 on VMX), printed ` len=N`; None elsewhere
    (undefined on VMX, nRIP zero on SVM).
    `halted`: the guest activity state the exit saved in
    vmcs12 is HLT (VMX, SDM 27.3.4: L2 was halted and the event that woke
    it exited directly, SDM 27.1); always False on SVM, whose VMCB holds no
    activity state (APM Table B-2).
    """

    reason: str
    info: Ev | None = None
    vectoring: Ev | None | Undefined = None
    address: int | None = None
    halted: bool = False
    ret: int | Undefined = 0
    length: int | None = None

    def __str__(self):
        s = f"EXIT {self.reason}"
        if self.info is not None:
            # SVM's exit code already names the exception: "EXCP #PF(ec=0x2)".
            info = str(self.info)
            s = s + info[len(self.reason) - 5:] if self.reason == f"EXCP {info.split('(')[0]}" else f"{s} {info}"
        if self.address is not None:
            s += f" addr={self.address:#x}"
        s += _offset(self.ret)
        if self.length is not None:
            s += f" len={self.length}"
        if self.vectoring is not None:
            s += f", IDT-vectoring: {self.vectoring}"
        if self.halted:
            s += ", activity HLT"
        return s


@dataclass(frozen=True, slots=True)
class EntryFailed:
    """L1's VM entry failed: VMfail / a failed-entry exit (VMX), or
    VMEXIT_INVALID (SVM).  L1 goes on running."""

    reason: str

    def __str__(self):
        return f"ENTRY FAILED {self.reason}"


@dataclass(frozen=True, slots=True)
class Reset:
    """An INIT signal reset the vCPU (SDM 9.1, APM 15.13 and 15.17 for when
    INIT is held).  Nothing is followed past a reset: the vCPU restarts from
    its INIT state, which no scenario event describes, so an implementation
    stops there and reports no final state.  `level` is the level that was
    running when the INIT was taken."""

    level: int

    def __str__(self):
        return f"INIT resets the vCPU (L{self.level} running)"


@dataclass(frozen=True, slots=True)
class SmiHandled:
    """An SMI was taken: the vCPU entered SMM, and the SMM handler (firmware,
    not a guest level) returned to the interrupted level with RSM.  `level`
    is the level running when the SMI was taken and to which RSM returned."""

    level: int

    def __str__(self):
        return f"SMI handled in SMM (L{self.level} running)"


#: KVM_VCPUEVENT shadow bits (api.rst 4.31, interrupt.shadow): MOV-SS, STI.
SHADOW_MOV_SS, SHADOW_STI = 1, 2


@dataclass(frozen=True, slots=True)
class VcpuEvents:
    """What KVM_GET_VCPU_EVENTS returned to userspace (`user.get_events`),
    the fields that carry events (Documentation/virt/kvm/api.rst 4.31): the
    exception (`exception`: vector and error code, the error code None where
    has_error_code is 0), pending and / or injected, its payload where
    KVM_CAP_EXCEPTION_PAYLOAD is on and has_payload is 1; the NMI injected,
    pending (a count: the ABI's nmi.pending is a u8) and masked; the
    injected interrupt's vector and soft flag; interrupt.shadow (bits
    `SHADOW_MOV_SS`, `SHADOW_STI`); smi.pending and smi.latched_init;
    triple_fault.pending where KVM_CAP_X86_TRIPLE_FAULT_EVENT is on.  A
    field the ABI marks invalid (an exception neither pending nor injected,
    an interrupt not injected) is not recorded.  Recorded in L1's trace:
    the VMM, not a guest level, reads it."""

    exception: Ev | None = None
    exception_pending: bool = False
    exception_injected: bool = False
    payload: int | None = None
    nmi_injected: bool = False
    nmi_pending: int = 0
    nmi_masked: bool = False
    interrupt: int | None = None
    interrupt_soft: bool = False
    shadow: int = 0
    smi_pending: bool = False
    latched_init: bool = False
    triple_fault: bool = False

    def describe(self, values: bool = True) -> str:
        """The snapshot in words; without `values`, no vectors, error codes
        or payloads (a signature's shape)."""
        parts = []
        if self.exception is not None:
            exc = str(self.exception) if values else ("#DF" if self.exception.vector == 8 else
                                                      "#PF" if self.exception.vector == 14 else "exception")
            held = [w for w, on in (("pending", self.exception_pending), ("injected", self.exception_injected)) if on]
            parts.append(f"{exc} {'+'.join(held)}")
            if self.payload is not None:
                parts.append(f"payload {self.payload:#x}" if values else "payload")
        if self.nmi_injected:
            parts.append("NMI injected")
        if self.nmi_pending:
            parts.append(f"NMIs pending {self.nmi_pending}")
        if self.nmi_masked:
            parts.append("NMIs masked")
        if self.interrupt is not None:
            kind = "soft interrupt" if self.interrupt_soft else "interrupt"
            parts.append(f"{kind} {self.interrupt:#x} injected" if values else f"{kind} injected")
        if self.shadow:
            parts.append("shadow " + "+".join(n for n, b in (("mov_ss", SHADOW_MOV_SS), ("sti", SHADOW_STI))
                                              if self.shadow & b))
        for name in ("smi_pending", "latched_init", "triple_fault"):
            if getattr(self, name):
                parts.append(name.replace("_", " "))
        return "KVM_GET_VCPU_EVENTS: " + (", ".join(parts) or "nothing held")

    def __str__(self):
        return self.describe()


Observation = Delivered | VmExit | EntryFailed | Reset | SmiHandled | VcpuEvents


@dataclass(frozen=True, slots=True)
class FinalState:
    """The vCPU after a last `run`, at its quiescent point (None after a
    `Reset`)."""

    level: int
    nmi_pending: int  # NMIs not yet delivered
    irq_pending: tuple[int, ...]  # interrupt vectors not yet delivered
    nmi_blocked: bool  # of the running level
    interrupt_shadow: bool
    interrupts_enabled: bool  # RFLAGS.IF of the running level
    cr2: int
    init_pending: bool = False  # an INIT held (latched), as KVM_GET_VCPU_EVENTS's smi.latched_init
    smi_pending: bool = False  # an SMI not yet taken, as KVM_GET_VCPU_EVENTS's smi.pending
    halted: bool = False  # the running level is in the HLT state, as KVM_GET_MP_STATE's HALTED


@dataclass(frozen=True)
class Outcome:
    """Everything compared.  Traces are (step, observation) pairs: `step` is
    the index of the scenario event whose processing produced it
    (len(events) for the implicit final `run`)."""

    l1: tuple[tuple[int, Observation], ...] = ()
    l2: tuple[tuple[int, Observation], ...] = ()
    #: Step at which a shutdown (triple fault) reached userspace, or None.
    shutdown: int | None = None
    final: FinalState | None = None
    #: KVM's own alarms (a WARN_ON_ONCE that would fire); always () for the
    #: reference, so an alarm is a divergence even where the rest agrees.
    alarms: tuple[str, ...] = ()
    #: The step bound was hit (a livelock), or None.
    livelock: str | None = None
    #: (step, text): what the implementation did and why -- the rule the
    #: reference applied, the KVM function that queued, merged or injected.
    #: For people (`evdiff explain`); never compared.
    notes: tuple[tuple[int, str], ...] = field(default=(), compare=False)
    #: Reference only: from this step on the manuals define nothing (the
    #: scenario put the vCPU in a state no CPU can be in); the oracle compares
    #: only what happened before it.  Each use cites its reason in a note.
    undefined_from: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = ("l1", "l2", "shutdown", "final", "alarms", "livelock")

    def to_json(self) -> dict:
        def obs(pairs):
            return [[step, str(o)] for step, o in pairs]

        final = None
        if self.final is not None:
            final = {f.name: getattr(self.final, f.name) for f in fields(self.final)}
            final["irq_pending"] = list(final["irq_pending"])
        return {
            "l1": obs(self.l1),
            "l2": obs(self.l2),
            "shutdown": self.shutdown,
            "final": final,
            "alarms": list(self.alarms),
            "livelock": self.livelock,
        }


@dataclass(frozen=True)
class Allowed:
    """Every outcome the manuals allow, for scenarios where they leave a
    choice; `choices` says which rules made them differ.  `complete` is
    False where the reference met too many choices to explore them all:
    `outcomes` are then some of the allowed outcomes, not all, and
    `choices` says how many runs were explored."""

    outcomes: tuple[Outcome, ...]
    choices: tuple[str, ...] = field(default=())
    complete: bool = True


# --------------------------------------------------------- implementations --


class _HandlerNames(dict):
    """Event kind -> the name of its handler method in an implementation:
    `l1.vmentry` -> `ev_l1_vmentry`, computed once a kind."""

    def __missing__(self, kind: str) -> str:
        name = self[kind] = "ev_" + kind.replace(".", "_")
        return name


HANDLER = _HandlerNames()


class Implementation(abc.ABC):
    """One implementation under comparison.

    Subclasses set `name` (the registry key), `origin` (the manual edition or
    kernel tree it follows) and `summary`, and implement `run`, which must be
    deterministic and must not raise on any scenario: an exception is
    reported as the implementation's crash.
    """

    name: ClassVar[str]
    origin: ClassVar[str]
    summary: ClassVar[str]

    @abc.abstractmethod
    def run(self, scenario) -> Outcome | Allowed: ...


#: name -> "module:Class", loaded on first use.  Order is display order.
IMPLEMENTATIONS: dict[str, str] = {
    "reference": "impls.reference:Reference",
    "prepatch": "impls.prepatch:Prepatch",
    "postpatch": "impls.postpatch:Postpatch",
    "postpatch-v2": "impls.postpatch.april:PostpatchV2",
    "upstream": "impls.upstream:Upstream",
    "current": "impls.current:Current",
}

#: (before, after) pairs for which the oracle gives a verdict.
PAIRS: tuple[tuple[str, str], ...] = (
    ("prepatch", "postpatch"),
    ("prepatch", "postpatch-v2"),
    ("prepatch", "upstream"),
    ("prepatch", "current"),
    ("upstream", "current"),
)

_loaded: dict[str, Implementation] = {}


class RegistryError(Exception):
    pass


def load(name: str) -> Implementation:
    """The registered implementation `name`, instantiated once."""
    if name in _loaded:
        return _loaded[name]
    target = IMPLEMENTATIONS.get(name)
    if target is None:
        near = difflib.get_close_matches(name, list(IMPLEMENTATIONS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; registered: {', '.join(IMPLEMENTATIONS)}"
        raise RegistryError(f"no implementation '{name}'{hint}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Implementation)):
        raise RegistryError(f"implementation '{name}': {target} is not an Implementation subclass")
    for attr in ("name", "origin", "summary"):
        if not isinstance(getattr(cls, attr, None), str):
            raise RegistryError(f"implementation '{name}': {target} lacks the class attribute '{attr}'")
    if cls.name != name:
        raise RegistryError(f"implementation '{name}': {target}.name is '{cls.name}'")
    if getattr(cls.run, "__isabstractmethod__", False):
        raise RegistryError(f"implementation '{name}': {target} does not implement run()")
    _loaded[name] = cls()
    return _loaded[name]


def names() -> list[str]:
    return list(IMPLEMENTATIONS)
