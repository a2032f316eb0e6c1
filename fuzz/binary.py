"""The binary form of a scenario, for libFuzzer: decoding is total.

Layout: one header byte (bit 0 vendor svm, bit 1 nested paging off, bits 2-4
the caps in `CAPS` order), then fixed-size records of `RECORD` bytes, one an
event: a kind byte (taken modulo the number of kinds) and the parameters of
that kind in spec order, each in its own bytes, the rest padding.  Kinds
added to the language go last in `SPECS`, so a canonical record (as `encode`
writes it, kind byte below the number of kinds) keeps its meaning in later
versions, and so do the findings' `.bin` files; a raw libFuzzer input whose
kind byte is larger may read as another kind once kinds are added.  A
parameter added to a kind goes after its others, in bytes that were
padding, with a default that byte 0 encodes (`l1.vmentry insn_len=`), so an
older record reads as it did.  Every
byte string decodes: values are taken modulo their domain, a short last record is
padded with zeros, bytes past `MAX_EVENTS` records are ignored.  Because
records have a fixed size, changing one byte changes at most one event (or
the configuration), and a short input is a short scenario.

Decoding is many-to-one: records whose values have no architectural meaning
decode to the event that has one (`fuzz.scenario`): an error code on a
vector that pushes none is 0, one the manual fixes (#DF, #AC) is that
value, an address on anything but #PF is 0, an `exception` record of #BP /
#OF is `int3` / `into`, on SVM an `l1.vmentry` with `interruptibility=movss`
or `both` is `sti`, its `pending_dbg` is `none` and its `activity` is
`keep`, without the `exception_payload` cap a pending `user.set_exception`
is an injected one, and an `l1.controls` flag of the other vendor is 0 (so
the header byte also decides how such records read).

A kind's record may grow only at its end, by parameters whose default is
byte 0, and a value's bytes likewise: an `l1.vmentry` injection (EVENT,
`_EVENT_TYPES`) grew from 4 to 8 bytes so that L1 can write any type,
deliver-error-code bit, reserved bits and a 32-bit error code; a record of
the first form reads as it did.  Error codes of `exception`,
`delivery_fault` and `l0.emulate` have 16 bits (no exception they raise
pushes more here), and so has `user.set_exception`'s in this form, though
the text form takes the 32 of KVM's ABI (`PType.EC32`): `encode` keeps its
low half.
"""
from __future__ import annotations

from impls.arch import Ev, EvType, has_error_code
from fuzz.scenario import CAPS, EXCEPTION_VECTORS, SPECS, Config, Event, PType, Scenario, normalise

RECORD = 1 + max(sum(p.type.width for p in s.params) for s in SPECS)
MAX_EVENTS = 64
_KIND_INDEX = {s.kind: i for i, s in enumerate(SPECS)}
_NEXC = len(EXCEPTION_VECTORS)
_EXC_INDEX = {v: i for i, v in enumerate(EXCEPTION_VECTORS)}
#: EVENT (8 bytes), an event L1 injects.  Byte 0, its form (taken modulo
#: 6): 0 none, 1 external interrupt, 2 NMI, 3 exception, 4 INT n, 5 any
#: type; byte 1 the vector (for form 3 an index into EXCEPTION_VECTORS);
#: bytes 2-3 the error code's low half.  Bytes 4-7 were added later, so a
#: record of the first 4-byte form reads as it did: byte 4 bits 0-2 the
#: type of form 5, bits 3-4 the deliver-error-code bit (0 or 3: as the form
#: and vector want it, an exception's error code where it pushes one, so
#: the first form's meaning; 1 set, 2 clear); byte 5 bits 19:12 of the
#: field (reserved, `Ev.reserved`; the text form holds all of 30:12); bytes
#: 6-7 the error code's high half.
_EVENT_TYPES = (None, EvType.EXT_INTR, EvType.NMI, EvType.HW_EXCEPTION, EvType.SOFT_INT)
_ANY_TYPE = len(_EVENT_TYPES)


def _u(b: bytes) -> int:
    return int.from_bytes(b, "little")


def _decode_value(param, b: bytes):
    t = param.type
    if t is PType.VECTOR or t is PType.U8:
        return b[0]
    if t is PType.EXC:
        return param.domain[b[0] % len(param.domain)]
    if t is PType.OPT_EXC:
        i = b[0] % (len(param.domain) + 1)
        return None if i == 0 else param.domain[i - 1]
    if t is PType.U16 or t is PType.EC32:
        return _u(b)
    if t is PType.PAGE:
        return _u(b) << 12
    if t is PType.BOOL:
        return bool(b[0] & 1)
    if t is PType.ENUM:
        return param.choices[b[0] % len(param.choices)]
    if t is PType.VECSET:
        return _u(b)
    if t is PType.EVENT:
        return _decode_event(b)
    raise AssertionError(t)


