"""Every role's meta/argument_specs.yml mirrors its defaults/main.yml exactly.

The argument specs are what `ansible-doc -t role` shows and what Ansible validates role input
against; the defaults are what the role actually uses. They must not drift: same names, same
defaults, types that fit the defaults, and every variable prefixed with the role's name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists())
TYPES = {"str": str, "int": int, "bool": bool, "list": list, "dict": dict, "float": float}


def _load(role: str) -> tuple[dict, dict]:
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return defaults, specs["argument_specs"]


def _options(specs: dict) -> dict[str, dict]:
    """Options of all entry points; an option in several entry points has one spec."""
    merged: dict[str, dict] = {}
    for entry, spec in specs.items():
        for name, option in (spec.get("options") or {}).items():
            if name in merged:
                assert merged[name] == option, f"{name}: differs between entry points ({entry})"
            merged[name] = option
    return merged


def test_every_role_has_defaults_and_specs() -> None:
    assert {"head", "worker", "ray"} <= set(ROLE_NAMES)
    for role in ROLE_NAMES:
        assert (ROLES / role / "meta" / "argument_specs.yml").exists(), role


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_specs_and_defaults_name_the_same_variables(role: str) -> None:
    defaults, specs = _load(role)
    options = _options(specs)
    required = {name for name, option in options.items() if option.get("required")}
    assert set(defaults) == set(options) - required
    assert not required & set(defaults), "a required option must not have a default"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_spec_defaults_equal_the_defaults(role: str) -> None:
    defaults, specs = _load(role)
    for name, option in _options(specs).items():
        if option.get("required"):
            assert "default" not in option, name
            continue
        assert "default" in option, f"{name}: no default in the spec"
        assert option["default"] == defaults[name], name


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_types_fit_the_defaults(role: str) -> None:
    defaults, specs = _load(role)
    for name, option in _options(specs).items():
        assert option.get("type") in TYPES, f"{name}: type {option.get('type')!r}"
        assert option.get("description"), f"{name}: no description"
        if name not in defaults:
            continue
        value = defaults[name]
        expected = TYPES[option["type"]]
        if isinstance(value, str) and "{{" in value:
            assert expected is str, f"{name}: a template default needs type str"
            continue
        assert isinstance(value, expected), f"{name}: default {value!r} is not {option['type']}"
        if expected is int:
            assert not isinstance(value, bool), f"{name}: a bool where an int is declared"
        if "choices" in option:
            assert value in option["choices"], name
        if option["type"] == "list" and value:
            assert "elements" in option, f"{name}: list without elements type"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_variables_carry_the_role_prefix(role: str) -> None:
    defaults, specs = _load(role)
    for name in set(defaults) | set(_options(specs)):
        assert name.startswith(f"{role}_"), f"{name}: not prefixed with {role}_"
