"""Creating and removing pools: refusals, and teardown that leaves nothing behind."""

from __future__ import annotations

import subprocess

import pytest

from tests.pool import pool as pools

pytestmark = pytest.mark.pool


def _labelled(kind: str, name: str) -> list[str]:
    out = subprocess.run(["docker", kind, "ls", "-q", "--filter",
                          f"label={pools.POOL_LABEL}={name}"] + (["-a"] if kind == "container"
                                                                  else []),
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_teardown_leaves_nothing_behind() -> None:
    name = "pytest-teardown"
    pools.remove(name)
    pool = pools.create(name, machines=1)
    assert _labelled("container", name) and _labelled("network", name)
    assert pool.state_dir.exists()
    pools.remove(name)
    assert _labelled("container", name) == []
    assert _labelled("network", name) == []
    assert not pool.state_dir.exists()


def test_teardown_after_a_crash_halfway(monkeypatch) -> None:
    """A create() that dies after the network and a container exist leaves nothing behind."""
    name = "pytest-crash"
    pools.remove(name)

    def crash(*_args, **_kwargs):
        raise RuntimeError("simulated crash while waiting for the machines")

    monkeypatch.setattr(pools, "_wait_ready", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pools.create(name, machines=1)
    assert _labelled("container", name) == []
    assert _labelled("network", name) == []


def test_a_taken_subnet_is_refused(pool: pools.Pool) -> None:
    with pytest.raises(pools.PoolError, match=f"overlaps {pool.subnet}"):
        pools.create("pytest-clash", machines=1, subnet=pool.subnet)
    assert _labelled("network", "pytest-clash") == []


def test_bad_names_are_refused() -> None:
    for bad in ("", "Has-Caps", "semi;colon", "x" * 30):
        with pytest.raises(pools.PoolError, match="pool name"):
            pools.create(bad)


def test_a_second_run_builds_nothing(pool: pools.Pool, capfd) -> None:
    """The pool fixture built or found the images; asking again must only find them."""
    from tests.pool import images

    capfd.readouterr()
    tag = images.ensure_images()
    err = capfd.readouterr().err
    assert tag == images.node_tag()
    assert f"image {tag} is cached" in err
    assert "debootstrap" not in err and "docker build" not in err


def test_image_tags_follow_their_inputs(monkeypatch) -> None:
    from tests.pool import images

    before = (images.base_tag(), images.node_tag())
    monkeypatch.setattr(images, "PACKAGES", (*images.PACKAGES, "curl"))
    after = (images.base_tag(), images.node_tag())
    assert before[0] != after[0] and before[1] != after[1]


def test_the_default_subnet_skips_taken_ones(monkeypatch) -> None:
    import ipaddress

    first = pools.default_subnet("some-pool")
    monkeypatch.setattr(pools, "_subnets_in_use",
                        lambda: [("docker network other", ipaddress.ip_network(first))])
    second = pools.default_subnet("some-pool")
    assert second != first
    assert second.startswith("10.213.") and second.endswith(".0/24")


def test_each_suite_has_its_own_images_and_the_default_keeps_its_tags() -> None:
    from tests.pool import images

    assert images.base_tag() == images.base_tag("bookworm")
    assert images.node_tag("trixie") != images.node_tag("bookworm")
    with pytest.raises(ValueError, match="the pool has bookworm, trixie"):
        images.base_tag("sid")


def test_machine_suites_are_one_for_all_or_one_each() -> None:
    assert pools._suites_for("p", 3, None) == ["bookworm"] * 3
    assert pools._suites_for("p", 2, ["trixie"]) == ["trixie", "trixie"]
    assert pools._suites_for("p", 2, ["bookworm", "trixie"]) == ["bookworm", "trixie"]
    with pytest.raises(pools.PoolError, match="2 suites for 3 machines"):
        pools._suites_for("p", 3, ["bookworm", "trixie"])
    with pytest.raises(pools.PoolError, match="unknown Debian suite sid"):
        pools._suites_for("p", 1, ["sid"])
