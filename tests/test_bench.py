"""`evdiff bench` (fuzz/bench.py): the parts that are not measurements."""
from fuzz import bench


def test_ttff_settings_take_turns_and_are_kept_apart(monkeypatch):
    """With two settings (`--guidance both`), campaigns alternate, each with
    its own environment, and each setting's times are its own."""
    ran = []

    def campaign(wanted, timeout, engine, env):
        ran.append(env["EVDIFF_GUIDANCE"])
        return {"a": 1.0 + len(ran)} if env["EVDIFF_GUIDANCE"] == "1" else {}

    monkeypatch.setattr(bench, "_first_findings", campaign)
    settings = {"off": {"EVDIFF_GUIDANCE": "0"}, "on": {"EVDIFF_GUIDANCE": "1"}}
    times = bench.ttff({"a": {"sig"}, "b": set()}, 2, 1.0, "atheris", None, note=lambda s: None, settings=settings)
    assert ran == ["0", "1", "0", "1"]
    assert times == {"off": {"a": [None, None], "b": [None, None]}, "on": {"a": [3.0, 5.0], "b": [None, None]}}


def test_settings_parse_and_bad_ones_are_refused():
    import pytest

    from fuzz.scenario import EvdiffError

    assert bench.parse_setting("bare:EVDIFF_INSTRUMENT=none,EVDIFF_TRACE_CMP=0") == (
        "bare", {"EVDIFF_INSTRUMENT": "none", "EVDIFF_TRACE_CMP": "0"})
    assert bench.parse_setting("plain:") == ("plain", {})
    for bad in ("nocolon", ":X=1", "a:X", "a:=1"):
        with pytest.raises(EvdiffError, match="LABEL:VAR=VALUE"):
            bench.parse_setting(bad)
