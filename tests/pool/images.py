"""Build the pool's images locally, with no registry, cached by a hash of what built them.

base  a Debian rootfs made by debootstrap and `docker import`ed
node  the base plus systemd/sshd configuration (tests/pool/image/)

Each image is tagged with the hash of its inputs, so a second run finds the tag and builds
nothing; `:latest` points at the newest node image of the default suite (Debian 12) for
Molecule scenarios, `:<suite>` at each suite's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.pool.progress import step

IMAGE_DIR = Path(__file__).parent / "image"
BASE_REPO = "onprem-ray-base"
NODE_REPO = "onprem-ray-node"
SUITE = "bookworm"
# The Debian releases a pool's machines can run (their Python: tests/pool/wheelhouse.py NODE_OS).
SUITES = ("bookworm", "trixie")
# Everything the machines need is installed here: containers cannot reach a package index.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "openssh-client",
    "sudo",
    "python3",
    "python3-venv",
    "rsync",
    "iproute2",
    "procps",
    "netbase",
    "ca-certificates",
    "less",
)
# Bump when the build recipe changes in a way the inputs above do not show.
RECIPE_VERSION = "1"


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise ValueError(f"Debian suite {suite!r}: the pool has {', '.join(SUITES)}")
    return suite


def base_tag(suite: str = SUITE) -> str:
    return f"{BASE_REPO}:{_digest(RECIPE_VERSION, _check_suite(suite), *PACKAGES)}"


def node_tag(suite: str = SUITE) -> str:
    files = sorted(p for p in IMAGE_DIR.rglob("*") if p.is_file())
    parts: list[str | bytes] = [base_tag(suite)]
    for path in files:
        parts += [str(path.relative_to(IMAGE_DIR)), path.read_bytes()]
    return f"{NODE_REPO}:{_digest(*parts)}"


def image_exists(tag: str) -> bool:
    result = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, check=False
    )
    return result.returncode == 0


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (override: ONPREM_RAY_DEBIAN_MIRROR)."""
    override = os.environ.get("ONPREM_RAY_DEBIAN_MIRROR")
    if override:
        return override
    candidates = [Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in candidates:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            if path.suffix == ".sources" and words[:1] == ["URIs:"]:
                uris = words[1:]
            elif words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w][:1]
            else:
                continue
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    raise RuntimeError(
        "no Debian mirror found in /etc/apt/sources.list*; set ONPREM_RAY_DEBIAN_MIRROR"
    )


def build_base(tag: str, suite: str = SUITE) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="onprem-ray-rootfs-") as tmp:
        root = Path(tmp) / "root"
        with step(f"debootstrap {suite} from {mirror} (about 1-2 minutes)"):
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    suite,
                    str(root),
                    mirror,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / leftover).glob("*"):
                    if entry.is_file():
                        entry.unlink()
        with step(f"docker import as {tag}"):
            tar = subprocess.Popen(
                ["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                stdout=subprocess.PIPE,
            )
            subprocess.run(
                ["docker", "import", "--change", "CMD [\"/sbin/init\"]", "-", tag],
                stdin=tar.stdout,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError("tar of the debootstrapped rootfs failed")


def build_node(tag: str, base: str) -> None:
    with step(f"docker build {tag}"):
        subprocess.run(
            [
                "docker",
                "build",
                "--quiet",
                "--network=none",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--label",
                "onprem.ray.tool=test-pool",
                "--tag",
                tag,
                str(IMAGE_DIR),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def ensure_images(suite: str = SUITE) -> str:
    """Build whatever is missing for Debian `suite` and return its node image's tag."""
    base, node = base_tag(suite), node_tag(suite)
    if image_exists(node):
        print(f"[pool] image {node} is cached", file=sys.stderr, flush=True)
    else:
        if image_exists(base):
            print(f"[pool] image {base} is cached", file=sys.stderr, flush=True)
        else:
            build_base(base, suite)
        build_node(node, base)
    aliases = [suite] + (["latest"] if suite == SUITE else [])
    for alias in aliases:
        subprocess.run(["docker", "tag", node, f"{NODE_REPO}:{alias}"], check=True,
                       capture_output=True)
    return node
