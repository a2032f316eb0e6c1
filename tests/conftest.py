"""Shared fixtures.  `fake_impl` registers a test double under a name (such as
`prepatch`) that runs the reference and transforms its outcome."""
import sys
import types

import pytest

from impls import api
from impls.api import Implementation


@pytest.fixture
def fake_impl(monkeypatch):
    module = types.ModuleType("evdiff_test_doubles")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    registered = []

    def register(name, transform):
        class Fake(Implementation):
            origin = "test"
            summary = "test double"

            def run(self, scenario):
                from fakes import _reference

                return transform(_reference(scenario), scenario)

        Fake.name = name
        setattr(module, f"Fake_{name}", Fake)
        monkeypatch.setitem(api.IMPLEMENTATIONS, name, f"{module.__name__}:Fake_{name}")
        api._loaded.pop(name, None)
        registered.append(name)

    yield register
    for name in registered:
        api._loaded.pop(name, None)
