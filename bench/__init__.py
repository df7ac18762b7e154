"""Benchmarks for Mailbridge (issue 8): ``make bench`` runs them and rewrites docs/benchmarks.md.

Everything runs against real Azurite and the HTTPS emulator (its own process); the emulator's counters
are the source of every call count. Peers (msgraph-sdk, O365) and matplotlib live in a separate
virtualenv, ``.venv-bench`` (bench/setup.sh), and run as subprocesses.
"""
