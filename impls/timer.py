"""Timed event sources (the `timer` event): an interrupt or an NMI that
becomes pending after N more guest instructions -- an APIC timer, a delayed
NMI, another vCPU's IPI.  One definition, shared by the reference and the
KVM ports' driver (as `impls.pic` is), so both count the same instructions.

A *guest instruction* is a scenario event that executes as an instruction
of the level running when it executes: `exception`, `int`, `int3`, `into`,
`icebp`, `sti`, `cli`, `mov_ss`, `iret`, `stgi` / `clgi` (or their #UD on
VMX), a mode change of the running level (`lN.mode`: MOV to CR0), L1's
VMLAUNCH / VMRESUME / VMRUN (`l1.vmentry`), L2's VMCALL (`l2.vmcall`) and an
instruction L0 emulates (`l0.emulate`) -- and `hlt` where the language has
it -- each counted once when it starts executing, whether it completes,
faults or exits.  Not counted: an
instruction event of a level that is not running (it never executes); the
no-ops of `run`, whose number is each implementation's own way of reaching
a quiescent point, not the scenario's; the SMM handler's RSM; an INT n /
INT3 / INTO / INT1 that a processor executes again after an exit during its
delivery (the same scenario instruction).  The reference counts in
`Machine._instruction`, the simulated CPU where it dispatches the driver's
instruction (`impls.hw.cpu.Cpu.instructions`).

The event becomes pending while the N-th instruction executes, so it is
recognised at the boundary after it (SDM 6.9: events are recognised at
instruction boundaries); `after=0` makes it pending at once, like `irq` /
`nmi`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Due:
    """A timed event that has become pending: an NMI, or an interrupt on
    `vector`."""

    nmi: bool
    vector: int


class Timers:
    """The armed timed events, in arming order."""

    __slots__ = ("armed",)

    def __init__(self):
        self.armed: list[list] = []  # [instructions left, Due]

    def arm(self, after: int, nmi: bool, vector: int) -> list[Due]:
        """Arm a timed event; returns it at once if `after` is 0."""
        due = Due(bool(nmi), vector)
        if after <= 0:
            return [due]
        self.armed.append([after, due])
        return []

    def tick(self) -> list[Due]:
        """One guest instruction started executing: the events it makes
        pending, in arming order."""
        if not self.armed:
            return []
        out: list[Due] = []
        for entry in self.armed:
            entry[0] -= 1
            if entry[0] == 0:
                out.append(entry[1])
        self.armed = [e for e in self.armed if e[0] > 0]
        return out
