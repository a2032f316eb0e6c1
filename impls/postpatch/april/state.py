"""The April repost's state (arch/x86/include/asm/kvm_host.h after its
patches 2/4 and 3/4).

* `pending_exception` and `injected_exception` share one type,
  struct kvm_queued_exception {valid, nr, has_error_code, error_code},
* the payload lives apart, in `exception_payload` {valid, value,
  nested_apf}, and belongs to "the" exception being raised,
* nested_ops gains `deliver_exception_as_vmexit` (after check_events),
* no uapi change and no new capability: struct kvm_vcpu_events keeps the
  pre-patch layout (`impls.prepatch.state.KvmVcpuEvents`).
"""
from __future__ import annotations

from impls.prepatch import state as pre

APRIL = "RFC repost 2021-04-01"
PATCH1 = f"{APRIL} patch 1/4"
PATCH2 = f"{APRIL} patch 2/4"
PATCH3 = f"{APRIL} patch 3/4"
PATCH4 = f"{APRIL} patch 4/4"


class KvmQueuedException:
    """struct kvm_queued_exception: the type of both slots."""

    __slots__ = ("valid", "nr", "has_error_code", "error_code")

    def __init__(self):
        self.valid = self.has_error_code = False
        self.nr = 0
        self.error_code = 0

    def copy_from(self, other: "KvmQueuedException") -> None:
        """The struct assignment `injected_exception = pending_exception`."""
        self.valid, self.nr = other.valid, other.nr
        self.has_error_code, self.error_code = other.has_error_code, other.error_code


class KvmExceptionPayload:
    """vcpu->arch.exception_payload."""

    __slots__ = ("valid", "value", "nested_apf")

    def __init__(self):
        self.valid = False
        self.value = 0
        self.nested_apf = False


class KvmVcpuArch:
    """struct kvm_vcpu_arch after the repost."""

    __slots__ = tuple(s for s in pre.KvmVcpuArch.__slots__ if s != "exception") + (
        "pending_exception", "exception_payload", "injected_exception")

    def __init__(self):
        self.pending_exception = KvmQueuedException()
        self.exception_payload = KvmExceptionPayload()
        self.injected_exception = KvmQueuedException()

    @classmethod
    def taking_over(cls, base: pre.KvmVcpuArch) -> "KvmVcpuArch":
        arch = cls()
        for name in cls.__slots__:
            if hasattr(base, name) and name != "exception":
                setattr(arch, name, getattr(base, name))
        return arch
