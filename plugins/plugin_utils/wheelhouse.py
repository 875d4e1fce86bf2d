# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Which part of a wheelhouse fits a node, and the command that builds the missing part.

A wheelhouse holds one directory per Python version and CPU architecture, named by
`tag_dir()` (e.g. `cp313-x86_64/`), each filled by `download_command()`; a flat directory of
wheels (the older layout) is used as it is. A node gets the directory named for its Python and
CPU when there is one, else the top directory, and only when that directory holds a Ray wheel
the node can install (its Python, CPU and glibc): otherwise the error says what to build.
"""

from __future__ import annotations

import shlex

# Architectures whose manylinux tags start at glibc 2.5 (PEP 600); the others start at 2.17.
_OLD_MANYLINUX = ("x86_64", "i686")


def tag_dir(python: str, arch: str) -> str:
    """The wheelhouse directory for a node: `cp311-x86_64` for Python 3.11.x on x86_64."""
    return f"cp{_short(python)}-{arch}"


def _short(python: str) -> str:
    return "".join(python.split(".")[:2])


def _glibc_minor(glibc: str) -> int | None:
    parts = glibc.split(".")
    if len(parts) < 2 or parts[0] != "2" or not parts[1].isdigit():
        return None
    return int(parts[1])


def platform_tags(arch: str, glibc: str) -> list[str]:
    """Every manylinux platform tag a node with this CPU and glibc can install, newest first."""
    minor = _glibc_minor(glibc)
    if minor is None:
        return []
    low = 5 if arch in _OLD_MANYLINUX else 17
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, low - 1, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{arch}" for m, name in legacy.items() if low <= m <= minor]
    return tags


def wheel_fits(filename: str, python: str, arch: str, glibc: str) -> bool:
    """Whether a wheel file can be installed by CPython `python` on this CPU and glibc."""
    parts = filename[:-len(".whl")].split("-") if filename.endswith(".whl") else []
    if len(parts) < 5:
        return False
    pythons, abis, platforms = (set(p.split(".")) for p in parts[-3:])
    short = _short(python)
    minor = int(short[1:]) if len(short) > 1 and short.isdigit() else -1
    python_ok = bool({f"cp{short}", "py3", f"py{short}"} & pythons) or any(
        p.startswith("cp3") and p[3:].isdigit() and int(p[3:]) <= minor for p in pythons
        if "abi3" in abis)
    abi_ok = bool({f"cp{short}", "abi3", "none"} & abis)
    platform_ok = "any" in platforms or bool(set(platform_tags(arch, glibc)) & platforms)
    return python_ok and abi_ok and platform_ok


def download_command(dest: str, python: str, arch: str, glibc: str,
                     requirements: list[str]) -> str:
    """The pip command (for a POSIX shell) that fills `dest` with wheels for such a node.

    pip matches --platform literally, so every manylinux tag the node accepts is listed; the
    shell's brace expansion keeps the command short.
    """
    minor = _glibc_minor(glibc) or 17
    low = 5 if arch in _OLD_MANYLINUX else 17
    legacy = [t for t in platform_tags(arch, glibc) if not t.startswith("manylinux_2_")]
    platforms = [f"--platform=manylinux_2_{{{low}..{max(minor, low)}}}_{arch}"]
    platforms += [f"--platform={t}" for t in legacy]
    minor_version = ".".join(python.split(".")[:2])
    return " ".join([
        "python3 -m pip download --only-binary=:all:", f"--python-version={minor_version}",
        *platforms, "--dest", shlex.quote(dest), *map(shlex.quote, requirements),
    ])


def choose(root: str, listing: dict[str, list[str]], package: str, version: str,
           python: str, arch: str, glibc: str, requirements: list[str]) -> dict:
    """The directory of `root` to install from on this node, or why there is none.

    `listing` maps each directory of the wheelhouse ("" for the top) to its file names.
    Returns {"dir": path or "", "error": message or ""}.
    """
    root = root.rstrip("/") or "/"
    name = tag_dir(python, arch)
    chosen = name if name in listing else ""
    project = package.split("[")[0].strip().lower().replace("-", "_")
    prefix = f"{project}-{version}-"
    found = [f for f in listing.get(chosen, []) if f.lower().startswith(prefix)]
    if any(wheel_fits(f, python, arch, glibc) for f in found):
        return {"dir": f"{root}/{chosen}" if chosen else root, "error": ""}
    where = f"{root}/{chosen}" if chosen else root
    others = sorted(d for d in listing if d and d != chosen)
    held = ", ".join(found) or f"no {project} {version} wheel"
    error = (
        f"the wheelhouse {root} has no {project} {version} wheel for Python {python or '(none)'}"
        f" on {arch} with glibc {glibc or '(unknown)'}: {where} holds {held}"
        + (f" (other directories: {', '.join(others)})" if others else "")
        + f". Build {name} on the controller: "
        + download_command(f"{root}/{name}", python, arch, glibc, requirements)
    )
    return {"dir": "", "error": error}
