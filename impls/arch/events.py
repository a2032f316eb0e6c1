"""The value every implementation uses to describe one event in flight.

Types follow the VMX interruption-information encoding (SDM 24.8.3 Table
24-13, 24.9.2 Table 24-15/24-16); SVM's EVENTINJ/EXITINTINFO (APM 15.20
Table 15-11) uses 0, 2, 3, 4 of the same numbers and folds 5 and 6 into 3.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class EvType(enum.IntEnum):
    EXT_INTR = 0
    RESERVED = 1  # VMX: reserved; SVM: reserved (only L1's injection fields can hold it)
    NMI = 2
    HW_EXCEPTION = 3
    SOFT_INT = 4
    PRIV_SOFT_EXCEPTION = 5  # INT1 / ICEBP
    SOFT_EXCEPTION = 6  # INT3, INTO
    OTHER_EVENT = 7  # VMX: "other event" (vector 0: a pending MTF VM exit); SVM: reserved


@dataclass(frozen=True, slots=True)
class Ev:
    """One event: type, vector and the error code it carries (None if none).

    `reserved` is only for what L1 writes into the VM-entry injection
    fields (`l1.vmentry inject=`): the value of bits 30:12 of the
    interruption-information field / EVENTINJ, which the manuals reserve
    (SDM 24.8.3, APM 15.20); every event a CPU raises or reports has 0."""

    type: EvType
    vector: int
    error_code: int | None = None
    reserved: int = 0

    def __str__(self) -> str:
        from impls.arch import mnemonic

        if self.reserved or self.type in (EvType.RESERVED, EvType.OTHER_EVENT) or (
                self.type in (EvType.NMI, EvType.EXT_INTR, EvType.SOFT_INT) and self.error_code is not None) or (
                self.type is EvType.NMI and self.vector != 2):
            ec = "" if self.error_code is None else f" ec={self.error_code:#x}"
            rsvd = f" reserved={self.reserved:#x}" if self.reserved else ""
            return f"type {int(self.type)} vector {self.vector:#04x}{ec}{rsvd}"
        if self.type is EvType.NMI:
            return "NMI"
        if self.type is EvType.EXT_INTR:
            return f"ext-int {self.vector:#04x}"
        if self.type is EvType.SOFT_INT:
            return f"INT {self.vector:#04x}"
        name = mnemonic(self.vector)
        if self.type is EvType.SOFT_EXCEPTION:
            name = f"soft {name}"
        elif self.type is EvType.PRIV_SOFT_EXCEPTION:
            name = f"priv soft {name}"
        if self.error_code is None:
            return name
        return f"{name}(ec={self.error_code:#x})"

    def without_error_code(self) -> "Ev":
        return Ev(self.type, self.vector, None, self.reserved)


def exception(vector: int, error_code: int | None = None) -> Ev:
    return Ev(EvType.HW_EXCEPTION, vector, error_code)


NMI = Ev(EvType.NMI, 2)


def ext_intr(vector: int) -> Ev:
    return Ev(EvType.EXT_INTR, vector)
