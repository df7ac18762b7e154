"""Shared pytest fixtures: real Azurite and the HTTPS emulator, started once per session."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.emulator",
]
