"""The record-aware custom mutator: valid, bounded, and record-aligned."""
from hypothesis import given, settings, strategies as st

from fuzz import binary, mutator
from fuzz.binary import RECORD, decode


def no_fallback(data, max_size):
    raise AssertionError("fallback not expected")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=RECORD * 8), st.integers(1, RECORD * 10), st.integers(0, 2**32 - 1))
def test_result_fits_and_decodes(data, max_size, seed):
    out = mutator.mutate(data, max_size, seed, lambda d, m: d[:m])
    assert len(out) <= max_size
    decode(out)  # total: never raises


def test_record_operations_keep_record_boundaries():
    data = binary.encode(decode(bytes([0]) + mutator.RECORDS[0] + mutator.RECORDS[1]))
    seen_ops = set()
    for seed in range(400):
        out = mutator.mutate(data, 4096, seed, lambda d, m: b"fallback")
        if out == b"fallback":
            continue
        assert (len(out) - 1) % RECORD == 0
        before, after = decode(data), decode(out)
        seen_ops.add(len(after.events) - len(before.events))
        # Every record of the result is a record of the input or of the
        # language, or one of the input's with one parameter set.
        body = out[1:]
        for i in range(0, len(body), RECORD):
            rec = body[i:i + RECORD]
            assert rec in set(mutator.RECORDS) | {data[1:1 + RECORD], data[1 + RECORD:]} or \
                _one_field_apart(rec, data[1:1 + RECORD]) or _one_field_apart(rec, data[1 + RECORD:])
    assert seen_ops == {-1, 0, 1, 2, 3}  # delete; replace, swap, header, a parameter; insert, duplicate; prologue


def _one_field_apart(rec: bytes, orig: bytes) -> bool:
    """`rec` is `orig` with the bytes of at most one parameter changed."""
    if rec[0] != orig[0]:
        return False
    changed = [(off, w) for off, w in mutator.FIELDS[orig[0] % len(mutator.FIELDS)]
               if rec[off:off + w] != orig[off:off + w]]
    outside = [i for i in range(len(rec)) if rec[i] != orig[i]
               and not any(off <= i < off + w for off, w in changed)]
    return len(changed) <= 1 and not outside


def test_one_parameter_of_one_record_is_set():
    """An `l1.vmentry` injecting the wrong event is one parameter from the
    right one: the parameter operation reaches each language value of it."""
    entry = binary.encode(decode(b"\x03" + mutator.ENTRIES[0])).removeprefix(b"\x03")
    data = b"\x03" + entry
    injected = set()
    for seed in range(3000):
        out = mutator.mutate(data, 4096, seed, lambda d, m: d)
        if out[0] == 3 and len(out) == len(data) and out != data and _one_field_apart(out[1:], entry):
            ev = decode(out).events[0]
            assert ev.kind == "l1.vmentry"
            injected.add(ev.args[0])
    wanted = {decode(b"\x03" + r).events[0].args[0] for r in mutator.ENTRIES}
    assert len(injected & wanted) >= len(wanted) - 1 and len(injected - wanted) > 0  # and random bytes


def test_fresh_start_is_a_prologue_alone_under_any_header():
    """Some mutations drop the input for a nested prologue alone under a
    random header, whatever the input (a drifted corpus still gets short
    nested scenarios)."""
    data = bytes([0]) + b"".join(mutator.RECORDS[:20])
    fresh = [out for seed in range(1500)
             if len(out := mutator.mutate(data, 4096, seed, lambda d, m: d)) == 1 + 3 * RECORD]
    assert len(fresh) > 1500 * 2 / 16 * 0.7
    for out in fresh:
        kinds = decode(out).kinds()
        assert kinds[0] == "l1.intercept" and kinds[-1] == "l1.vmentry"
        assert kinds[1] in {"l2.idt", "l2.idt_limit", "l2.stack", "delivery_fault"}
    assert len({out[0] for out in fresh}) > 8


def test_inserted_records_come_from_the_language_not_the_seeds():
    from fuzz import seeds

    assert mutator.RECORDS == seeds.language_records()
    assert all(len(r) == RECORD for r in mutator.RECORDS)
    assert len({decode(b"\0" + r).events[0].kind for r in mutator.RECORDS}) == len(binary.SPECS)


def test_crossover_joins_records_of_both_parents_at_record_boundaries():
    a = bytes([3]) + b"".join(mutator.RECORDS[0:3])
    b = bytes([0]) + b"".join(mutator.RECORDS[10:14])
    joined = set()
    for seed in range(300):
        out = mutator.crossover(a, b, 4096, seed)
        assert out[0] == 3 and (len(out) - 1) % RECORD == 0  # the first parent's header, whole records
        recs = [out[i:i + RECORD] for i in range(1, len(out), RECORD)]
        ka = [r for r in recs if r in mutator.RECORDS[0:3]]
        kb = [r for r in recs if r in mutator.RECORDS[10:14]]
        assert ka + kb == recs and ka == list(mutator.RECORDS[0:len(ka)])  # a prefix of a, then a run of b
        if ka and kb:
            joined.add((len(ka), len(kb)))
    assert len(joined) > 4
    assert len(mutator.crossover(a, b, 1 + RECORD, 7)) <= 1 + RECORD


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=RECORD * 6), st.binary(max_size=RECORD * 6), st.integers(1, RECORD * 10),
       st.integers(0, 2**32 - 1))
def test_crossover_fits_and_decodes(a, b, max_size, seed):
    out = mutator.crossover(a, b, max_size, seed)
    assert len(out) <= max_size
    decode(out)


def test_prologue_inserts_intercepts_then_a_vm_entry():
    data = bytes([0]) + mutator.RECORDS[0]
    grown = [decode(out) for seed in range(400)
             if len(out := mutator.mutate(data, 4096, seed, lambda d, m: d)) == len(data) + 2 * RECORD
             and mutator.RECORDS[0] in out]  # not a fresh start
    assert grown
    for s in grown:
        kinds = s.kinds()
        i = kinds.index("l1.intercept")
        assert kinds[i + 1] == "l1.vmentry" and len(kinds) == 3


def test_prologue_sometimes_sets_up_what_the_entry_delivery_meets():
    """Half of the prologues put a record of L2's IDT, handler stack or an
    armed delivery fault between the intercepts and the entry (seed class A
    needs all three)."""
    data = bytes([0]) + mutator.RECORDS[0]
    grown = [decode(out) for seed in range(600)
             if len(out := mutator.mutate(data, 4096, seed, lambda d, m: d)) == len(data) + 3 * RECORD
             and mutator.RECORDS[0] in out]  # not a fresh start
    assert grown
    setups = set()
    for s in grown:
        kinds = s.kinds()
        i = kinds.index("l1.intercept")
        assert kinds[i + 2] == "l1.vmentry" and len(kinds) == 4
        setups.add(kinds[i + 1])
    assert setups <= {"l2.idt", "l2.idt_limit", "l2.stack", "delivery_fault"} and "l2.stack" in setups
