"""The wheelhouse: which directory fits a node, and what to build when none does."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from ansible_collections.onprem.ray.plugins.plugin_utils.wheelhouse import (
    choose,
    download_command,
    platform_tags,
    tag_dir,
    wheel_fits,
)

RAY311 = "ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl"
RAY313 = "ray-2.60.0-cp313-cp313-manylinux2014_x86_64.whl"
CRYPTO = "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl"
REQS = ["ray[default]==2.60.0", "prometheus-client==0.26.0"]


def pick(listing, python="3.13.5", arch="x86_64", glibc="2.41", version="2.60.0"):
    return choose("/w/", listing, "ray[default]", version, python, arch, glibc, REQS)


def test_tag_dir_is_the_cpython_tag_and_the_architecture() -> None:
    assert tag_dir("3.11.2", "x86_64") == "cp311-x86_64"
    assert tag_dir("3.13", "aarch64") == "cp313-aarch64"


def test_platform_tags_are_every_manylinux_the_glibc_accepts() -> None:
    tags = platform_tags("x86_64", "2.36")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_5_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags
    arm = platform_tags("aarch64", "2.36")
    assert "manylinux_2_17_aarch64" in arm and "manylinux_2_16_aarch64" not in arm
    assert "manylinux1_aarch64" not in arm
    assert platform_tags("x86_64", "") == []


@pytest.mark.parametrize(("wheel", "python", "arch", "glibc", "fits"), [
    (RAY311, "3.11.2", "x86_64", "2.36", True),
    (RAY311, "3.13.5", "x86_64", "2.41", False),
    (RAY311, "3.11.2", "aarch64", "2.36", False),
    (RAY311, "3.11.2", "x86_64", "", False),  # musl or unknown: no manylinux
    (CRYPTO, "3.13.5", "x86_64", "2.41", True),
    (CRYPTO, "3.11.2", "x86_64", "2.31", False),
    (CRYPTO, "3.10.12", "x86_64", "2.36", False),
    ("six-1.17.0-py2.py3-none-any.whl", "3.13.5", "aarch64", "", True),
    ("rpds_py-2026.9.1-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     "3.13.1", "x86_64", "2.41", True),
    ("ray-2.60.0.tar.gz", "3.11.2", "x86_64", "2.36", False),
])
def test_wheel_fits_by_python_abi_and_platform(wheel, python, arch, glibc, fits) -> None:
    assert wheel_fits(wheel, python, arch, glibc) is fits


def test_a_node_gets_the_directory_named_for_its_python_and_cpu() -> None:
    listing = {"": [], "cp311-x86_64": [RAY311], "cp313-x86_64": [RAY313]}
    assert pick(listing) == {"dir": "/w/cp313-x86_64", "error": ""}
    assert pick(listing, python="3.11.2", glibc="2.36")["dir"] == "/w/cp311-x86_64"


def test_a_flat_wheelhouse_serves_the_nodes_its_wheels_fit() -> None:
    assert pick({"": [RAY311]}, python="3.11.2", glibc="2.36") == {"dir": "/w", "error": ""}


def test_a_node_without_a_fitting_wheel_is_told_what_to_build() -> None:
    result = pick({"": [], "cp311-x86_64": [RAY311]})
    assert result["dir"] == ""
    error = result["error"]
    assert "Python 3.13.5 on x86_64 with glibc 2.41" in error
    assert "/w holds no ray 2.60.0 wheel (other directories: cp311-x86_64)" in error
    assert "Build cp313-x86_64 on the controller" in error
    assert ("python3 -m pip download --only-binary=:all: --python-version=3.13 "
            "--platform=manylinux_2_{5..41}_x86_64 --platform=manylinux2014_x86_64 ") in error
    assert "--dest /w/cp313-x86_64 'ray[default]==2.60.0' prometheus-client==0.26.0" in error


def test_a_wheel_of_another_ray_version_does_not_count() -> None:
    result = pick({"": [], "cp313-x86_64": [RAY313]}, version="2.61.0")
    assert result["dir"] == "" and f"holds {RAY313}" not in result["error"]
    assert "/w/cp313-x86_64 holds no ray 2.61.0 wheel" in result["error"]


def test_the_wrong_architecture_is_refused() -> None:
    result = pick({"": [], "cp313-x86_64": [RAY313]}, arch="aarch64", glibc="2.41")
    assert result["dir"] == "" and "on aarch64" in result["error"]
    assert "--platform=manylinux_2_{17..41}_aarch64" in result["error"]


def test_the_command_expands_to_one_platform_option_per_tag() -> None:
    command = download_command("/w/cp311-x86_64", "3.11", "x86_64", "2.36", ["ray==2.60.0"])
    words = subprocess.run(["bash", "-c", f"printf '%s\\n' {command.split(' ', 4)[4]}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert [w for w in words if w.startswith("--platform=")] == [
        f"--platform={t}" for t in [*(f"manylinux_2_{m}_x86_64" for m in range(5, 37)),
                                    "manylinux2014_x86_64", "manylinux2010_x86_64",
                                    "manylinux1_x86_64"]]
    assert shlex.split(command)[:4] == ["python3", "-m", "pip", "download"]
