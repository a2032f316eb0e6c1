"""SVM encodings.  APM vol. 2 15.20 (EVENTINJ, Figure 15-5, Table 15-11),
15.7.2 (EXITINTINFO, same layout), App. C Table C-1 (exit codes: 40h-5Fh
exception vectors 0-31, 60h INTR ... 64h VINTR, 78h HLT, 7Fh SHUTDOWN, 81h VMMCALL,
-1 VMEXIT_INVALID; checked in APMe, read_file id 66442657062).  AMD only."""
from __future__ import annotations

from impls.arch.events import Ev, EvType

EVTINJ_VALID = 1 << 31
EVTINJ_VALID_ERR = 1 << 11

#: EVENTINJ types (APM 15.20 Table 15-11): 0 INTR, 2 NMI, 3 exception, 4 INTn.
TYPE_INTR, TYPE_NMI, TYPE_EXEPT, TYPE_SOFT = 0, 2, 3, 4

EXIT_EXCP_BASE = 0x40
EXIT_INTR = 0x60
EXIT_NMI = 0x61
EXIT_SMI = 0x62
EXIT_INIT = 0x63
EXIT_VINTR = 0x64
EXIT_HLT = 0x78
EXIT_SHUTDOWN = 0x7F
EXIT_VMMCALL = 0x81
EXIT_ERR = -1  # VMEXIT_INVALID

EXIT_NAMES = {
    EXIT_INTR: "INTR",
    EXIT_NMI: "NMI",
    EXIT_SMI: "SMI",
    EXIT_INIT: "INIT",
    EXIT_VINTR: "VINTR",
    EXIT_HLT: "HLT",
    EXIT_SHUTDOWN: "SHUTDOWN",
    EXIT_VMMCALL: "VMMCALL",
    EXIT_ERR: "VMEXIT_INVALID",
}


#: What the scenario's L1 writes with `l1.controls v_irq=1` (APM 15.21.4,
#: Figure/Table B-1 int_ctl): V_IRQ=1 with V_INTR_PRIO 0Fh, the highest, in
#: V_INTR_VECTOR F1h, V_TPR 0 and V_IGN_TPR 0, as kvm-unit-tests' svm test
#: virq_inject (x86/svm_tests.c, virq_inject_prepare) does; L2 never writes
#: CR8, so its V_TPR stays 0 and the priority check always passes.
L1_V_INTR_VECTOR = 0xF1
L1_V_INTR_PRIO = 0xF


def encode(ev: Ev | None) -> tuple[int, int]:
    """(EVENTINJ / EXITINTINFO low word, error code).  The events INT1, INT3
    and INTO raise are exceptions, type 3, not software interrupts (APM
    15.7.2, the paragraph after Table 15-1)."""
    if ev is None:
        return 0, 0
    typ = {EvType.PRIV_SOFT_EXCEPTION: TYPE_EXEPT, EvType.SOFT_EXCEPTION: TYPE_EXEPT}.get(
        ev.type, int(ev.type)
    )
    info = EVTINJ_VALID | (typ << 8) | ev.vector
    if ev.error_code is not None:
        info |= EVTINJ_VALID_ERR
    return info, ev.error_code or 0


#: Bits 30:12 of EVENTINJ, "Reserved, SBZ" (APM 15.20 Figure 15-5).
EVTINJ_RESERVED_SHIFT = 12
EVTINJ_RESERVED_MASK = 0x7FFFF << EVTINJ_RESERVED_SHIFT


def encode_inj(ev: Ev | None) -> tuple[int, int]:
    """EVENTINJ as L1 writes it for `l1.vmentry inject=`: the type as given
    (no folding of 5 and 6 into 3: on SVM those are reserved values, APM
    15.20 Table 15-11), reserved bits 30:12 from `Ev.reserved`."""
    if ev is None:
        return 0, 0
    info = EVTINJ_VALID | (int(ev.type) << 8) | ev.vector | (ev.reserved << EVTINJ_RESERVED_SHIFT)
    if ev.error_code is not None:
        info |= EVTINJ_VALID_ERR
    return info, ev.error_code or 0


#: The types of EVENTINJ that are not reserved (APM 15.20 Table 15-11).
EVTINJ_TYPES = frozenset({TYPE_INTR, TYPE_NMI, TYPE_EXEPT, TYPE_SOFT})


def decode(info: int, error_code: int = 0) -> Ev | None:
    """The event an EVENTINJ / EXITINTINFO value describes.  Type 3 with
    vector 3 or 4 is INT3's #BP or INTO's #OF, a software exception: that is
    how EXITINTINFO reports them (APM 15.7.2), and an injected one "behaves
    like a trap raised by INT3 and INTO" (APM 15.20).  No other event is an
    exception with those vectors."""
    if not info & EVTINJ_VALID:
        return None
    ec = error_code if info & EVTINJ_VALID_ERR else None
    typ, vector = (info >> 8) & 7, info & 0xFF
    if typ == TYPE_EXEPT and vector in (3, 4):
        return Ev(EvType.SOFT_EXCEPTION, vector, ec)
    return Ev(EvType(typ), vector, ec)


def exit_name(code: int) -> str:
    from impls.arch import mnemonic

    if EXIT_EXCP_BASE <= code < EXIT_EXCP_BASE + 32:
        return f"EXCP {mnemonic(code - EXIT_EXCP_BASE)}"
    return EXIT_NAMES.get(code, hex(code))


#: Exceptions whose intercept writes the error code to EXITINFO1 (APM 15.12:
#: #NP, #SS, #GP, #AC, #PF, #CP; for #TS EXITINFO1 is undefined, for #DF
#: EXITINFO is undefined).  Other exception exits carry no error code.
EXITINFO1_ERROR_CODE = frozenset({11, 12, 13, 14, 17, 21})


def exception_exit_info(vector: int, exit_info_1: int) -> Ev:
    """The intercepted exception as L1 can read it from EXITCODE/EXITINFO1."""
    return Ev(EvType.HW_EXCEPTION, vector, exit_info_1 if vector in EXITINFO1_ERROR_CODE else None)
