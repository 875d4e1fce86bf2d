# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""On the controller: the onprem-ray wheel the head installs the agent from, and where the
collections the agent's playbooks need are (lookup onprem.ray.agent_wheel, once per run).

The wheel is, in this order: `wheel` when given; built from `source` when it is a checkout
(it has pyproject.toml and the agent's package), once per content (cached under
`cache/<content hash>/`, from a clean copy, with fixed timestamps: the same sources give the
same bytes, so the head's copy changes only when the code does); else
onprem_ray-<version>-py3-none-any.whl of `wheelhouse`; else, when the collection is part of an
installed onprem-ray distribution (`pip install onprem-ray`), that distribution packed again
into a wheel (cached under `cache/installed-<content hash>/`).
`agent_wheel()` returns {"wheel": path, "built": bool, "sha256": the wheel's, "code": hash,
"collections": {name: directory or None}, "trees": {name: tree hash or None}};
`code` changes only when the code the agent's process runs changes (its package and the
collection's plugins it imports), not with the roles and playbooks it runs in fresh processes:
the head role restarts the agent only then. A tree hash is the one the onprem.ray.node_facts
module reports for the head's copy (the copy is skipped when they are equal). On an error,
WheelError says what to do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time

# What the distribution is built from (pyproject.toml's package-dir and package-data).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "galaxy.yml", "agent/onprem_ray_agent",
           "cli/onprem_ray_cli", "meta", "playbooks", "plugins", "roles")
# What the agent's process imports (the rest of the collection is read by each playbook run).
CODE = ("agent/onprem_ray_agent", "plugins")
# Zip timestamps of the build (1980-01-01, the earliest a zip can hold).
SOURCE_DATE_EPOCH = "315532800"
PRUNE_AFTER_S = 7 * 86400


class WheelError(Exception):
    pass


def _files(source: str, tops: tuple[str, ...] = SOURCES):
    for top in tops:
        path = os.path.join(source, top)
        if os.path.isfile(path):
            yield top
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if not name.endswith(".pyc"):
                    yield os.path.relpath(os.path.join(dirpath, name), source)


