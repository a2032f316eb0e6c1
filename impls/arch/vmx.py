"""VMX encodings.  SDM 24.8.3 (VM-entry interruption-information field,
Table 24-13), 24.9.2 (exit interruption info, Table 24-15; IDT-vectoring
info, Table 24-16), App. C (basic exit reasons).  Intel only."""
from __future__ import annotations

from impls.arch.events import Ev, EvType

INTR_INFO_VALID = 1 << 31
INTR_INFO_DELIVER_CODE = 1 << 11
INTR_INFO_NMI_UNBLOCKED_BY_IRET = 1 << 12

#: App. C "VMX Basic Exit Reasons".
EXCEPTION_NMI = 0
EXTERNAL_INTERRUPT = 1
TRIPLE_FAULT = 2
INIT_SIGNAL = 3
INTERRUPT_WINDOW = 7
NMI_WINDOW = 8
HLT = 12
VMCALL = 18
INVALID_GUEST_STATE = 33
MONITOR_TRAP_FLAG = 37
#: Guest activity states (SDM 24.4.2): 0 active, 1 HLT.
ACTIVITY_ACTIVE = 0
ACTIVITY_HLT = 1
#: Bit 31 of the exit reason: the VM entry failed (SDM 26.7, 24.9.1).
FAILED_VMENTRY = 1 << 31

EXIT_REASON_NAMES = {
    EXCEPTION_NMI: "EXCEPTION_NMI",
    EXTERNAL_INTERRUPT: "EXTERNAL_INTERRUPT",
    TRIPLE_FAULT: "TRIPLE_FAULT",
    INIT_SIGNAL: "INIT",
    INTERRUPT_WINDOW: "INTERRUPT_WINDOW",
    NMI_WINDOW: "NMI_WINDOW",
    HLT: "HLT",
    VMCALL: "VMCALL",
    INVALID_GUEST_STATE: "INVALID_GUEST_STATE",
    MONITOR_TRAP_FLAG: "MONITOR_TRAP_FLAG",
}

#: VM-instruction error 7, "VM entry with invalid control field(s)" (SDM 30.4).
ENTRY_INVALID_CONTROL_FIELD = 7


#: Types of the events an instruction raises (4 INT n, 5 INT1, 6 INT3 / INTO):
#: their injection pushes RIP plus the VM-entry instruction length (SDM
#: 26.5.1.1), and an exit during their delivery, or an exit on INT3 / INTO
#: itself, reports the instruction's length (SDM 27.2.4).
INSTRUCTION_TYPES = frozenset({EvType.SOFT_INT, EvType.PRIV_SOFT_EXCEPTION, EvType.SOFT_EXCEPTION})


#: Bits 30:12 of the VM-entry interruption-information field, reserved
#: (SDM 24.8.3 Table 24-13); `Ev.reserved` holds their value.
INTR_INFO_RESERVED_SHIFT = 12
INTR_INFO_RESERVED_MASK = 0x7FFFF << INTR_INFO_RESERVED_SHIFT


def encode(ev: Ev | None) -> tuple[int, int]:
    """(interruption info, error code) for an event; (0, 0) for none."""
    if ev is None:
        return 0, 0
    info = INTR_INFO_VALID | (int(ev.type) << 8) | ev.vector | (ev.reserved << INTR_INFO_RESERVED_SHIFT)
    if ev.error_code is not None:
        info |= INTR_INFO_DELIVER_CODE
    return info, ev.error_code or 0


#: The vectors whose injection must set the deliver-error-code bit, SDM
#: 26.2.1.3 (V3-1098): "8 = #DF; 10 = TS; 11 = #NP; 12 = #SS; 13 = #GP;
#: 14 = #PF; or 17 = #AC".  The 059 edition predates CET: #CP (21) is not in
#: the list, and 26.5.1 (footnote 3) counts 21-31 as unused vectors.  What
#: newer editions list is NOT FOUND here (KVM's CET series adds 21 and, for
#: IA32_VMX_BASIC[56], drops the vector check: a hint, not a source).
ENTRY_ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})


