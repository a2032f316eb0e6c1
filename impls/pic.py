"""The VMM's userspace interrupt controller (split irqchip): `user.interrupt`.

Like the scenario's L1 (`impls.l1`), the VMM is part of the scenario, not of
the implementation under test, so the reference (`impls.reference.model`)
and the KVM ports' driver (`impls.prepatch.driver`) use this one definition:

* `user.interrupt V` raises a line of the VMM's PIC.  The PIC's IRR holds
  one bit a vector: raising a vector it holds already merges with it.
* Before each KVM_RUN, and whenever KVM has taken the one it was given, the
  VMM issues KVM_INTERRUPT for the highest vector it holds (`next_vector`),
  which leaves the PIC's IRR (the 8259's interrupt acknowledge).  KVM holds
  one such vector at a time until it delivers it; raising that vector again
  is a new request, held by the PIC.
"""
from __future__ import annotations


class UserspacePic:
    __slots__ = ("held",)

    def __init__(self):
        self.held: list[int] = []  # vectors raised, not yet given to KVM

    def raise_vector(self, vector: int) -> None:
        if vector not in self.held:
            self.held.append(vector)

    def next_vector(self) -> int | None:
        """The vector the VMM gives KVM next (highest first), taken out of
        the PIC; None if it holds none."""
        if not self.held:
            return None
        vector = max(self.held)
        self.held.remove(vector)
        return vector

    def peek(self) -> int | None:
        return max(self.held) if self.held else None
