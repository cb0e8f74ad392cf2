from __future__ import annotations

import pytest

from tests.core.core_support import World


@pytest.fixture
def world() -> World:
    return World()
