"""decide() pauses Python's cyclic garbage collector while it runs, and only then."""

from __future__ import annotations

import gc

import pytest
from decide_fixtures import NOW, bundles, config, machine, node_type, snapshot

from onprem_ray_agent import policy

CPU = config(node_type("cpu", 2))


@pytest.fixture
def gc_state():
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_paused_during_a_decision_and_enabled_after(gc_state, monkeypatch):
    seen = []
    real_build = policy.Context.build

    def build(*args, **kwargs):
        seen.append(gc.isenabled())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(policy.Context, "build", build)
    gc.enable()
    decision = policy.decide(CPU, [machine("cpu", 1, "spare")],
                             snapshot(pending=[bundles({"CPU": 1}, 1)]), NOW)
    assert seen == [False]
    assert gc.isenabled()
    assert decision.actions, "the decision was made (one spare added for the demand)"


def test_a_decision_that_raises_still_enables_the_collector(gc_state, monkeypatch):
    def build(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(policy.Context, "build", build)
    gc.enable()
    with pytest.raises(RuntimeError, match="boom"):
        policy.decide(CPU, [], snapshot(), NOW)
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled(gc_state):
    gc.disable()
    policy.decide(CPU, [machine("cpu", 1, "spare")], snapshot(), NOW)
    assert not gc.isenabled()
