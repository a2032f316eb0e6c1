"""impls.arch against the manuals' tables (MANUALS.md sections 1-3)."""
import pytest

from impls import arch
from impls.arch import DF, GP, NP, PF, SS, UD, DescriptorState, Ev, EvType, Gate, Merge, Mode
from impls.arch.events import exception, ext_intr
from impls.arch import vmx, svm

BENIGN = [1, 3, 4, 5, 6, 7, 16, 17, 18, 19]
CONTRIBUTORY = [0, 10, 11, 12, 13]


@pytest.mark.parametrize("first", BENIGN + CONTRIBUTORY + [PF, DF])
@pytest.mark.parametrize("second", BENIGN + CONTRIBUTORY + [PF])
def test_double_fault_table(first, second):
    """SDM Table 6-5, all twelve cells, vector by vector."""
    cls = lambda v: "B" if v in BENIGN else "C" if v in CONTRIBUTORY else "P" if v == PF else "D"  # noqa: E731
    table = {
        ("B", "B"): Merge.SERIAL, ("B", "C"): Merge.SERIAL, ("B", "P"): Merge.SERIAL,
        ("C", "B"): Merge.SERIAL, ("C", "C"): Merge.DOUBLE_FAULT, ("C", "P"): Merge.SERIAL,
        ("P", "B"): Merge.SERIAL, ("P", "C"): Merge.DOUBLE_FAULT, ("P", "P"): Merge.DOUBLE_FAULT,
        ("D", "B"): Merge.SERIAL, ("D", "C"): Merge.SHUTDOWN, ("D", "P"): Merge.SHUTDOWN,
    }
    assert arch.second_exception(exception(first), second) is table[cls(first), cls(second)]


def test_virtualization_exception_is_page_fault_class():
    """Table 6-4 puts #VE (20) with #PF: #GP during #VE delivery is a #DF."""
    assert arch.exc_class(20) is arch.ExcClass.PAGE_FAULT
    assert arch.second_exception(exception(20), GP) is Merge.DOUBLE_FAULT


@pytest.mark.parametrize("first", [Ev(EvType.NMI, 2), ext_intr(0x20), Ev(EvType.SOFT_INT, 13)])
def test_interrupts_are_benign_first_events(first):
    """Table 6-4: NMI, INTR and INT n are benign whatever their vector."""
    assert arch.second_exception(first, GP) is Merge.SERIAL
    assert arch.second_exception(first, PF) is Merge.SERIAL


def test_error_code_vectors():
    """Table 6-1: #DF, #TS, #NP, #SS, #GP, #PF, #AC push error codes."""
    assert [v for v in range(32) if arch.has_error_code(v)] == [8, 10, 11, 12, 13, 14, 17, 21]


def test_vmx_entry_error_code_vectors():
    """SDM 26.2.1.3 (059): deliver-error-code iff (CR0.PE=1 or no unrestricted
    guest), a hardware exception, and one of #DF #TS #NP #SS #GP #PF #AC;
    Table 6-1's #CP is not in that edition's list."""
    assert [v for v in range(32) if vmx.entry_wants_error_code(exception(v, 0), True)] == [8, 10, 11, 12, 13, 14, 17]
    assert not vmx.entry_wants_error_code(exception(13, 0), False)  # real mode
    assert not vmx.entry_wants_error_code(Ev(EvType.EXT_INTR, 13), True)
    assert arch.has_error_code(21) and not vmx.entry_wants_error_code(exception(21, 0), True)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_idt_error_codes(vendor):
    """SDM 6.13: vector*8 + IDT(2) + EXT; EXT set while delivering an
    external interrupt (both vendors), clear for software interrupts."""
    desc = DescriptorState(gates=((0x30, Gate.NOT_PRESENT), (0x31, Gate.BAD_TYPE)))
    assert arch.gate_fault(desc, ext_intr(0x30), vendor) == (NP, 0x183)
    assert arch.gate_fault(desc, Ev(EvType.SOFT_INT, 0x30), vendor) == (NP, 0x182)
    assert arch.gate_fault(desc, ext_intr(0x31), vendor) == (GP, 0x18B)
    assert arch.gate_fault(DescriptorState(idt_entries=32), ext_intr(0x40), vendor) == (GP, 0x203)
    assert arch.gate_fault(desc, ext_intr(0x32), vendor) is None


