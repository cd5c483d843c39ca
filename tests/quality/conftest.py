"""Fixtures and ordering of the quality gates (tests/quality).

The gates run in the order of issue 2: ansible-lint, ansible-test sanity, then ansible-doc,
layout conventions and the galaxy build/install.
"""
import os

import pytest

from tests.quality.helpers import env_sh

ORDER = ("test_lint.py", "test_sanity.py", "test_docs.py", "test_changelog.py", "test_layout.py", "test_build.py")


def pytest_collection_modifyitems(session, config, items):
    """Run tests/quality files in ORDER (lint and sanity first), leaving other items in place."""
    here = os.path.dirname(os.path.abspath(__file__))
    slots = [i for i, item in enumerate(items) if os.path.dirname(str(item.path)) == here]

    def rank(item):
        name = os.path.basename(str(item.path))
        return ORDER.index(name) if name in ORDER else len(ORDER)

    ordered = sorted((items[i] for i in slots), key=rank)
    for slot, item in zip(slots, ordered):
        items[slot] = item


@pytest.fixture(scope="session")
def project_env():
    """The environment of `. scripts/env.sh`, whether pytest was started by scripts/test or not."""
    return env_sh()
