"""What the fuzz target reads from its environment.

libFuzzer takes every bare word on its command line as a corpus directory,
so the target's own options travel as environment variables (the campaign
sets them; a user running the target by hand may too):

* `EVDIFF_FINDINGS=DIR`  record every divergence in this findings store and
  keep fuzzing (the campaign's mode).
* `EVDIFF_RAISE=1`  raise each divergence as an exception whose traceback
  follows its signature (`fuzz.failures`), so that libFuzzer stops and
  ClusterFuzz buckets by signature.  The default when `EVDIFF_FINDINGS` is
  unset, e.g. under ClusterFuzzLite.
* `EVDIFF_RAISE_KNOWN=1`  in raise mode, raise known divergences too.  By
  default a divergence whose signature is in the known list
  (`corpus/known-divergences.txt`, `fuzz.known`, shipped inside the frozen
  target) is not raised: a ClusterFuzzLite run on a pull request stops at
  its first crash, and one the project has already explained is no news.
* `EVDIFF_IMPLS=a,b`  run only these implementations (default: all).
* `EVDIFF_EXTRA_IMPLS=name=module:Class,...`  register implementations that
  are not (yet) in `impls.api.IMPLEMENTATIONS`: an out-of-tree port, or the
  test doubles of the test suite.
* `EVDIFF_GUIDANCE=0|1`  feed what the implementations did to libFuzzer as
  extra features (`fuzz.guidance`); default: `GUIDANCE_DEFAULT`.
* `EVDIFF_NO_INSTRUMENT=1`  import without coverage instrumentation (only
  to check that the start-up coverage check notices).
* `EVDIFF_INSTRUMENT=none|impls|all`  what atheris instruments: nothing
  (libFuzzer's only coverage is then `fuzz.guidance`'s features, which this
  turns on), the implementations, or also evdiff's own modules on the
  fuzzing path (decoding, the oracle, root causes); default
  `INSTRUMENT_DEFAULT`.
* `EVDIFF_TRACE_CMP=0|1`  atheris's comparison tracing (libFuzzer's CMP
  hints) in instrumented modules; default `TRACE_CMP_DEFAULT`.
"""
from __future__ import annotations

import os

FINDINGS = "EVDIFF_FINDINGS"
RAISE = "EVDIFF_RAISE"
RAISE_KNOWN = "EVDIFF_RAISE_KNOWN"
IMPLS = "EVDIFF_IMPLS"
EXTRA_IMPLS = "EVDIFF_EXTRA_IMPLS"
NO_INSTRUMENT = "EVDIFF_NO_INSTRUMENT"
GUIDANCE = "EVDIFF_GUIDANCE"
INSTRUMENT = "EVDIFF_INSTRUMENT"
INSTRUMENT_SCOPES = ("none", "impls", "all")
#: None: the implementations run at full speed and libFuzzer's coverage is
#: `fuzz.guidance`'s features; measured (README, "Fuzz campaigns"): 2.65x the
#: executions per second of "all", and every seed bug class found sooner.
INSTRUMENT_DEFAULT = "none"
TRACE_CMP = "EVDIFF_TRACE_CMP"
TRACE_CMP_DEFAULT = True
#: Off: no clear gain in time to first finding (measured: `fuzz.guidance`).
GUIDANCE_DEFAULT = False

#: What to say where atheris is missing (format with python=sys.executable).
INSTALL = ("evdiff fuzz: atheris is not installed for {python}.\n"
           "  install it:  {python} -m pip install 'atheris>=2.3'   (Linux x86_64, CPython 3.11-3.13 wheels)\n"
           "  or fuzz without it:  evdiff fuzz --engine hypothesis")


def extra_impls(env=os.environ) -> dict[str, str]:
    """`EVDIFF_EXTRA_IMPLS` as a registry fragment {name: "module:Class"}."""
    out = {}
    for item in filter(None, (s.strip() for s in env.get(EXTRA_IMPLS, "").split(","))):
        name, eq, target = item.partition("=")
        if not eq or ":" not in target:
            raise ValueError(f"{EXTRA_IMPLS}: '{item}' is not name=module:Class")
        out[name.strip()] = target.strip()
    return out


def register_extra(api, env=os.environ) -> None:
    """Add `EVDIFF_EXTRA_IMPLS` to the registry `api` (impls.api)."""
    for name, target in extra_impls(env).items():
        api.IMPLEMENTATIONS[name] = target
        api._loaded.pop(name, None)


def impl_names(api, env=os.environ) -> list[str]:
    chosen = [n.strip() for n in env.get(IMPLS, "").split(",") if n.strip()]
    if not chosen:
        return api.names()
    if "reference" not in chosen:
        chosen.insert(0, "reference")
    return chosen


def flag(name: str, env=os.environ) -> bool:
    return env.get(name, "").lower() not in ("", "0", "no", "false")


def guidance(env=os.environ) -> bool:
    """Whether the target feeds `fuzz.guidance` features (`EVDIFF_GUIDANCE`;
    always without instrumentation: they are then the only coverage)."""
    if instrument_scope(env) == "none":
        return True
    return flag(GUIDANCE, env) if env.get(GUIDANCE, "") != "" else GUIDANCE_DEFAULT


def instrument_scope(env=os.environ) -> str:
    """`EVDIFF_INSTRUMENT`: "none", "impls" or "all"."""
    scope = env.get(INSTRUMENT, "") or INSTRUMENT_DEFAULT
    if scope not in INSTRUMENT_SCOPES:
        raise ValueError(f"{INSTRUMENT}={scope}: one of {', '.join(INSTRUMENT_SCOPES)}")
    return scope


def trace_cmp(env=os.environ) -> bool:
    """Whether atheris traces comparisons (`EVDIFF_TRACE_CMP`)."""
    return flag(TRACE_CMP, env) if env.get(TRACE_CMP, "") != "" else TRACE_CMP_DEFAULT
