"""Architectural facts shared by every implementation.

Everything here is a fact read in the manuals, never a decision of KVM.  Each
table or function names its source; `../shared/MANUALS.md` records the page
each was checked on.  Abbreviations used in citations:

* SDM   = Intel SDM vol. 3 (325384-059US, 2016): ch. 6 interrupts and
          exceptions, ch. 24-27 VMX, App. C exit reasons.  Newer editions
          number these ch. 7 and ch. 25-28.
* SDM2  = Intel SDM vol. 2 (325383-059US), INT n / IRET pseudo-code.
* APM   = AMD APM vol. 2 (24593), ch. 15 (SVM), English rev. 3.44.
* APM8* = AMD APM vol. 2 ch. 8, **known here only from secondary copies**
          (course notes and the rust-osdev x86_64 crate copying AMD's #DF
          table); every rule citing it is to be re-checked against the PDF.

Most facts here feed both the reference and the simulated CPU under the KVM
ports (`impls.hw`), so an error in one is shared by both sides and no
differential run shows it.  Each says which vendor's source it has; where
only Intel's manual is known, the docstring says so, and the AMD side is an
assumption that the vendors agree.

Sub-modules: `events` (the event value type shared by all implementations),
`vmx` and `svm` (exit encodings).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from impls.arch.events import Ev, EvType  # noqa: F401  (re-exported)


class ExcClass(enum.Enum):
    """Exception classes for double-fault purposes (SDM 6.15, Table 6-4)."""

    BENIGN = "benign"
    CONTRIBUTORY = "contributory"
    PAGE_FAULT = "page fault"
    DOUBLE_FAULT = "double fault"


class Kind(enum.Enum):
    """Fault, trap or abort (SDM 6.5, Table 6-1)."""

    FAULT = "fault"
    TRAP = "trap"
    ABORT = "abort"
    INTERRUPT = "interrupt"


@dataclass(frozen=True)
class VectorInfo:
    vector: int
    mnemonic: str
    kind: Kind
    error_code: bool  # pushes an error code in protected mode (Table 6-1)
    exc_class: ExcClass


_B, _C, _P = ExcClass.BENIGN, ExcClass.CONTRIBUTORY, ExcClass.PAGE_FAULT
_F, _T, _A = Kind.FAULT, Kind.TRAP, Kind.ABORT

#: SDM 6.3.1 Table 6-1 "Protected-Mode Exceptions and Interrupts" (type, error
#: code) and 6.15 Table 6-4 "Interrupt and Exception Classes" (class).  #DB is
#: fault or trap; listed as trap (data/single-step, the common case here).
#: Vectors 15 and 22-31 are reserved; 26.5.1 (footnote) makes an injected
#: reserved vector benign.  #CP (21): class NOT FOUND in the 2016 SDM; taken as
#: benign per that same footnote (MANUALS.md open question 4).  #VE (20):
#: page-fault class (Table 6-4; 26.5.1's footnote makes it benign only on a
#: processor without "EPT-violation #VE"); Intel only, no scenario raises it.
#: AMD: the APM's exception table (vol. 2 ch. 8) is NOT FOUND; the error-code
#: column is corroborated for #NP #SS #GP #AC #PF #CP by APM 15.12 (their
#: intercepts put the error code in EXITINFO1), the classes only by APM8*.
#: AMD's 28-31 (#HV, #VC, #SX; #VC and #SX push error codes, APMt) stay
#: reserved here: no scenario raises them.  `kind` is descriptive only.
VECTORS: dict[int, VectorInfo] = {
    v.vector: v
    for v in (
        VectorInfo(0, "#DE", _F, False, _C),
        VectorInfo(1, "#DB", _T, False, _B),
        VectorInfo(2, "NMI", Kind.INTERRUPT, False, _B),
        VectorInfo(3, "#BP", _T, False, _B),
        VectorInfo(4, "#OF", _T, False, _B),
        VectorInfo(5, "#BR", _F, False, _B),
        VectorInfo(6, "#UD", _F, False, _B),
        VectorInfo(7, "#NM", _F, False, _B),
        VectorInfo(8, "#DF", _A, True, ExcClass.DOUBLE_FAULT),
        VectorInfo(9, "#CSO", _F, False, _B),
        VectorInfo(10, "#TS", _F, True, _C),
        VectorInfo(11, "#NP", _F, True, _C),
        VectorInfo(12, "#SS", _F, True, _C),
        VectorInfo(13, "#GP", _F, True, _C),
        VectorInfo(14, "#PF", _F, True, _P),
        VectorInfo(16, "#MF", _F, False, _B),
        VectorInfo(17, "#AC", _F, True, _B),
        VectorInfo(18, "#MC", _A, False, _B),
        VectorInfo(19, "#XM", _F, False, _B),
        VectorInfo(20, "#VE", _F, False, _P),
        VectorInfo(21, "#CP", _F, True, _B),
    )
}
for _v in (15, *range(22, 32)):
    VECTORS[_v] = VectorInfo(_v, f"#{_v}", _F, False, _B)

DE, DB, NMI_VECTOR, BP, OF, BR, UD = 0, 1, 2, 3, 4, 5, 6
DF, TS, NP, SS, GP, PF, AC, MC = 8, 10, 11, 12, 13, 14, 17, 18

MNEMONICS = {info.mnemonic: v for v, info in VECTORS.items()}

#: Vectors only an instruction raises, as a software exception: #BP by INT3
#: and #OF by INTO (SDM 6.3.1 Table 6-1, "Source" column).  VMX reports them
#: as type 6, "software exception" (SDM 24.8.3 Table 24-13; 27.2.2 exit
#: interruption information, 27.2.3 IDT-vectoring); SVM as type 3 (APM 15.7.2).
SOFT_EXCEPTION_VECTORS = frozenset({BP, OF})


def raised_type(vector: int) -> EvType:
    """The type of the exception the current instruction raises on `vector`:
    a software exception for #BP and #OF, which only INT3 and INTO raise, a
    hardware exception otherwise.  A software exception is delivered as a
    trap of its vector (SDM 6.4.2), with EXT=0 in the error code of a fault
    met during its delivery (SDM 6.13, `ext_bit`), is benign for double-fault
    purposes (SDM Table 6-4, `second_exception`) and pushes no error code."""
    return EvType.SOFT_EXCEPTION if vector in SOFT_EXCEPTION_VECTORS else EvType.HW_EXCEPTION


def soft_interrupt(vector: int) -> Ev:
    """What INT n raises: a software interrupt on vector n (VMX type 4, SDM
    24.8.3 Table 24-13; SVM type 4, APM 15.7.2 Table 15-1, "only events
    raised by the INTn instruction (opcode CDh)").  Not an exception: no
    exception bitmap or exception intercept catches it, whatever n (SDM
    25.2, "INT1 and INT3 refer to the instructions with opcodes F1 and CC
    ... and not to INT n with value 1 or 3 for n", quoted from a newer
    edition on the KVM list, read_file id 20981835897; APM 15.9 Table 15-7
    "Software Interrupt" and 15.13: only SVM's INTn intercept does); no
    error code even on an exception's vector (SDM 6.4.2); benign (SDM Table
    6-4, "INT n (all vectors)"); EXT=0 in a fault during its delivery (SDM2
    INT n, `ext_bit`); INT 2 runs the NMI handler without NMI blocking (SDM
    6.3.3)."""
    return Ev(EvType.SOFT_INT, vector)


#: What INT1 (ICEBP, opcode F1) raises: #DB as a privileged software
#: exception, VMX type 5 (SDM 24.8.3 Table 24-13; newer editions' SDM2 INT
#: n/INTO/INT3/INT1 gives the same event types for FRED: "event type 5
#: (privileged software exception) for INT1").  It is not a software
#: interrupt: no gate DPL check, and EXT=1 in a fault during its delivery
#: (SDM2 INT n pseudo-code: "if that event is a software interrupt (INT n,
#: INT3, or INTO), EXT is 0; otherwise (including INT1), EXT is 1"; read in a
#: stored copy of the newer edition, read_file id 60297630593).  The VMX
#: exception bitmap's bit 1 catches it (SDM 25.2, as quoted for
#: `soft_interrupt`); SVM's #DB intercept does not (APM 15.12.2: INT1 "does
#: not trigger the #DB intercept", it has its own ICEBP intercept) and
#: EXITINTINFO records it as an exception, type 3 (APM 15.7.2).
INT1 = Ev(EvType.PRIV_SOFT_EXCEPTION, DB)

#: Length in bytes of the instruction behind a software event, by its type:
#: INT n is CD ib, two bytes; INT3 (CC), INTO (CE) and INT1 (F1) one byte
#: (SDM2 INT n/INTO/INT3/INT1 opcode table; APM 15.7.2 names the same
#: opcodes).  VMX reports it in the VM-exit instruction length of an exit on
#: the instruction or during its event's delivery (SDM 27.2.4) and takes it
#: back as the VM-entry instruction length to push RIP + length (SDM
#: 26.5.1.1); SVM's next_rip plays that part (APM 15.7.1, 15.20).
INSTRUCTION_LENGTH = {EvType.SOFT_INT: 2, EvType.SOFT_EXCEPTION: 1, EvType.PRIV_SOFT_EXCEPTION: 1}


def mnemonic(vector: int) -> str:
    """`#PF` for 14; other vectors in hex (`0x20`)."""
    info = VECTORS.get(vector)
    return info.mnemonic if info else f"{vector:#04x}"


def has_error_code(vector: int) -> bool:
    """Whether a hardware exception on `vector` pushes an error code in
    protected mode (SDM 6.3.1 Table 6-1, 6.13; AMD: see `VECTORS`)."""
    info = VECTORS.get(vector)
    return bool(info and info.error_code)


def exc_class(vector: int) -> ExcClass:
    return VECTORS[vector].exc_class if vector < 32 else ExcClass.BENIGN


class Merge(enum.Enum):
    SERIAL = "handle serially"
    DOUBLE_FAULT = "double fault"
    SHUTDOWN = "shutdown"


def second_exception(first: Ev, second: int) -> Merge:
    """What exception `second`, raised while delivering `first`, becomes.

    SDM vol. 3 6.15, "Interrupt 8 - Double Fault Exception (#DF)", Table 6-5
    "Conditions for Generating a Double Fault".  Only a hardware exception
    can be contributory or page-fault class: NMI, INTR, INT n and the
    software exceptions #BP / #OF (INT3, INTO) are benign (Table 6-4).  AMD:
    APM8* "Double-Fault Exception Conditions" gives the same rows (secondary
    copy only); APM 15.7.2's example (#PF while delivering #DF: shutdown)
    confirms one cell.  #CP's class: NOT FOUND for either vendor (`VECTORS`).
    """
    if first.type is not EvType.HW_EXCEPTION:
        return Merge.SERIAL
    a, b = exc_class(first.vector), exc_class(second)
    if a is ExcClass.DOUBLE_FAULT:
        return Merge.SHUTDOWN if b in (_C, _P) else Merge.SERIAL
    if b is _C and a in (_C, _P):
        return Merge.DOUBLE_FAULT
    if b is _P and a is _P:
        return Merge.DOUBLE_FAULT
    return Merge.SERIAL


def ext_bit(delivering: Ev, vendor: str) -> int:
    """EXT bit of an error code for a fault met while delivering `delivering`.

    `vendor` is the scenario's (`vmx` or `svm`); the vendors differ:

    * Intel (`vmx`): SDM 6.13 "Error Code"; SDM2 INT n pseudo-code: EXT is 0
      while delivering a software interrupt (INT n, INT3, INTO), else 1 --
      also for an exception met while delivering an exception, and for
      INT1's #DB ("otherwise (including INT1), EXT is 1", `INT1`).  SDM 26.5.1.2:
      for VMX injection, types 0/2/3/5 set EXT, 4/6 clear it.
    * AMD (`svm`): EXT is 1 only while delivering an event external to the
      processor (INTR, NMI); an exception met while delivering an exception
      or a software interrupt has EXT=0.  Source: hardware-validated, not the
      manual: KVM's selftest nested_exceptions_test.c (torvalds/linux
      6757641d3982d745a57d1d982656045e8d7b29ac,
      tools/testing/selftests/kvm/x86_64/nested_exceptions_test.c) injects
      #SS into L2 with IDTR.limit=0 and asserts the #GP exit's EXITINFO1 is
      SS_VECTOR*8|IDT = 0x62 on AMD where Intel reports 0x63 (|EXT); it
      passes on both vendors' hardware.  That pins EXT=0 for an exception
      being delivered (INT1's #DB is an exception on AMD, APM 15.7.2); EXT=1
      for INTR and NMI is the selftest's reading of
      AMD's wording, not asserted by it.  The APM's own text (vol. 2 ch. 8,
      "Error Codes") was NOT FOUND, only secondary copies (APM8*).
    """
    if vendor == "svm":
        return 1 if delivering.type in (EvType.EXT_INTR, EvType.NMI) else 0
    return 0 if delivering.type in (EvType.SOFT_INT, EvType.SOFT_EXCEPTION) else 1


def idt_error_code(vector: int, ext: int) -> int:
    """Error code naming an IDT gate: index in bits 15:3, IDT=1 (bit 1), EXT.
    SDM 6.13 Figure 6-6; SDM2 INT n pseudo-code error_code(num, idt=1, ext).
    AMD: the APM text is NOT FOUND; the index and IDT bit are hardware-
    validated by the selftest cited in `ext_bit` (0x62 = #SS*8 | IDT)."""
    return ((vector << 3) | 2 | ext) & 0xFFFF


class Gate(enum.Enum):
    """How a guest's IDT entry for one vector looks (scenario state)."""

    OK = "ok"
    NOT_PRESENT = "not_present"
    BAD_TYPE = "bad_type"


class Mode(enum.Enum):
    REAL = "real"
    PROTECTED = "protected"
    LONG = "long"


#: Error code of the #PF raised when pushing onto a not-present stack page:
#: P=0, W/R=1 (a write), U/S=0 (supervisor).  SDM 4.7, Figure 4-12; AMD's
#: page-fault error code (APM vol. 2 ch. 8) is NOT FOUND here: Intel only.
STACK_PF_ERROR_CODE = 0x2
#: Linear address reported for such a fault (the scenario does not choose it).
STACK_PF_ADDRESS = 0xFFFF_F000


@dataclass(frozen=True)
class DescriptorState:
    """What delivery through one level's IDT depends on (scenario state)."""

    mode: Mode = Mode.PROTECTED
    idt_entries: int = 256
    gates: tuple[tuple[int, Gate], ...] = ()  # only the unusable ones
    stack_fault: int | None = None  # SS or PF: pushes on the handler stack fault


def gate_fault(desc: DescriptorState, event: Ev, vendor: str) -> tuple[int, int] | None:
    """The exception that reading the IDT gate for `event` raises, if any:
    (vector, error code), the error code's EXT bit per `vendor` (`ext_bit`).

    Protected / IA-32e mode, SDM2 INT n pseudo-code, in its order: the
    descriptor beyond the IDT limit, or not an interrupt/trap(/task) gate ->
    #GP(vector*8+2+EXT); the gate not present -> #NP(vector*8+2+EXT) (also
    SDM 6.10 "Interrupt Descriptor Table", 6.12.1).  Real mode (SDM 20.1.4,
    SDM2 INT n real-address mode): an IVT entry beyond the IDTR limit -> #GP;
    IVT entries have no present bit or type.  AMD: only the limit case is
    known, hardware-validated in protected mode (the selftest in `ext_bit`:
    IDTR.limit=0 -> #GP with the gate's error code); the gate type and
    present checks, their order and real mode are Intel's text only (APM
    vol. 2 ch. 8 and vol. 3 INT NOT FOUND).
    """
    if desc.mode is Mode.REAL:
        return (GP, 0) if event.vector >= desc.idt_entries else None
    gate = dict(desc.gates).get(event.vector, Gate.OK)
    ext = ext_bit(event, vendor)
    if event.vector >= desc.idt_entries or gate is Gate.BAD_TYPE:
        return (GP, idt_error_code(event.vector, ext))
    if gate is Gate.NOT_PRESENT:
        return (NP, idt_error_code(event.vector, ext))
    return None


def push_fault(desc: DescriptorState, event: Ev, vendor: str) -> tuple[int, int, int] | None:
    """The exception that pushing the frame for `event` raises, if any:
    (vector, error code, faulting address or 0).

    SDM2 INT n pseudo-code, stack checks: no room on the stack -> #SS(EXT)
    (real mode: #SS, SDM 20.1.4); a not-present stack page -> #PF with its own
    error code (SDM2 INT n; SDM 4.7 "Page-Fault Exceptions").  Intel's text
    only: AMD's stack checks during delivery are NOT FOUND (the EXT bit of
    the #SS follows `ext_bit`'s AMD rule).
    """
    if desc.stack_fault == SS or (desc.stack_fault is not None and desc.mode is Mode.REAL):
        return (SS, 0 if desc.mode is Mode.REAL else ext_bit(event, vendor), 0)
    if desc.stack_fault == PF:
        return (PF, STACK_PF_ERROR_CODE, STACK_PF_ADDRESS)
    return None


def pf_intercepted(bitmap_bit: bool, mask: int, match: int, error_code: int) -> bool:
    """Whether a #PF with `error_code` causes a VM exit.  SDM 25.2 "Other
    Causes of VM Exits" and 24.6.3 "Exception Bitmap": if (PFEC & MASK) ==
    MATCH the exit follows bit 14 of the bitmap, else its inverse.  VMX
    only: SVM has no #PF filter (APM 15.12)."""
    return bitmap_bit if (error_code & mask) == match else not bitmap_bit
