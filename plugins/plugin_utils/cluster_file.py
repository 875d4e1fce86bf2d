# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Reading a cluster file: an inventory source (inline, or naming a Ray YAML) or a Ray YAML."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_model import (
    NO_VALUE,
    Cluster,
    ClusterConfigError,
    Problem,
)
from ansible_collections.onprem.ray.plugins.plugin_utils.cluster_validation import validate

PLUGIN_NAMES = ("onprem.ray.cluster",)
# The keys of an inventory source that configure the plugin rather than describe the cluster.
INVENTORY_KEYS = frozenset({
    "plugin", "ray_cluster_yaml", "state_store",
    "strict", "compose", "groups", "keyed_groups", "use_extra_vars", "leading_separator",
})
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def read_yaml(path: str) -> Any:
    """The YAML document in `path`; malformed YAML and duplicate keys are refused."""
    import yaml  # only here: the model and validate() need no PyYAML

    class _StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # unhashable: the base constructor reports it
            if key in seen:
                mark = key_node.start_mark
                raise ClusterConfigError(path, [Problem(
                    f"line {mark.line + 1} column {mark.column + 1}", key,
                    f"duplicate key (first at line {seen[key].line + 1}); "
                    "YAML would keep only the last one")])
            seen[key] = key_node.start_mark
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except OSError as err:
        raise ClusterConfigError(path, [Problem("", NO_VALUE, f"cannot be read: "
                                                f"{err.strerror}")]) from None
    except UnicodeDecodeError as err:
        raise ClusterConfigError(path, [Problem("", NO_VALUE, f"not UTF-8 text: {err}")]) \
            from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        context = getattr(err, "context", None)
        reason = f"malformed YAML: {problem}" + (f" ({context})" if context else "")
        raise ClusterConfigError(path, [Problem(where, NO_VALUE, reason)]) from None


def load_cluster_file(path: str, *, check_files: bool = True) -> Cluster:
    """Load an inventory source (`plugin: onprem.ray.cluster`) or a plain Ray cluster YAML."""
    path = os.path.abspath(path)
    data = read_yaml(path)
    if isinstance(data, dict) and "plugin" in data:
        return load_inventory_source(path, data, check_files=check_files)
    return validate(data, source=path, check_files=check_files)


def load_inventory_source(path: str, data: dict, *, check_files: bool = True) -> Cluster:
    """The cluster of an inventory source already read: inline, or in its ray_cluster_yaml."""
    path = os.path.abspath(path)
    if not isinstance(data, dict):
        raise ClusterConfigError(path, [Problem("", data, "must be a mapping")])
    if data.get("plugin") not in PLUGIN_NAMES:
        raise ClusterConfigError(path, [Problem("plugin", data.get("plugin"),
                                                f"must be {PLUGIN_NAMES[0]}")])
    cluster = {key: value for key, value in data.items() if key not in INVENTORY_KEYS}
    ray_yaml = data.get("ray_cluster_yaml")
    if ray_yaml is None:
        return validate(cluster, source=path, check_files=check_files)
    if not isinstance(ray_yaml, str) or not ray_yaml or _CONTROL_RE.search(ray_yaml):
        raise ClusterConfigError(path, [Problem("ray_cluster_yaml", ray_yaml,
                                                "must be the path of a Ray cluster YAML")])
    if cluster:
        raise ClusterConfigError(path, [Problem(
            key, value, "ray_cluster_yaml is set: the cluster is described in that file "
            "alone, so keys here would be a second, drifting copy")
            for key, value in cluster.items()])
    ray_path = os.path.join(os.path.dirname(path), os.path.expanduser(ray_yaml))
    ray_path = os.path.abspath(ray_path)
    if not os.path.isfile(ray_path):
        raise ClusterConfigError(path, [Problem("ray_cluster_yaml", ray_yaml,
                                                f"no such file: {ray_path}")])
    model = validate(read_yaml(ray_path), source=ray_path, check_files=check_files)
    return dataclasses.replace(model, source=path, ray_cluster_yaml=ray_path)
