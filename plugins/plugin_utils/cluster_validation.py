# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Validation of a cluster description (Ray's key names) into the model.

Every key of Ray's cluster YAML is either honoured or refused by name with a reason: nothing
is silently ignored. Every problem names the file, the key path and the bad value, and all
problems of a file are reported at once.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import stat
from typing import Any

from ansible_collections.onprem.ray.plugins.plugin_utils.addresses import (
    DNS_NAME_RE,
    address_key,
    expand_address,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    IMPLICIT_NODE_TYPE,
    MISSING,
    NO_VALUE,
    Auth,
    Cluster,
    ClusterConfigError,
    NodeType,
    Problem,
    group_suffix,
)

# ---------------------------------------------------------------- what is honoured, what not

_CLOUD = "cloud providers only: on-prem machines are listed in head_ip and worker_ips"
_TOP_HONOURED = frozenset({
    "cluster_name", "min_workers", "max_workers", "upscaling_speed", "idle_timeout_minutes",
    "provider", "auth", "head_ip", "worker_ips", "available_node_types", "head_node_type",
    "file_mounts", "cluster_synced_files", "file_mounts_sync_continuously", "rsync_exclude",
    "rsync_filter", "initialization_commands", "setup_commands", "head_setup_commands",
    "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
    "metadata", "docker", "head_node", "worker_nodes",
})
_TOP_REFUSED = {
    "no_restart": "set by `ray up --no-restart`, not by the file; `up` restarts Ray only "
                  "when a setting of Ray changed",
    "initial_workers": "no longer part of Ray's cluster format; use min_workers",
    "autoscaling_mode": "no longer part of Ray's cluster format; the agent scales on Ray's "
                        "pending demand",
    "target_utilization_fraction": "no longer part of Ray's cluster format; use "
                                   "upscaling_speed",
}
_PROVIDER_HONOURED = frozenset({
    "type", "head_ip", "worker_ips", "external_head_ip", "use_internal_ips",
})
_PROVIDER_REFUSED = {
    "coordinator_address": "the coordinator server is not used: the agent hands out the "
                           "machines of this file's pool to this one cluster",
    "cache_stopped_nodes": "cloud providers only: on-prem machines are never terminated, "
                           "only Ray on them is stopped",
    "disable_node_updaters": "KubeRay only: the collection's playbooks always set machines up",
    "module": "external node providers only (provider.type: external)",
    "region": _CLOUD,
    "availability_zone": _CLOUD,
    "subnet_id": _CLOUD,
    "security_group": "AWS only",
    "cloudwatch": "AWS only",
    "project_id": "GCP only",
    "gcp_credentials": "GCP only",
    "location": "Azure only",
    "resource_group": "Azure only",
    "tags": "Azure only",
    "subscription_id": "Azure only",
    "msi_identity_id": "Azure only",
    "msi_identity_principal_id": "Azure only",
    "namespace": "Kubernetes only",
    "autoscaler_service_account": "Kubernetes only",
    "autoscaler_role": "Kubernetes only",
    "autoscaler_role_binding": "Kubernetes only",
}
_AUTH_HONOURED = frozenset({
    "ssh_user", "ssh_private_key", "ssh_proxy_command", "ssh_known_hosts_file",
})
_AUTH_REFUSED = {
    "ssh_public_key": "cloud providers install it on new instances; on-prem machines must "
                      "already accept auth.ssh_private_key",
    "ssh_proxy_use_node_id": "node IDs are cloud instance IDs; on-prem machines are reached "
                             "by address",
}
_NODE_TYPE_HONOURED = frozenset({
    "worker_ips", "resources", "labels", "min_workers", "max_workers",
    "initialization_commands", "worker_setup_commands", "node_config", "docker",
    "idle_timeout_s",
})
_NODE_TYPE_REFUSED = {
    "priority": "node type priorities are not supported yet: the agent picks the node type "
                "that fits the pending demand",
}
# Accepted only while no image is set: Ray itself runs no container then.
_DOCKER_KEYS = frozenset({
    "image", "container_name", "pull_before_run", "run_options", "head_image",
    "head_run_options", "worker_image", "worker_run_options",
    "disable_automatic_runtime_detection", "disable_shm_size_detection", "use_podman",
})
_NODE_TYPE_DOCKER_KEYS = frozenset({"pull_before_run", "worker_image", "worker_run_options"})
_DOCKER_REASON = ("running Ray in containers is not supported yet; remove the docker section "
                  "to run Ray on the machines themselves")

