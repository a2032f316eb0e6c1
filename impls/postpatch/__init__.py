"""The post-patch port: the pre-patch port (`impls.prepatch`, KVM 5.11 / the
kvm queue of February 2021) with Maxim Levitsky's RFC "KVM: separate
injected and pending exception + few more fixes" (2021-02-25, v1, four
patches) applied.  Read beside the pre-patch port, it shows what the RFC
changed and nothing else.

Module map (one module per kernel file the series touches):

| module | kernel file | patches |
|---|---|---|
| `state` | asm/kvm_host.h, uapi asm/kvm.h, uapi linux/kvm.h | 4/4 |
| `x86` | x86.c, x86.h | 1/4, 4/4 |
| `paging_tmpl` | mmu/paging_tmpl.h | 2/4 (nothing to port: see there) |
| `svm_nested` | svm/nested.c | 3/4, 4/4 |
| `svm` | svm/svm.c | 4/4 |
| `vmx_nested` | vmx/nested.c | 3/4, 4/4 |
| `vmx` | vmx/vmx.c | 4/4 |
| `vcpu` | the nested_ops tables (+ deliver_exception) | 4/4 |
| `driver` | (evdiff) the shared driver's VMM, for the new uapi | |
| `april` | the April 2021 repost, registered as `postpatch-v2` | |

One base function is overridden too, and says so: `x86.X86Base.
vcpu_enter_guest` cancels the entry on any pending request, as 5.11's
kvm_vcpu_exit_request does (the shared pre-patch port checks only the kick,
which is invisible there but not once the RFC requests a triple fault from
inside the injection ladder).

Each overriding function carries `@origin(file, function, tree="RFC
2021-02-25 v1 patch N/4")` with the last patch that changed it.  The
series' known slips are ported as posted (the error-code strip that tests
`error_code`, the get-events test of `valid` twice, set-events that never
clears, the refused second exception, the MTF path that needs a pending
exception); docs/kernel/rfc.md describes every hunk and slip, and NOTES.md
lists what the port shows against the reference, with scenarios.
"""
from __future__ import annotations

from impls.postpatch.driver import Driver
from impls.postpatch.vcpu import Vcpu
from impls.prepatch import Prepatch


class Postpatch(Prepatch):
    name = "postpatch"
    origin = "RFC 2021-02-25 v1 (Levitsky, 4 patches: lkml-likexu/kde 7c85d92e) on the prepatch port"
    summary = "the pre-patch port with the RFC 'separate injected and pending exception' applied"

    vcpu_class = Vcpu
    driver_class = Driver

    #: The RFC's hunks; every function it leaves alone is its base's.
    kernel_tree = "RFC 2021-02-25 v1"
    takes_over = {"5.11-rc7": None}
