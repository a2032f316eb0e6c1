"""The vCPU of the example port: the series' functions in front of the 6.18
vCPU, so that they are the ones every caller (and every kvm_x86_ops /
nested_ops entry naming them) reaches; everything else is the 6.18 port's.
"""
from __future__ import annotations

from impls.current.vcpu import Vcpu as Vcpu618
from impls.exp_nsvm_v7.svm_nested import SvmNestedEvtinj


class Vcpu(SvmNestedEvtinj, Vcpu618):
    """struct kvm_vcpu of 6.18 with the two nSVM patches."""


class VcpuNoShstk(Vcpu):
    """The same, for a guest whose CPUID lacks shadow stacks."""

    guest_has_shstk = False
