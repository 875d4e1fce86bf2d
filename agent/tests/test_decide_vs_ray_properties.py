"""Properties of the planner against Ray 2.60's own scheduler, over generated demand: the
machines planned never exceed what Ray's scheduler would launch by more than one per node type
(types with the same resources and labels counted together, since Ray picks among them
arbitrarily), and the plan never leaves feasible demand unplanned while a type has room
(deciding again with the planned machines joining adds nothing more than Ray's scheduler would
on that state).

Each property runs inside a test that counts which side each example reached and prints the
ratios; the test fails if the generator missed a side (a property that is never exercised
proves nothing).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onprem_ray_agent.model import (
    ActionKind,
    BundleDemand,
    Config,
    DemandSnapshot,
    LabelConstraint,
    LabelOperator,
    LabelSelector,
    Machine,
    MachineState,
    NodeType,
    PlacementGroupDemand,
    PlacementStrategy,
    RayNode,
)
from onprem_ray_agent.policy import decide

HEAD = "10.0.0.1"
NOW = 10_000.0
TYPES = [{"CPU": 4}, {"CPU": 16}, {"CPU": 8, "GPU": 1}, {"CPU": 32, "GPU": 4}, {"CPU": 2}]
SHAPES = [{"CPU": 1}, {"CPU": 2}, {"CPU": 4}, {"CPU": 16}, {"GPU": 1}, {"CPU": 2, "GPU": 1},
          {"CPU": 0.5}, {"GPU": 4}, {"CPU": 3}]
ZONES = ["a", "b", "c"]


@st.composite
def selectors(draw) -> tuple[LabelSelector, ...]:
    if draw(st.integers(0, 3)):  # mostly none
        return ()
    operator = draw(st.sampled_from(list(LabelOperator)))
    values = tuple(sorted(draw(st.sets(st.sampled_from(ZONES), min_size=1, max_size=2))))
    return (LabelSelector((LabelConstraint("zone", operator, values),)),)


@st.composite
def situations(draw) -> tuple[Config, list[Machine], DemandSnapshot]:
    count = draw(st.integers(1, 3))
    node_types, machines, nodes = [], [], [RayNode(ip=HEAD, total={"CPU": 1},
                                                   available={"CPU": 0})]
    for index in range(count):
        size = draw(st.integers(1, 4))
        ips = tuple(f"10.0.{index + 1}.{i}" for i in range(1, size + 1))
        zone = draw(st.sampled_from([None, *ZONES]))
        resources = draw(st.sampled_from(TYPES))
        node_types.append(NodeType(
            name=f"t{index}", ips=ips, resources=resources,
            labels={"zone": zone} if zone else {},
            max_workers=draw(st.one_of(st.none(), st.integers(0, size)))))
        for ip in ips:
            if draw(st.integers(0, 4)) == 0:  # sometimes already running, partly busy
                machines.append(Machine(ip=ip, node_type=f"t{index}",
                                        state=MachineState.ACTIVE, since=NOW - 600))
                free = {name: amount * draw(st.sampled_from([0.0, 0.5, 1.0]))
                        for name, amount in resources.items()}
                nodes.append(RayNode(ip=ip, total=resources, available=free,
                                     labels={"zone": zone} if zone else {}))
            else:
                machines.append(Machine(ip=ip, node_type=f"t{index}", since=NOW - 600))
    config = Config(head_ip=HEAD, node_types=tuple(node_types),
                    max_workers=draw(st.one_of(st.none(), st.integers(0, 8))),
                    upscaling_speed=1e6, max_concurrent_launches=10**6)
    pending = [BundleDemand(draw(st.sampled_from(SHAPES)), draw(st.integers(1, 12)),
                            draw(selectors()))
               for _ in range(draw(st.integers(0, 3)))]
    groups = [PlacementGroupDemand(
        id=f"pg{i}", strategy=draw(st.sampled_from(list(PlacementStrategy))),
        bundles=tuple(draw(st.lists(st.sampled_from(SHAPES[:6]), min_size=1, max_size=4))))
        for i in range(draw(st.integers(0, 2)))]
    constraints = ([BundleDemand(draw(st.sampled_from(SHAPES)), draw(st.integers(1, 6)))]
                   if draw(st.integers(0, 4)) == 0 else [])
    return config, machines, DemandSnapshot(
        pending=tuple(pending), placement_groups=tuple(groups),
        constraints=tuple(constraints), nodes=tuple(nodes))


def _adds(decision) -> Counter:
    return Counter(a.node_type for a in decision.of_kind(ActionKind.ADD) for _ in a.ips)


def _joined(machines: list[Machine], decision) -> list[Machine]:
    """The records once the plan's adds started: those machines are joining."""
    adding = set(decision.ips_of(ActionKind.ADD))
    return [dataclasses.replace(m, state=MachineState.JOINING, since=NOW)
            if m.ip in adding else m for m in machines]