#: KVM selftest nested_exceptions_test.c (torvalds/linux 6757641d3982,
#: tools/testing/selftests/kvm/x86_64/): #SS injected with IDTR.limit=0 meets
#: #GP(SS_VECTOR*8 | IDT) on AMD and #GP(SS_VECTOR*8 | IDT | EXT) on Intel.
GP_ERROR_CODE_AMD = SS * 8 | 0x2  # 0x62
GP_ERROR_CODE_INTEL = SS * 8 | 0x2 | 0x1  # 0x63


@pytest.mark.parametrize("vendor, error_code", [("svm", GP_ERROR_CODE_AMD), ("vmx", GP_ERROR_CODE_INTEL)])
def test_ext_bit_of_a_fault_while_delivering_an_exception(vendor, error_code):
    """`ext_bit`: AMD sets EXT only for INTR and NMI, Intel for every event
    but a software interrupt (the selftest's constants, hardware-validated)."""
    assert arch.gate_fault(DescriptorState(idt_entries=0), exception(SS, 0xBEEF), vendor) == (GP, error_code)
    assert arch.push_fault(DescriptorState(stack_fault=SS), exception(UD), vendor) == (SS, error_code & 1, 0)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("ev, ext", [(ext_intr(0x20), 1), (Ev(EvType.NMI, 2), 1), (Ev(EvType.SOFT_INT, 0x80), 0),
                                     (Ev(EvType.SOFT_EXCEPTION, 3), 0)])
def test_ext_bit_agrees_across_vendors_for_interrupts(vendor, ev, ext):
    assert arch.ext_bit(ev, vendor) == ext


def test_real_mode_delivery_faults():
    """SDM 20.1.4: IVT beyond limit -> #GP, stack -> #SS, no gate checks."""
    real = DescriptorState(mode=Mode.REAL, idt_entries=16, gates=((0x10, Gate.NOT_PRESENT),), stack_fault=PF)
    assert arch.gate_fault(real, ext_intr(0x20), "vmx") == (GP, 0)
    assert arch.gate_fault(DescriptorState(mode=Mode.REAL, gates=((0x10, Gate.NOT_PRESENT),)), ext_intr(0x10),
                           "vmx") is None
    assert arch.push_fault(real, ext_intr(5), "vmx") == (SS, 0, 0)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_stack_faults(vendor):
    assert arch.push_fault(DescriptorState(stack_fault=SS), ext_intr(0x20), vendor) == (SS, 1, 0)
    assert arch.push_fault(DescriptorState(stack_fault=SS), Ev(EvType.SOFT_INT, 0x80), vendor) == (SS, 0, 0)
    assert arch.push_fault(DescriptorState(stack_fault=PF), exception(6), vendor)[0] == PF


def test_pf_error_code_filter():
    """SDM 25.2: (PFEC & MASK) == MATCH follows bit 14, else its inverse."""
    assert arch.pf_intercepted(True, 0, 0, 0x7)
    assert not arch.pf_intercepted(True, 0, 0xFFFF, 0x7)
    assert arch.pf_intercepted(True, 0x2, 0x2, 0x2) and not arch.pf_intercepted(True, 0x2, 0x2, 0x0)
    assert arch.pf_intercepted(False, 0x2, 0x2, 0x0)


@pytest.mark.parametrize("ev", [exception(14, 0x6), exception(6), Ev(EvType.NMI, 2), ext_intr(0xEF),
                                Ev(EvType.SOFT_INT, 0x80)])
def test_interruption_info_round_trips(ev):
    assert vmx.decode(*vmx.encode(ev)) == ev
    assert svm.decode(*svm.encode(ev)) == ev


def test_interruption_info_layout():
    """SDM Table 24-15/16: valid bit 31, deliver-code bit 11, type 10:8."""
    assert vmx.encode(exception(13, 0)) == (0x80000B0D, 0)
    assert vmx.encode(Ev(EvType.NMI, 2)) == (0x80000202, 0)
    assert svm.encode(Ev(EvType.SOFT_EXCEPTION, 3))[0] == 0x80000303  # APM 15.7.2: INT3 is type 3
    assert vmx.decode(0, 5) is None and svm.decode(0x0000030E) is None