# Ray's stock start commands mean "start Ray the standard way", which the roles' systemd unit
# does; `--autoscaling-config` would also start Ray's own autoscaler beside the agent.
_STOCK_HEAD_START = (
    ("ray stop", "ulimit -c unlimited && ray start --head --port=6379 "
                 "--autoscaling-config=~/ray_bootstrap_config.yaml"),
    ("ray stop", "ulimit -c unlimited; ray start --head --port=6379 "
                 "--autoscaling-config=~/ray_bootstrap_config.yaml"),
)
_STOCK_WORKER_START = (("ray stop", "ray start --address=$RAY_HEAD_IP:6379"),)

# ---------------------------------------------------------------- names that may reach a shell

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_RESOURCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}")
# Ray's label syntax (ray/_private/label_utils.py), itself Kubernetes'.
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
# Paths that end up in ssh's own option parser, which splits on blanks and quotes.
_SSH_PATH_RE = re.compile(r"[A-Za-z0-9_./~+@%:,=-]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def validate(data: Any, source: str = "<cluster>", *, check_files: bool = True,
             base_dir: str | None = None) -> Cluster:
    """Validate a cluster dict (Ray's key names) and return the normalised model.

    `source` names the file in messages; relative paths are resolved against `base_dir`
    (default: the source's directory). `check_files=False` skips the checks of local files
    (key, known hosts), for a copy of the file read on another machine.
    Raises ClusterConfigError with every problem found.
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source))
    checker = _Validator(source, base_dir, check_files)
    model = checker.cluster(data)
    if checker.problems or model is None:
        raise ClusterConfigError(source, checker.problems or [
            Problem("", data, "not a cluster description")])
    return model


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


class _Validator:
    """Walks the data once, collecting every problem instead of stopping at the first."""

    def __init__(self, source: str, base_dir: str, check_files: bool) -> None:
        self.source = source
        self.base_dir = base_dir
        self.check_files = check_files
        self.problems: list[Problem] = []

    def bad(self, path: str, value: Any, reason: str) -> None:
        self.problems.append(Problem(path, value, reason))

    # ------------------------------------------------------------ shapes

    def mapping(self, value: Any, path: str, *, honoured: frozenset[str],
                refused: dict[str, str] | None = None) -> dict | None:
        """A mapping whose keys are all honoured; refused and unknown ones are reported."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(path, value, "must be a mapping")
            return None
        refused = refused or {}
        for key in value:
            if not isinstance(key, str):
                self.bad(_child(path, str(key)), key, "keys must be strings")
            elif key in refused:
                self.bad(_child(path, key), value[key], f"not supported: {refused[key]}")
            elif key not in honoured:
                close = difflib.get_close_matches(key, sorted(honoured), n=1, cutoff=0.6)
                hint = f"; did you mean {_child(path, close[0])}?" if close else ""
                self.bad(_child(path, key), value[key], f"unknown key{hint}")
        return {key: item for key, item in value.items()
                if isinstance(key, str) and key in honoured}

    def whole(self, data: dict, key: str, path: str, default: int | None) -> int | None:
        value = data.get(key, MISSING)
        if value is MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.bad(_child(path, key), value, "must be a whole number >= 0")
            return None
        return value

    def number(self, data: dict, key: str, path: str,
               default: float | None) -> float | None:
        value = data.get(key, MISSING)
        if value is MISSING or value is None:
            return default
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value < 0):
            self.bad(_child(path, key), value, "must be a number >= 0")
            return None
        return value

    def flag(self, data: dict, key: str, path: str) -> bool:
        value = data.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.bad(_child(path, key), value, "must be true or false")
            return False
        return value

    def name(self, value: Any, path: str, pattern: re.Pattern, what: str) -> str | None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.bad(path, value, f"not a valid {what} (allowed: {_describe(pattern)})")
            return None
        return value

    def strings(self, data: dict, key: str, path: str, *, what: str = "string",
                allow_newlines: bool = False) -> tuple[str, ...] | None:
        """A list of non-empty strings; None when the key is absent or wrong."""
        value = data.get(key, MISSING)
        path = _child(path, key)
        if value is MISSING:
            return None
        if value is None:
            return ()
        if not isinstance(value, list):
            self.bad(path, value, f"must be a list of {what}s")
            return None
        items = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.bad(_child(path, index), item, f"must be a non-empty {what}")
            elif "\x00" in item or (not allow_newlines and _CONTROL_RE.search(item)):
                self.bad(_child(path, index), item, "contains control characters")
            else:
                items.append(item)
        return tuple(items) if len(items) == len(value) else None

    def commands(self, data: dict, key: str, path: str) -> tuple[str, ...] | None:
        return self.strings(data, key, path, what="shell command", allow_newlines=True)

    def local_path(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value or _CONTROL_RE.search(value):
            self.bad(path, value, "must be a path without control characters")
            return None
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    def remote_path(self, value: Any, path: str) -> str | None:
        if (not isinstance(value, str) or _CONTROL_RE.search(value)
                or not (value.startswith("/") or value == "~" or value.startswith("~/"))):
            self.bad(path, value, "must be an absolute path on the machines (/... or ~/...)")
            return None
        return value

    # ------------------------------------------------------------ the cluster

    def cluster(self, data: Any) -> Cluster | None:
        if data is None:
            self.bad("", NO_VALUE, "the file is empty")
            return None
        top = self.mapping(data, "", honoured=_TOP_HONOURED, refused=_TOP_REFUSED)
        if top is None:
            return None
        self.legacy_sections(top)
        self.docker(top.get("docker"), "docker", _DOCKER_KEYS)
        if self.flag(top, "file_mounts_sync_continuously", ""):
            self.bad("file_mounts_sync_continuously", True, "not supported: files are synced "
                     "when up runs, not continuously; re-run up to sync them")
        metadata = top.get("metadata") or {}
        if not isinstance(metadata, dict):
            self.bad("metadata", metadata, "must be a mapping")

        name = top.get("cluster_name", "default")
        name = self.name(name, "cluster_name", _NAME_RE, "cluster name")
        provider = self.mapping(top.get("provider"), "provider",
                                honoured=_PROVIDER_HONOURED, refused=_PROVIDER_REFUSED) or {}
        if provider.get("type", "local") != "local":
            self.bad("provider.type", provider["type"], "not supported: only the local "
                     "provider (a fixed list of machines) can be honoured on-prem")
        auth = self.auth(top.get("auth", MISSING))
        head_raw, head_path = self.aliased(top, provider, "head_ip")
        workers_raw, workers_path = self.aliased(top, provider, "worker_ips")
        head = self.head(head_raw, head_path, workers_raw)
        head_ssh = self.external_head(provider, head)

        limits = {key: self.whole(top, key, "", None) for key in ("min_workers", "max_workers")}
        upscaling = self.number(top, "upscaling_speed", "", 1.0)
        idle = self.number(top, "idle_timeout_minutes", "", 5.0)
        globals_ = {key: self.commands(top, key, "") for key in (
            "initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")}
        for key, stock in (("head_start_ray_commands", _STOCK_HEAD_START),
                           ("worker_start_ray_commands", _STOCK_WORKER_START)):
            globals_[key] = self.start_commands(globals_[key], key, stock)
        mounts = self.file_mounts(top.get("file_mounts"))
        synced = self.strings(top, "cluster_synced_files", "", what="path")
        for index, item in enumerate(synced or ()):
            self.remote_path(item, f"cluster_synced_files[{index}]")
        excludes = self.strings(top, "rsync_exclude", "", what="pattern")
        filters = self.strings(top, "rsync_filter", "", what="file name")

        seen: dict[str, str] = {}
        if head is not None:
            seen[address_key(head)] = head_path
        if "available_node_types" in top:
            types, head_type = self.node_types(top, workers_raw, workers_path, seen)
        else:
            types, head_type = self.implicit_type(top, workers_raw, workers_path, seen, limits,
                                                  head_given=head is not None)
        if head_raw in (MISSING, None) and not any(t and t.ips for t in types):
            self.bad(head_path, MISSING, "the pool is empty: give provider.head_ip and "
                     "provider.worker_ips")
        min_workers, max_workers = self.global_limits(types, limits)

        if self.problems or None in (name, auth, head, head_type, upscaling, idle,
                                     mounts, min_workers, max_workers):
            return None
        return Cluster(
            source=os.path.abspath(self.source),
            cluster_name=name, head_ip=head, head_node_type=head_type,
            node_types=tuple(types), auth=auth,
            min_workers=min_workers, max_workers=max_workers,
            upscaling_speed=upscaling, idle_timeout_minutes=idle,
            head_ssh_address=head_ssh or head,
            file_mounts=mounts, cluster_synced_files=synced or (),
            rsync_exclude=excludes or (), rsync_filter=filters or (),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
            **{key: value or () for key, value in globals_.items()},
        )

    def legacy_sections(self, top: dict) -> None:
        for key in ("head_node", "worker_nodes"):
            value = top.get(key)
            if value not in (None, {}):
                self.bad(key, value, "not supported: Ray's legacy cloud node settings, which "
                         "Ray refuses for on-prem clusters too; use available_node_types")

    def docker(self, value: Any, path: str, keys: frozenset[str]) -> None:
        docker = self.mapping(value, path, honoured=keys)
        for key in ("image", "head_image", "worker_image"):
            if docker and docker.get(key):
                self.bad(_child(path, key), docker[key], f"not supported: {_DOCKER_REASON}")

    def aliased(self, top: dict, provider: dict, key: str) -> tuple[Any, str]:
        """Ray's provider.<key>, also accepted at the top level."""
        if key in top and key in provider:
            self.bad(key, top[key], f"given twice, here and as provider.{key}; keep one")
        if key in top:
            return top[key], key
        return provider.get(key, MISSING), f"provider.{key}"

    def head(self, value: Any, path: str, workers: Any) -> str | None:
        if value is MISSING or value is None:
            if workers not in (MISSING, None, []):
                self.bad(path, MISSING, "the head's address is required")
            return None
        if not isinstance(value, str):
            self.bad(path, value, "must be one address (an IP or a hostname)")
            return None
        try:
            addresses = expand_address(value)
        except ValueError as err:
            self.bad(path, value, str(err))
            return None
        if len(addresses) != 1 or "/" in value:
            self.bad(path, value, "must be one address, not a range or a block")
            return None
        return addresses[0]

    def external_head(self, provider: dict, head: str | None) -> str | None:
        value = provider.get("external_head_ip")
        use_internal = self.flag(provider, "use_internal_ips", "provider")
        if value is None:
            return head
        external = self.head(value, "provider.external_head_ip", None)
        return head if use_internal else external

    def addresses(self, value: Any, path: str, seen: dict[str, str]) -> list[str] | None:
        """Expand a worker_ips list; duplicates (the head included) are refused."""
        if value is MISSING or value is None:
            return []
        if not isinstance(value, list):
            self.bad(path, value, "must be a list of addresses, ranges or CIDR blocks")
            return None
        result: list[str] = []
        for index, entry in enumerate(value):
            where = _child(path, index)
            if not isinstance(entry, str):
                self.bad(where, entry, "must be a string: an address, a hostname, a range "
                         "or a CIDR block")
                continue
            try:
                expanded = expand_address(entry)
            except ValueError as err:
                self.bad(where, entry, str(err))
                continue
            clashes = []
            for address in expanded:
                key = address_key(address)
                if key in seen:
                    clashes.append((address, seen[key]))
                else:
                    seen[key] = where
                    result.append(address)
            if clashes:
                self.bad(where, entry, _clash(entry, clashes))
        return result

    # ------------------------------------------------------------ node types

    def implicit_type(self, top: dict, workers: Any, path: str, seen: dict[str, str],
                      limits: dict, head_given: bool,
                      ) -> tuple[list[NodeType | None], str | None]:
        """Ray's local provider: one node type; min and max default to every worker (Ray)."""
        if workers is MISSING and head_given:  # else: the pool is empty, said once
            self.bad(path, MISSING, "list the worker machines (worker_ips: [] for a "
                     "head-only cluster)")
        head_type = top.get("head_node_type", IMPLICIT_NODE_TYPE)
        if head_type != IMPLICIT_NODE_TYPE:
            self.bad("head_node_type", head_type, "names no node type: there is no "
                     "available_node_types")
        ips = self.addresses(workers, path, seen)
        if ips is None:
            return [None], None
        count = len(ips)
        high = count if limits["max_workers"] is None else limits["max_workers"]
        # Ray starts every worker unless told otherwise; max_workers takes precedence.
        low = min(count, high) if limits["min_workers"] is None else limits["min_workers"]
        limits["min_workers"], limits["max_workers"] = low, high
        node_type = NodeType(IMPLICIT_NODE_TYPE, tuple(ips), {}, {}, min(low, high),
                             min(high, count))
        return [node_type], IMPLICIT_NODE_TYPE

    def node_types(self, top: dict, provider_workers: Any, provider_path: str,
                   seen: dict[str, str]) -> tuple[list[NodeType | None], str | None]:
        raw = top["available_node_types"]
        if not isinstance(raw, dict) or not raw:
            self.bad("available_node_types", raw, "must be a mapping of node type names to "
                     "their settings")
            return [None], None
        head_type = top.get("head_node_type", MISSING)
        if head_type is MISSING:
            self.bad("head_node_type", MISSING, "required with available_node_types: name "
                     "the head's node type")
            head_type = None
        elif not isinstance(head_type, str) or head_type not in raw:
            close = difflib.get_close_matches(str(head_type), [str(k) for k in raw], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            self.bad("head_node_type", head_type, f"is not one of available_node_types{hint}")
            head_type = None
        # Machines listed under provider.worker_ips are workers of the head's type (as in
        # Ray, where they all belong to the one local type).
        extra = self.addresses(provider_workers, provider_path, seen) or []
        types: list[NodeType | None] = []
        groups: dict[str, str] = {}
        for type_name, spec in raw.items():
            path = _child("available_node_types", str(type_name))
            if self.name(type_name, path, _NAME_RE, "node type name") is None:
                types.append(None)
                continue
            group = group_suffix(type_name)
            if group in groups:
                self.bad(path, type_name, f"makes the same group name as node type "
                         f"{groups[group]!r} (ray_node_type_{group})")
            groups[group] = type_name
            own_extra = extra if type_name == head_type else []
            types.append(self.node_type(type_name, spec, path, seen, own_extra,
                                        is_head=type_name == head_type))
        return types, head_type

    def node_type(self, name: str, spec: Any, path: str, seen: dict[str, str],
                  extra: list[str], is_head: bool) -> NodeType | None:
        spec = self.mapping(spec, path, honoured=_NODE_TYPE_HONOURED,
                            refused=_NODE_TYPE_REFUSED)
        if spec is None:
            return None
        if spec.get("node_config") not in (None, {}):
            self.bad(_child(path, "node_config"), spec["node_config"], "not supported: cloud "
                     "instance settings; describe the machines with resources and labels")
        self.docker(spec.get("docker"), _child(path, "docker"), _NODE_TYPE_DOCKER_KEYS)
        own = self.addresses(spec.get("worker_ips", MISSING), _child(path, "worker_ips"), seen)
        resources = self.resources(spec.get("resources"), _child(path, "resources"))
        labels = self.labels(spec.get("labels"), _child(path, "labels"))
        low = self.whole(spec, "min_workers", path, 0)
        # Ray's per-type idle timeout in seconds; empty: the cluster's idle_timeout_minutes.
        timeout = self.number(spec, "idle_timeout_s", path, None)
        if timeout is None and spec.get("idle_timeout_s") is not None:
            return None  # reported
        if own is None or None in (resources, labels, low):
            return None
        ips = tuple(extra + own)
        if not ips and not is_head and spec.get("worker_ips") in (None, []):
            self.bad(_child(path, "worker_ips"), spec.get("worker_ips", MISSING),
                     "this node type has no machines and is not the head's type; list its "
                     "worker_ips or remove it")
        high = self.whole(spec, "max_workers", path, len(ips))
        if high is None:
            return None
        if low > high:
            self.bad(_child(path, "min_workers"), low, f"is above max_workers ({high})")
        if high > len(ips):
            self.bad(_child(path, "max_workers"), high, f"is above the {len(ips)} worker "
                     "machines of this node type")
        return NodeType(
            name, ips, resources, labels, low, high,
            self.commands(spec, "initialization_commands", path),
            self.commands(spec, "worker_setup_commands", path), timeout)

    def resources(self, value: Any, path: str) -> dict[str, float] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(path, value, "must be a mapping of resource names to amounts")
            return None
        result = {}
        for key, amount in value.items():
            where = _child(path, str(key))
            if self.name(key, where, _RESOURCE_RE, "resource name") is None:
                continue
            if key.startswith("node:"):
                self.bad(where, key, "node:<ip> resources are Ray's own; pick another name")
            elif key in _INTEGER_RESOURCES and (isinstance(amount, bool)
                                                or not isinstance(amount, int) or amount < 0):
                self.bad(where, amount, "must be a whole number >= 0")
            elif (isinstance(amount, bool) or not isinstance(amount, int | float)
                  or not math.isfinite(amount) or amount < 0):
                self.bad(where, amount, "must be a number >= 0")
            elif amount > 1 and amount != int(amount):
                self.bad(where, amount, "Ray takes fractions only below 1; above, whole numbers")
            else:
                result[key] = amount
        return result if len(result) == len(value) else None

    def labels(self, value: Any, path: str) -> dict[str, str] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(path, value, "must be a mapping of label names to values")
            return None
        result = {}
        for key, text in value.items():
            where = _child(path, str(key))
            if not isinstance(key, str) or not _label_key_ok(key):
                self.bad(where, key, "not a valid label key: [prefix/]name, the name up to 63 "
                         "characters of [A-Za-z0-9_.-] starting and ending alphanumeric")
            elif key.startswith("ray.io/"):
                self.bad(where, key, "the ray.io/ prefix is reserved for labels Ray sets")
            elif not isinstance(text, str) or (text and not _LABEL_RE.fullmatch(text)):
                self.bad(where, text, "not a valid label value: up to 63 characters of "
                         "[A-Za-z0-9_.-] starting and ending alphanumeric")
            else:
                result[key] = text
        return result if len(result) == len(value) else None

    def global_limits(self, types: list[NodeType | None],
                      limits: dict) -> tuple[int | None, int | None]:
        if None in types:
            return None, None  # already reported; limits cannot be checked against it
        # A None limit is absent, or bad and already reported: either way, its default.
        pool = sum(len(t.ips) for t in types if t)
        low = 0 if limits["min_workers"] is None else limits["min_workers"]
        high = pool if limits["max_workers"] is None else limits["max_workers"]
        floor = sum(t.min_workers for t in types if t)
        if low > high:
            self.bad("min_workers", low, f"is above max_workers ({high})")
        if high > pool:
            self.bad("max_workers", high, f"is above the {pool} worker machines of the pool")
        if floor > high:
            self.bad("max_workers", high, f"is below the node types' min_workers, which add "
                     f"up to {floor}")
        return low, high

    # ------------------------------------------------------------ auth and files

    def auth(self, value: Any) -> Auth | None:
        if value is MISSING:
            self.bad("auth", MISSING, "auth.ssh_user is required")
            return None
        auth = self.mapping(value, "auth", honoured=_AUTH_HONOURED, refused=_AUTH_REFUSED)
        if auth is None:
            return None
        if "ssh_user" not in auth:
            self.bad("auth.ssh_user", MISSING, "the login user on the machines is required")
            user = None
        else:
            user = self.name(auth["ssh_user"], "auth.ssh_user", _USER_RE, "user name")
        key = self.ssh_file(auth.get("ssh_private_key"), "auth.ssh_private_key", private=True)
        known = self.ssh_file(auth.get("ssh_known_hosts_file"), "auth.ssh_known_hosts_file",
                              private=False)
        proxy = auth.get("ssh_proxy_command")
        if proxy is not None and (not isinstance(proxy, str) or not proxy.strip()
                                  or _CONTROL_RE.search(proxy)):
            self.bad("auth.ssh_proxy_command", proxy, "must be one line of shell command")
            proxy = None
        if user is None:
            return None
        return Auth(user, key, known, proxy)

    def ssh_file(self, value: Any, path: str, private: bool) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _SSH_PATH_RE.fullmatch(value):
            self.bad(path, value, "must be a path of [A-Za-z0-9_./~+@%:,=-] (ssh splits "
                     "option values on blanks and quotes)")
            return None
        resolved = self.local_path(value, path)
        if not self.check_files or resolved is None:
            return resolved
        try:
            info = os.stat(resolved)
        except OSError as err:
            self.bad(path, value, f"cannot be read: {err.strerror} ({resolved})")
            return None
        if not stat.S_ISREG(info.st_mode):
            self.bad(path, value, f"not a regular file ({resolved})")
        elif private and info.st_mode & 0o077:
            self.bad(path, value, f"permissions {stat.S_IMODE(info.st_mode):04o} let others "
                     f"read the key; run chmod 600 {shlex.quote(resolved)}")
        elif not os.access(resolved, os.R_OK):
            self.bad(path, value, f"not readable by this user ({resolved})")
        return resolved

    def file_mounts(self, value: Any) -> dict[str, str] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad("file_mounts", value, "must be a mapping of remote path to local path")
            return None
        result = {}
        for remote, local in value.items():
            where = _child("file_mounts", str(remote))
            remote_ok = self.remote_path(remote, where)
            local_ok = self.local_path(local, where)
            if remote_ok is not None and local_ok is not None:
                result[remote_ok] = local_ok
        return result if len(result) == len(value) else None

    def start_commands(self, commands: tuple[str, ...] | None, key: str,
                       stock: tuple[tuple[str, ...], ...]) -> tuple[str, ...] | None:
        if not commands:
            return commands
        if tuple(" ".join(command.split()) for command in commands) in stock:
            return ()  # Ray's defaults: the roles' unit starts Ray the same way
        for index, command in enumerate(commands):
            if "--autoscaling-config" in command:
                self.bad(f"{key}[{index}]", command, "not supported: --autoscaling-config "
                         "starts Ray's own autoscaler beside the onprem.ray agent; drop it")
        return commands


def _clash(entry: str, clashes: list[tuple[str, str]]) -> str:
    """One line for every address of an entry already listed elsewhere (first one named)."""
    address, other = clashes[0]
    origin = "" if address == entry else f" (from {entry})"
    what = (f"is the head ({other}); the head is never a worker"
            if other.endswith("head_ip") else f"is also listed at {other}")
    more = f", and {len(clashes) - 1} more of its addresses" if len(clashes) > 1 else ""
    return f"{address}{origin} {what}{more}"


def _label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not DNS_NAME_RE.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_RE.fullmatch(name))


def _describe(pattern: re.Pattern) -> str:
    return {
        _NAME_RE: "letters, digits, _ . - starting with a letter or digit, up to 63",
        _USER_RE: "letters, digits, _ . - starting with a letter or _, up to 32",
        _RESOURCE_RE: "letters, digits, _ . : / - starting with a letter or _",
    }.get(pattern, pattern.pattern)
