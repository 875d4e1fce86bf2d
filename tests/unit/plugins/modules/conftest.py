"""Run the collection's modules in-process: importable as ansible_collections.onprem.ray (as
under `ansible-test units`, or through the checkout linked in .cache/collections), and called
with Ansible's own argument handling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]


def _finder_installed() -> bool:
    """ansible-test (or an earlier test) has installed Ansible's collection finder."""
    return any(type(finder).__name__ == "_AnsibleCollectionFinder" for finder in sys.meta_path)


if not _finder_installed():
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    _AnsibleCollectionFinder(paths=[str(REPO / ".cache" / "collections")])._install()


@pytest.fixture
def run_module(capsys: pytest.CaptureFixture[str]):
    """run_module(module, args, check=False, diff=False) -> (exit code, result dict)."""
    from ansible.module_utils.testing import patch_module_args

    def run(module, args: dict, check: bool = False, diff: bool = False) -> tuple[int, dict]:
        capsys.readouterr()
        internal = {"_ansible_check_mode": check, "_ansible_diff": diff}
        with patch_module_args({**args, **internal}), pytest.raises(SystemExit) as exited:
            module.main()
        out = capsys.readouterr().out
        return exited.value.code or 0, json.loads(out)

    return run