def entry_wants_error_code(ev: Ev, protected_mode: bool, vectors=ENTRY_ERROR_CODE_VECTORS) -> bool:
    """Whether VM entry requires the deliver-error-code bit for injecting
    `ev` (SDM 26.2.1.3): 1 if and only if (unrestricted guest is 0 or the
    guest's CR0.PE is 1), the type is hardware exception and the vector is
    in `ENTRY_ERROR_CODE_VECTORS` (`vectors`: the simulated CPU adds #CP,
    impls.hw.environment); a mismatch fails the entry with VMfailValid,
    VM-instruction error 7 (SDM 30.4)."""
    return ev.type is EvType.HW_EXCEPTION and protected_mode and ev.vector in vectors


def decode(info: int, error_code: int = 0) -> Ev | None:
    """The event an interruption-information field describes; bits 30:12
    (bit 12 is NMI unblocking in exit information) are not read."""
    if not info & INTR_INFO_VALID:
        return None
    ec = error_code if info & INTR_INFO_DELIVER_CODE else None
    return Ev(EvType((info >> 8) & 7), info & 0xFF, ec)


def decode_entry(info: int, error_code: int = 0) -> Ev | None:
    """What L1 wrote into the VM-entry injection fields, reserved bits 30:12
    included (`Ev.reserved`)."""
    ev = decode(info, error_code)
    if ev is None or not info & INTR_INFO_RESERVED_MASK:
        return ev
    return Ev(ev.type, ev.vector, ev.error_code, (info & INTR_INFO_RESERVED_MASK) >> INTR_INFO_RESERVED_SHIFT)


def hlt_state_accepts(ev: Ev) -> bool:
    """Whether a VM entry into the HLT activity state may inject `ev` (SDM
    26.3.1.5): an external interrupt, an NMI, a hardware #DB or #MC, or an
    MTF VM exit (type 7); anything else fails the entry (reason 33)."""
    return ev.type in (EvType.EXT_INTR, EvType.NMI, EvType.OTHER_EVENT) or (
        ev.type is EvType.HW_EXCEPTION and ev.vector in (1, 18))


#: SDM 26.2.1.3 (V3-1098), the checks on the VM-entry event-injection
#: fields that fail VM entry with VMfailValid, VM-instruction error 7, in
#: the manual's order: the type is not 1 (reserved), nor 7 unless the
#: processor supports the monitor trap flag; an NMI has vector 2, a
#: hardware exception a vector of at most 31, an "other event" vector 0;
#: deliver-error-code per `entry_wants_error_code`; reserved bits 30:12
#: clear; with an error code, its bits 31:16 clear (the 059 text says 31:15;
#: hardware accepts bit 15: kvm-unit-tests' vmx_tests.c asserted a failed
#: entry for bit 15, which real processors did not give, and was changed to
#: 31:16 in commit 65d7e712, 2019, "the SDM is wrong ... confirmed with
#: Intel"; it tests 31:16 on hardware since).  The instruction-length check
#: for types 4-6 is not here: the length is L1's, not the event's.
def entry_control_error(ev: Ev, protected_mode: bool, mtf_supported: bool = True,
                        error_code_vectors=ENTRY_ERROR_CODE_VECTORS) -> str | None:
    """The first check of SDM 26.2.1.3 the injection `ev` fails (a few
    words), or None."""
    t = ev.type
    if t is EvType.RESERVED or (t is EvType.OTHER_EVENT and not mtf_supported):
        return f"interruption type {int(t)} reserved"
    if (t is EvType.NMI and ev.vector != 2) or (t is EvType.HW_EXCEPTION and ev.vector > 31) or (
            t is EvType.OTHER_EVENT and ev.vector != 0):
        return f"vector {ev.vector:#x} invalid for type {int(t)}"
    if entry_wants_error_code(ev, protected_mode, error_code_vectors) != (ev.error_code is not None):
        return "deliver-error-code bit"
    if ev.reserved:
        return "reserved bits 30:12"
    if (ev.error_code or 0) >> 16:
        return "error code bits 31:16"
    return None


def reason_name(reason: int) -> str:
    failed = "FAILED_ENTRY|" if reason & FAILED_VMENTRY else ""
    base = reason & 0xFFFF
    return failed + EXIT_REASON_NAMES.get(base, str(base))