def content_key(source: str, tops: tuple[str, ...] = SOURCES) -> str:
    digest = hashlib.sha256()
    for relative in _files(source, tops):
        digest.update(relative.encode() + b"\0")
        with open(os.path.join(source, relative), "rb") as stream:
            digest.update(stream.read())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def build(source: str, cache: str) -> tuple[str, bool]:
    """The wheel of `source`, built unless the cache has it for this content."""
    target = os.path.join(cache, content_key(source))
    found = [n for n in os.listdir(target) if n.endswith(".whl")] if os.path.isdir(target) else []
    if found:
        os.utime(target)  # in use: not pruned
        return os.path.join(target, found[0]), False
    work = os.path.join(cache, f".build-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        # A clean copy: setuptools reuses build/ of a source tree, files deleted since included.
        for relative in _files(source):
            os.makedirs(os.path.dirname(os.path.join(work, "src", relative)), exist_ok=True)
            shutil.copy2(os.path.join(source, relative), os.path.join(work, "src", relative))
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-build-isolation", "--no-index",
             "--wheel-dir", os.path.join(work, "dist"), os.path.join(work, "src")],
            capture_output=True, text=True, check=False,
            env=os.environ | {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
        if done.returncode != 0:
            raise WheelError(
                f"building the onprem-ray wheel from {source} with {sys.executable} failed "
                f"(it needs setuptools>=77 there: pip install 'setuptools>=77'; or set "
                f"head_agent_wheel to a built wheel): {(done.stderr or done.stdout).strip()}")
        try:
            os.rename(os.path.join(work, "dist"), target)
        except OSError:  # another run built the same content meanwhile
            if not os.path.isdir(target):
                raise
        _prune(cache, keep=target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (name,) = [n for n in os.listdir(target) if n.endswith(".whl")]
    return os.path.join(target, name), True


def _prune(cache: str, keep: str) -> None:
    """Wheels of other contents not used for a week (another checkout may use a recent one)."""
    now = time.time()
    for entry in os.scandir(cache):
        try:
            if entry.path != keep and now - entry.stat().st_mtime > PRUNE_AFTER_S:
                shutil.rmtree(entry.path)
        except OSError:
            pass  # gone already: the next run tries again


def tree_hash(root: str | None) -> str | None:
    """SHA-256 over the relative paths and contents of the files under `root`, Python caches
    left out (as onprem.ray.node_facts computes it on the head)."""
    if root is None or not os.path.isdir(root):
        return None
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as stream:
                digest.update(stream.read())
            digest.update(b"\0")
    return digest.hexdigest()


def collection_dir(name: str, search_paths: list[str]) -> str | None:
    """The directory of collection `name` in the first of `search_paths` that has it (Ansible's
    collections path, then Python's path: collections installed with pip)."""
    namespace, collection = name.partition(".")[::2]
    for root in search_paths:
        path = os.path.join(os.path.expanduser(root), "ansible_collections", namespace, collection)
        if os.path.isdir(path):
            return os.path.realpath(path)
    return None


# Files an installer adds to a distribution's metadata: not part of the wheel.
_INSTALLER_FILES = ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json")


def repack_installed(source: str, cache: str, path: list[str] | None = None) -> str | None:
    """The wheel of the onprem-ray distribution installed where `source` (the collection) is,
    packed again from its installed files (`pip install onprem-ray` is then all a controller
    needs); None when the collection is not part of an installed distribution."""
    from importlib import metadata  # only here: the rest needs none of it

    where = {"path": path} if path else {}
    for dist in metadata.distributions(name="onprem-ray", **where):
        collection = os.path.realpath(str(dist.locate_file("ansible_collections/onprem/ray")))
        if collection != source or not dist.files:
            continue
        files = sorted(str(f) for f in dist.files
                       if not str(f).startswith("..") and "__pycache__" not in str(f)
                       and not (".dist-info/" in str(f)
                                and str(f).rsplit("/", 1)[-1] in _INSTALLER_FILES))
        digest = hashlib.sha256()
        for relative in files:
            with open(dist.locate_file(relative), "rb") as stream:
                digest.update(relative.encode() + b"\0" + stream.read() + b"\0")
        target = os.path.join(cache, f"installed-{digest.hexdigest()[:20]}")
        name = f"onprem_ray-{dist.version}-py3-none-any.whl"
        if not os.path.isfile(os.path.join(target, name)):
            _write_wheel(dist, files, target, name)
        return os.path.join(target, name)
    return None


def _write_wheel(dist, files: list[str], target: str, name: str) -> None:
    """A wheel of `files` (paths relative to site-packages) with a new RECORD, fixed times."""
    import base64
    import zipfile

    os.makedirs(target, exist_ok=True)
    info = next(f.split("/", 1)[0] for f in files if f.split("/", 1)[0].endswith(".dist-info"))
    partial = os.path.join(target, f".{name}.{os.getpid()}")
    record = []
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as wheel:
        for relative in files:
            with open(dist.locate_file(relative), "rb") as stream:
                data = stream.read()
            wheel.writestr(zipfile.ZipInfo(relative, date_time=(1980, 1, 1, 0, 0, 0)), data)
            hashed = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{relative},sha256={hashed.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        wheel.writestr(zipfile.ZipInfo(f"{info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)),
                       "\n".join(record) + "\n")
    os.replace(partial, os.path.join(target, name))


def find_wheel(args: dict) -> tuple[str, bool]:
    if args.get("wheel"):
        wheel = os.path.expanduser(args["wheel"])
        if not os.path.isfile(wheel):
            raise WheelError(f"head_agent_wheel {wheel} does not exist on the controller")
        return os.path.realpath(wheel), False
    source = os.path.realpath(args["source"])
    # A checkout (an artifact of ansible-galaxy may carry pyproject.toml without the agent).
    if all(os.path.exists(os.path.join(source, part))
           for part in ("pyproject.toml", "agent/onprem_ray_agent/__init__.py")):
        cache = os.path.expanduser(args["cache"])
        os.makedirs(cache, exist_ok=True)
        return build(source, cache)
    name = f"onprem_ray-{args['version']}-py3-none-any.whl"
    wheelhouse = os.path.expanduser(args.get("wheelhouse") or "")
    if wheelhouse and os.path.isfile(os.path.join(wheelhouse, name)):
        return os.path.realpath(os.path.join(wheelhouse, name)), False
    repacked = repack_installed(source, os.path.expanduser(args["cache"]))
    if repacked is not None:
        return repacked, False
    raise WheelError(
        f"the head's agent is installed from the onprem-ray wheel: {source} is not a checkout "
        f"to build it from, and {name} is not in ray_wheelhouse_dir "
        f"({wheelhouse or 'not set'}): put it there (pip download --no-deps "
        f"onprem-ray=={args['version']}), set head_agent_wheel, or head_agent_install: false")


def agent_wheel(args: dict, search_paths: list[str]) -> dict:
    """The wheel, its hashes and the collections' directories (module docstring); WheelError
    (or OSError) when there is no wheel to install."""
    wheel, built = find_wheel(args)
    source = os.path.realpath(args["source"])
    if built or (not args.get("wheel") and os.path.isdir(os.path.join(source, CODE[0]))):
        code = content_key(source, CODE)
    else:  # a wheel from elsewhere: any change of it may change the code
        with open(wheel, "rb") as stream:
            code = hashlib.sha256(stream.read()).hexdigest()[:20]
    with open(wheel, "rb") as stream:
        sha256 = hashlib.sha256(stream.read()).hexdigest()
    collections = {name: collection_dir(name, search_paths)
                   for name in args.get("collections", [])}
    return {"wheel": wheel, "built": built, "sha256": sha256, "code": code,
            "collections": collections,
            "trees": {name: tree_hash(path) for name, path in collections.items()}}
