"""The agent's trees on the controller, for the head role's agent step (tasks/agent.yml).

Run on the controller as `python agent_sources.py <json arguments>`: prints each tree's source
directory and SHA-256 (the same hash as onprem.ray.node_facts' `trees` on the head), and a
staging directory of symbolic links laid out as on the head, so that one rsync copies them all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time


def tree_hash(root: str) -> str | None:
    """SHA-256 over the relative paths and contents of the files under `root`, Python caches
    left out: the same on the controller and on the node when the trees are the same."""
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        return None
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read())
            digest.update(b"\0")
    return digest.hexdigest()


def collection_dir(name: str) -> str | None:
    """The directory of collection `name` (namespace.name) on the controller: in Ansible's
    collections path, else on Python's path (collections installed with pip's `ansible`)."""
    from ansible import constants  # the controller only

    namespace, _, collection = name.partition(".")
    for root in [*constants.COLLECTIONS_PATHS, *sys.path]:
        path = os.path.join(os.path.expanduser(root), "ansible_collections", namespace, collection)
        if os.path.isdir(path):
            return os.path.realpath(path)
    return None


def agent_sources(args: dict) -> dict:
    """The trees the head's agent runs from, on the controller: its package, the parts of this
    collection, the other collections; each with its source directory (None: not found) and
    tree hash, in the order of the head role's head__agent_tree_dests. Also a staging directory
    of symbolic links laid out as on the head (args["layout"]: each tree's path there), so
    that one rsync (following the links) copies them all."""
    sources = [args["agent"]]
    sources += [os.path.join(args["collection"], part) for part in args["parts"]]
    sources += [collection_dir(name) for name in args["collections"]]
    trees = [{"src": src and os.path.realpath(src), "hash": src and tree_hash(src)}
             for src in sources]
    key = hashlib.sha256(json.dumps([args, trees], sort_keys=True).encode()).hexdigest()[:16]
    stage = os.path.join(os.path.expanduser("~/.cache/onprem-ray/agent-stage"), key)
    if all(tree["src"] for tree in trees) and not os.path.isdir(stage):
        building = f"{stage}.{os.getpid()}"
        for tree, relative in zip(trees, args["layout"], strict=True):
            link = os.path.join(building, relative)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(tree["src"], link)
        os.rename(building, stage)
        _prune_stages(os.path.dirname(stage), keep=stage)
    elif os.path.isdir(stage):
        os.utime(stage)  # in use: not pruned for another day
    return {"stage": stage, "trees": trees}


def _prune_stages(parent: str, keep: str, max_age_s: float = 86400) -> None:
    """Remove staging directories of other contents not used for a day (links only: cheap to
    make again); a run of another checkout may still be using a recent one."""
    now = time.time()
    for entry in os.scandir(parent):
        try:
            if entry.path != keep and now - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                shutil.rmtree(entry.path)
        except OSError:
            pass  # gone already, or in use: the next run tries again


if __name__ == "__main__":
    print(json.dumps(agent_sources(json.loads(sys.argv[1]))))
