"""Shared pytest fixtures: real Azurite and the HTTPS emulator, started once per session."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.azurite_oauth",
    "tests.fixtures.emulator",
    "tests.fixtures.app",
]


@pytest.fixture(scope="session")
def app_functions() -> dict:
    """function_app's functions by name (``get_functions()`` may be called only once per app)."""
    from function_app import app

    return {fn.get_function_name(): fn for fn in app.get_functions()}
