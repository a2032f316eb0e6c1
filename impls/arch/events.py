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
    NMI = 2
    HW_EXCEPTION = 3
    SOFT_INT = 4
    PRIV_SOFT_EXCEPTION = 5  # INT1 / ICEBP
    SOFT_EXCEPTION = 6  # INT3, INTO


@dataclass(frozen=True, slots=True)
class Ev:
    """One event: type, vector and the error code it carries (None if none)."""

    type: EvType
    vector: int
    error_code: int | None = None

    def __str__(self) -> str:
        from impls.arch import mnemonic

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
        return Ev(self.type, self.vector, None)


def exception(vector: int, error_code: int | None = None) -> Ev:
    return Ev(EvType.HW_EXCEPTION, vector, error_code)


NMI = Ev(EvType.NMI, 2)


def ext_intr(vector: int) -> Ev:
    return Ev(EvType.EXT_INTR, vector)
