"""onprem.ray.files_to_write agrees with onprem.ray.node_files: a step is skipped exactly when
node_files would change nothing, judged from what onprem.ray.node_facts reports."""

from __future__ import annotations

import getpass
import grp
import os
import pwd

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.onprem.ray.plugins.filter.files_to_write import files_to_write
from ansible_collections.onprem.ray.plugins.modules.node_facts import stat_path, user_info
from ansible_collections.onprem.ray.plugins.modules.node_files import ensure

USER = getpass.getuser()
GROUP = grp.getgrgid(pwd.getpwnam(USER).pw_gid).gr_name
OTHER_GROUPS = [g.gr_name for g in grp.getgrall() if g.gr_name != GROUP]


def entry(path, **given):
    return {"path": str(path), "state": "file", "content": None, "secret_content": None,
            "owner": None, "group": None, "mode": None} | given


def agree(entries) -> list[str]:
    """files_to_write's answer, checked against what node_files (check mode) would change."""
    probed = {e["path"]: stat_path(e["path"]) for e in entries}
    answer = files_to_write(entries, probed, {USER: user_info(USER)})
    would_change = [e["path"] for e in entries if ensure(e, check=True)[0]]
    assert answer == would_change
    return answer


def written(path, content="exec ray start\n", mode=0o640):
    path.write_text(content)
    os.chmod(path, mode)
    return path


CASES = {
    "same content, owner, group and mode": (
        lambda p: entry(written(p), content="exec ray start\n", owner=USER, group=GROUP,
                        mode="0640"), False),
    "no group: the owner's primary group": (
        lambda p: entry(written(p), content="exec ray start\n", owner=USER, mode="0640"), False),
    "nothing but content given": (
        lambda p: entry(written(p), content="exec ray start\n"), False),
    "secret content, the same": (
        lambda p: entry(written(p, "s3cret"), secret_content="s3cret", mode="0640"),  # noqa: S106
        False),
    "other content": (
        lambda p: entry(written(p), content="exec ray start --head\n"), True),
    "secret content, another": (
        lambda p: entry(written(p, "s3cret"), secret_content="other"),  # noqa: S106
        True),
    "other mode": (
        lambda p: entry(written(p), content="exec ray start\n", mode="0600"), True),
    "missing": (lambda p: entry(p, content="x"), True),
    "directory as it should be": (
        lambda p: (p.mkdir(mode=0o750), os.chmod(p, 0o750),  # noqa: S103
                   entry(p, state="directory", owner=USER, mode="0750"))[-1], False),
    "directory, other mode": (
        lambda p: (p.mkdir(), os.chmod(p, 0o755),  # noqa: S103
                   entry(p, state="directory", mode="0700"))[-1], True),
    "directory missing": (lambda p: entry(p, state="directory", mode="0755"), True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_skipped_exactly_when_node_files_would_change_nothing(case, tmp_path) -> None:
    make, differs = CASES[case]
    made = make(tmp_path / "target")
    assert agree([made]) == ([made["path"]] if differs else [])


@pytest.mark.skipif(not OTHER_GROUPS, reason="needs a second group on this machine")
def test_another_group_is_a_change(tmp_path) -> None:
    made = entry(written(tmp_path / "f"), content="exec ray start\n", group=OTHER_GROUPS[0])
    assert agree([made]) == [made["path"]]


def test_an_unknown_owner_or_an_unprobed_path_counts_as_different(tmp_path) -> None:
    path = written(tmp_path / "f")
    unknown_owner = entry(path, content="exec ray start\n", owner="no-such-user-here")
    assert files_to_write([unknown_owner], {str(path): stat_path(str(path))}, {}) == [str(path)]
    assert files_to_write([entry(path, content="exec ray start\n")], {}) == [str(path)]


def test_many_entries_keep_their_order(tmp_path) -> None:
    same = entry(written(tmp_path / "a"), content="exec ray start\n")
    other = entry(written(tmp_path / "b"), content="changed\n")
    missing = entry(tmp_path / "c", content="x")
    assert agree([other, same, missing]) == [other["path"], missing["path"]]


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(AnsibleFilterError, match="not a list of node_files entries"):
        files_to_write([{"content": "no path"}], {})
