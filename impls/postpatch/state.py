"""What the RFC changes in KVM's state: arch/x86/include/asm/kvm_host.h,
arch/x86/include/uapi/asm/kvm.h and include/uapi/linux/kvm.h (patch 4/4).

Hunks, in the order of the diff:

* kvm_host.h, `struct kvm_vcpu_arch`: the single `exception` (with its
  `pending` and `injected` flags) becomes two slots,
  `pending_exception` (struct kvm_pending_exception: valid, has_error_code,
  nr, error_code, payload, has_payload, nested_apf) and `injected_exception`
  (struct kvm_queued_exception, reused for: valid, has_error_code, nr,
  error_code -- no payload, no nested_apf).  `KvmVcpuArch` below has no
  `exception` at all, so a pre-patch function left un-overridden that still
  reads it fails loudly instead of using a stale slot.
* kvm_host.h, `struct kvm_arch`: `exception_separate_injected_pending`,
  after `exception_payload_enabled` (`Kvm`).
* kvm_host.h, `struct kvm_x86_nested_ops`: `deliver_exception`, after
  `check_events` (wired in `impls.postpatch.vcpu`).
* uapi asm/kvm.h, `struct kvm_vcpu_events`: `reserved[27]` shrinks to
  `reserved[20]` and the tail becomes the struct `pending_exception`
  (error_code, nr, pad, has_error_code, has_payload, payload).  Its
  `has_payload` and `payload` are the bytes of the old
  `exception_has_payload` / `exception_payload`, so userspace written for
  the old layout keeps working: `KvmVcpuEvents` keeps those two names as
  aliases of the same storage.  The new nr / error_code / has_error_code /
  pad come out of what used to be zeroed reserved bytes (see the get-events
  note in `impls.postpatch.x86`).
* uapi linux/kvm.h: `KVM_CAP_EXCEPTION_INJECTED_PENDING` = 194 (an RFC
  number; later mainline gives 194 to another capability).  The scenario's
  cap name is `exception_injected_pending`.
"""
from __future__ import annotations

from impls.prepatch import state as pre
from impls.prepatch.vcpu import Kvm as PrepatchKvm

#: The `tree=` of every function the RFC adds or changes, per patch.
RFC = "RFC 2021-02-25 v1"
PATCH1 = f"{RFC} patch 1/4"
PATCH2 = f"{RFC} patch 2/4"
PATCH3 = f"{RFC} patch 3/4"
PATCH4 = f"{RFC} patch 4/4"
#: A function last changed by 3/4 and then by 4/4 is marked with 4/4 and
#: says so in its docstring.

KVM_CAP_EXCEPTION_PAYLOAD = 164
KVM_CAP_EXCEPTION_INJECTED_PENDING = 194

#: Scenario cap name -> KVM_ENABLE_CAP number (what the VMM enables).
CAPS = {
    "exception_payload": KVM_CAP_EXCEPTION_PAYLOAD,
    "exception_injected_pending": KVM_CAP_EXCEPTION_INJECTED_PENDING,
}


class KvmPendingException:
    """vcpu->arch.pending_exception (struct kvm_pending_exception)."""

    __slots__ = ("valid", "has_error_code", "nr", "error_code", "payload", "has_payload", "nested_apf")

    def __init__(self):
        self.valid = self.has_error_code = False
        self.nr = 0
        self.error_code = 0
        self.payload = 0
        self.has_payload = False
        self.nested_apf = False


class KvmQueuedException:
    """vcpu->arch.injected_exception (struct kvm_queued_exception, now
    without pending / payload / nested_apf)."""

    __slots__ = ("valid", "has_error_code", "nr", "error_code")

    def __init__(self):
        self.valid = self.has_error_code = False
        self.nr = 0
        self.error_code = 0


class KvmVcpuArch:
    """struct kvm_vcpu_arch after 4/4: the pre-patch fields, with
    `exception` replaced by `pending_exception` and `injected_exception`."""

    __slots__ = tuple(s for s in pre.KvmVcpuArch.__slots__ if s != "exception") + (
        "pending_exception", "injected_exception")

    def __init__(self):
        base = pre.KvmVcpuArch()
        for name in self.__slots__:
            if hasattr(base, name):
                setattr(self, name, getattr(base, name))
        self.pending_exception = KvmPendingException()
        self.injected_exception = KvmQueuedException()

    @classmethod
    def taking_over(cls, base: pre.KvmVcpuArch) -> "KvmVcpuArch":
        """The same vCPU state in the RFC's layout (used once, when the
        vCPU is created; `base.exception` is empty then)."""
        arch = cls()
        for name in cls.__slots__:
            if name not in ("pending_exception", "injected_exception"):
                setattr(arch, name, getattr(base, name))
        return arch


class Kvm(PrepatchKvm):
    """struct kvm_arch with the RFC's `exception_separate_injected_pending`."""

    __slots__ = ("exception_separate_injected_pending",)

    def __init__(self):
        super().__init__(False)
        self.exception_separate_injected_pending = False


class KvmVcpuEvents:
    """struct kvm_vcpu_events in the RFC's layout, flattened as in
    `impls.prepatch.state.KvmVcpuEvents`; `pending_exception_*` are the
    members of the new tail struct."""

    __slots__ = tuple(s for s in pre.KvmVcpuEvents.__slots__
                      if s not in ("exception_has_payload", "exception_payload")) + (
        "pending_exception_error_code", "pending_exception_nr", "pending_exception_pad",
        "pending_exception_has_error_code", "pending_exception_has_payload", "pending_exception_payload")

    def __init__(self):
        for f in self.__slots__:
            setattr(self, f, 0)

    # The old names of the same bytes (uapi compatibility for old userspace).
    @property
    def exception_has_payload(self):
        return self.pending_exception_has_payload

    @exception_has_payload.setter
    def exception_has_payload(self, value):
        self.pending_exception_has_payload = value

    @property
    def exception_payload(self):
        return self.pending_exception_payload

    @exception_payload.setter
    def exception_payload(self, value):
        self.pending_exception_payload = value
