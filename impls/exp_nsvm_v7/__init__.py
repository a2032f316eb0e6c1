"""An experimental port of a patch series under review, the worked example
of docs/porting-a-patch.md: patches 10 and 17 of Yosry Ahmed's nSVM fixes
series, v7 (2026-03-03, merged as f85a6ce06e4a and 7e79f71bca5c), over the
6.18 port (`impls.current`).  What they change is in `svm_nested`.

Not registered in impls.api (the example changes nothing a scenario can
show, see the note): tests/test_porting_example.py registers both classes
for its tests, and the note says how to register them for a campaign.
"""
from __future__ import annotations

from impls.current import Current
from impls.exp_nsvm_v7.svm_nested import TREE
from impls.exp_nsvm_v7.vcpu import Vcpu, VcpuNoShstk


class NsvmV7(Current):
    name = "exp-nsvm-v7"
    origin = "nSVM fixes v7 patches 10 and 17 (Yosry Ahmed, 2026-03-03) on the 6.18 port"
    summary = "experimental: 6.18 with nSVM's EVENTINJ consistency check and GIF=0 on VMEXIT_INVALID"

    vcpu_class = Vcpu

    #: The series' own functions name TREE; everything else is the 6.18
    #: port as is, with whatever it runs of the 6.1 and 5.11 ports (which
    #: impls.current declares function by function).
    kernel_tree = TREE
    takes_over = {"6.18": None, "6.1": None, "5.11-rc7": None}


class NsvmV7NoShstk(NsvmV7):
    name = "exp-nsvm-v7-noshstk"
    origin = NsvmV7.origin + ", guest CPUID without shadow stacks"
    summary = "experimental: exp-nsvm-v7 for a guest without X86_FEATURE_SHSTK"

    vcpu_class = VcpuNoShstk

    kernel_tree = TREE
    takes_over = NsvmV7.takes_over