@pytest.mark.ray
def test_never_more_than_one_machine_per_type_above_rays_scheduler() -> None:
    from ray_reference import ray_launches

    seen: Counter = Counter()

    @given(situations())
    def check(situation) -> None:
        config, machines, snapshot = situation
        ours = _adds(decide(config, machines, snapshot, NOW))
        ray = Counter(ray_launches(config, machines, snapshot))
        assert not _beyond(config, ours, ray, slack=1), (ours, ray)
        total, theirs = sum(ours.values()), sum(ray.values())
        seen["some launch"] += bool(total or theirs)
        seen["same as Ray"] += ours == ray
        seen["more than Ray"] += any(ours[t] > ray[t] for t in ours)
        seen["fewer than Ray"] += any(ours[t] < ray[t] for t in ray)
        seen["examples"] += 1

    check()
    print("\nagainst Ray's scheduler:", _ratios(seen))
    assert seen["some launch"] and seen["same as Ray"]
    assert seen["some launch"] >= seen["examples"] // 4, seen


@pytest.mark.ray
def test_never_leaves_feasible_demand_unplanned_while_a_type_has_room() -> None:
    seen: Counter = Counter()

    @given(situations())
    def check(situation) -> None:
        config, machines, snapshot = situation
        first = decide(config, machines, snapshot, NOW)
        joined = _joined(machines, first)
        again = _adds(decide(config, joined, snapshot, NOW))
        if again:
            # Greedy placement can place the demand differently once the planned machines
            # are joining (a group then takes a joining machine instead of the older node it
            # went to) and want one more; Ray's scheduler does the same on that state. Only
            # adds beyond Ray's own on the same state are demand the first plan left out.
            from ray_reference import ray_launches

            ray_again = Counter(ray_launches(config, joined, snapshot))
            assert not _beyond(config, again, ray_again, slack=0), (first, again, ray_again)
            seen["planned again, as Ray plans again"] += 1
        waiting = [note for note in first.notes if note.startswith("waiting:")]
        seen["examples"] += 1
        seen["adds"] += bool(first.of_kind(ActionKind.ADD))
        seen["demand left waiting (no room)"] += bool(waiting)
        seen["all demand planned"] += not waiting and not first.infeasible
        seen["infeasible demand"] += bool(first.infeasible)

    check()
    print("\nplanned to the limits:", _ratios(seen))
    for side in ("adds", "demand left waiting (no room)", "all demand planned",
                 "infeasible demand"):
        assert seen[side], (side, seen)


def _beyond(config: Config, ours: Counter, ray: Counter, slack: int) -> list[tuple]:
    """Node types whose adds exceed Ray's by more than `slack` each. Types with the same
    resources and labels are one: Ray picks among them arbitrarily (3 machines of the first
    where Ray takes one of each is the same plan)."""
    kinds: dict[tuple, list[str]] = {}
    for node_type in config.node_types:
        kind = (tuple(sorted(node_type.resources.items())),
                tuple(sorted(node_type.labels.items())))
        kinds.setdefault(kind, []).append(node_type.name)
    return [(names, sum(ours[n] for n in names), sum(ray[n] for n in names))
            for names in kinds.values()
            if sum(ours[n] for n in names) > sum(ray[n] for n in names) + slack * len(names)]


def _ratios(seen: Counter) -> str:
    total = seen["examples"] or 1
    return ", ".join(f"{key} {value}/{total} ({100 * value / total:.0f}%)"
                     for key, value in seen.items() if key != "examples")
