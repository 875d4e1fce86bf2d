"""Unit tests import the collection as Ansible does: through Ansible's collection loader.

`ansible-test units` installs the loader itself; run by plain pytest from the checkout, the
loader is given the collections path `scripts/setup-host` links the checkout into, before any
test module imports `ansible_collections.onprem.ray`.
"""

from __future__ import annotations

from pathlib import Path

COLLECTION = Path(__file__).resolve().parents[2]

try:
    from ansible.utils.collection_loader import AnsibleCollectionConfig
    LOADER_MISSING = AnsibleCollectionConfig.collection_finder is None
except ImportError:  # ansible-test's units of modules: only module_utils, its loader in place
    LOADER_MISSING = False

if LOADER_MISSING:
    from ansible.plugins.loader import init_plugin_loader

    if COLLECTION.parent.parent.name == "ansible_collections":  # a copy, as ansible-test makes
        init_plugin_loader([str(COLLECTION.parents[2])])
    else:
        init_plugin_loader([str(COLLECTION / ".cache" / "collections")])
