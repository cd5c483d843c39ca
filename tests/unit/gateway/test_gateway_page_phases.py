"""The gateway page lists the engine's switch phases in the engine's own order (readiness)."""
import re

from ansible_collections.homelab.gpu.gateway import page_assets
from ansible_collections.homelab.gpu.plugins.module_utils import readiness


def js_list(name):
    found = re.search(r"var %s = \[([^\]]*)\];" % name, page_assets.SCRIPT)
    assert found, name
    return tuple(re.findall(r"'([a-z]+)'", found.group(1)))


def test_the_page_orders_phases_as_the_engine_does():
    assert js_list("PHASES") == readiness.PHASES
    assert js_list("RESIDENT_PHASES") == readiness.RESIDENT_PHASES
    assert js_list("ORDER") == readiness.ALL_PHASES + ("rollback",)
