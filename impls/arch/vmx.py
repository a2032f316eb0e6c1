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
}


#: Types of the events an instruction raises (4 INT n, 5 INT1, 6 INT3 / INTO):
#: their injection pushes RIP plus the VM-entry instruction length (SDM
#: 26.5.1.1), and an exit during their delivery, or an exit on INT3 / INTO
#: itself, reports the instruction's length (SDM 27.2.4).
INSTRUCTION_TYPES = frozenset({EvType.SOFT_INT, EvType.PRIV_SOFT_EXCEPTION, EvType.SOFT_EXCEPTION})


def encode(ev: Ev | None) -> tuple[int, int]:
    """(interruption info, error code) for an event; (0, 0) for none."""
    if ev is None:
        return 0, 0
    info = INTR_INFO_VALID | (int(ev.type) << 8) | ev.vector
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


def entry_wants_error_code(ev: Ev, protected_mode: bool) -> bool:
    """Whether VM entry requires the deliver-error-code bit for injecting
    `ev` (SDM 26.2.1.3): 1 if and only if (unrestricted guest is 0 or the
    guest's CR0.PE is 1), the type is hardware exception and the vector is
    in `ENTRY_ERROR_CODE_VECTORS`; a mismatch fails the entry with
    VMfailValid, VM-instruction error 7 (SDM 30.4)."""
    return ev.type is EvType.HW_EXCEPTION and protected_mode and ev.vector in ENTRY_ERROR_CODE_VECTORS


def decode(info: int, error_code: int = 0) -> Ev | None:
    if not info & INTR_INFO_VALID:
        return None
    ec = error_code if info & INTR_INFO_DELIVER_CODE else None
    return Ev(EvType((info >> 8) & 7), info & 0xFF, ec)


def reason_name(reason: int) -> str:
    failed = "FAILED_ENTRY|" if reason & FAILED_VMENTRY else ""
    base = reason & 0xFFFF
    return failed + EXIT_REASON_NAMES.get(base, str(base))