def _decode_event(b: bytes) -> Ev | None:
    form = b[0] % (_ANY_TYPE + 1)
    if form == 0:
        return None
    if form == _ANY_TYPE:
        typ, vector = EvType(b[4] & 7), b[1]
    else:
        typ = _EVENT_TYPES[form]
        vector = {EvType.NMI: 2, EvType.HW_EXCEPTION: EXCEPTION_VECTORS[b[1] % _NEXC]}.get(typ, b[1])
    deliver = (b[4] >> 3) & 3
    if deliver in (0, 3):
        deliver = 1 if typ is EvType.HW_EXCEPTION and has_error_code(vector) else 2
    ec = _u(b[2:4]) | _u(b[6:8]) << 16 if deliver == 1 else None
    return Ev(typ, vector, ec, b[5])


def _encode_event(v: Ev | None) -> bytes:
    if v is None:
        return bytes(8)
    if v.type is EvType.HW_EXCEPTION and v.vector in _EXC_INDEX:
        form, vec = 3, _EXC_INDEX[v.vector]
    elif v.type in (EvType.EXT_INTR, EvType.SOFT_INT) or (v.type is EvType.NMI and v.vector == 2):
        form, vec = _EVENT_TYPES.index(v.type), v.vector
    else:
        form, vec = _ANY_TYPE, v.vector
    auto = v.type is EvType.HW_EXCEPTION and has_error_code(v.vector)
    deliver = 0 if auto == (v.error_code is not None) else (1 if v.error_code is not None else 2)
    flags = (int(v.type) if form == _ANY_TYPE else 0) | deliver << 3
    ec = v.error_code or 0
    return bytes([form, vec]) + (ec & 0xFFFF).to_bytes(2, "little") + bytes([flags, v.reserved & 0xFF]) + \
        (ec >> 16 & 0xFFFF).to_bytes(2, "little")


def _encode_value(param, v) -> bytes:
    t, w = param.type, param.type.width
    if t is PType.EXC:
        n = param.domain.index(v)
    elif t is PType.OPT_EXC:
        n = 0 if v is None else param.domain.index(v) + 1
    elif t is PType.PAGE:
        n = v >> 12
    elif t is PType.BOOL:
        n = int(v)
    elif t is PType.ENUM:
        n = param.choices.index(v)
    elif t is PType.EVENT:
        return _encode_event(v)
    elif t is PType.EC32:
        n = v & 0xFFFF
    else:
        n = v
    return n.to_bytes(w, "little")


def _decode_config(head: int) -> Config:
    return Config(
        vendor="svm" if head & 1 else "vmx",
        npt=not head & 2,
        caps=frozenset(c for i, c in enumerate(CAPS) if head >> (2 + i) & 1),
    )


#: Each kind's parameters with the bytes each takes, in record order.
_LAYOUT = [(s.kind, tuple((p, p.type.width) for p in s.params)) for s in SPECS]


def _field_offsets(layout) -> tuple[tuple[int, int], ...]:
    out, pos = [], 1
    for _, width in layout:
        out.append((pos, width))
        pos += width
    return tuple(out)


#: By kind index: where each parameter lies in a record, (offset, width).
FIELDS = [_field_offsets(layout) for _, layout in _LAYOUT]


def _decode_record(rec: bytes) -> Event:
    kind, layout = _LAYOUT[rec[0] % len(_LAYOUT)]
    pos, args = 1, []
    for p, width in layout:
        args.append(_decode_value(p, rec[pos : pos + width]))
        pos += width
    return normalise(Event(kind, tuple(args)))


#: Decoded records and headers by their bytes.  Events are immutable, and
#: libFuzzer's inputs share most of their records with their parents, so a
#: fuzzer decodes mostly from here; bounded, cleared when full.
_RECORDS: dict[bytes, Event] = {}
_CONFIGS: dict[int, Config] = {}
_CACHE_MAX = 1 << 16


def decode(data: bytes) -> Scenario:
    """Any bytes to a scenario.  Never raises."""
    head = data[0] if data else 0
    config = _CONFIGS.get(head)
    if config is None:
        config = _CONFIGS[head] = _decode_config(head)
    events = []
    body = data[1 : 1 + RECORD * MAX_EVENTS]
    cache = _RECORDS
    for off in range(0, len(body), RECORD):
        rec = body[off : off + RECORD]
        ev = cache.get(rec)
        if ev is None:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            ev = cache[rec] = _decode_record(rec.ljust(RECORD, b"\0"))
        events.append(ev)
    return Scenario(config, tuple(events))


def encode(scenario: Scenario) -> bytes:
    """The canonical bytes of a scenario: `decode(encode(s)) == s` for every
    scenario whose values the binary form holds (error codes to 0xffff, an
    injected event's to 0xffffffff, its reserved bits to 19:12, addresses to
    0xffff000, at most MAX_EVENTS events)."""
    c = scenario.config
    head = (c.vendor == "svm") | ((not c.npt) << 1)
    for i, cap in enumerate(CAPS):
        head |= (cap in c.caps) << (2 + i)
    out = bytearray([head])
    for ev in scenario.events:
        out += encode_record(ev)
    return bytes(out)


def encode_record(ev: Event) -> bytes:
    """One event's record, whatever the configuration it is decoded under."""
    rec = bytearray([_KIND_INDEX[ev.kind]])
    for p, v in zip(ev.spec.params, ev.args):
        rec += _encode_value(p, v)
    return bytes(rec.ljust(RECORD, b"\0"))
