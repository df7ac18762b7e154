"""bench/report.py merge: a partial run rewrites only its sections, dates them, and keeps the others."""

from __future__ import annotations

from bench.report import merge

OLD = "# B\n\nhead\n\n**Partial run** (y): B6 z\n\n## B1: a\n\nold1\n## B2: b\n\nold2\n"
FRESH = "# B\n\nfresh head\n\n## B2: b\n\nnew2\n## B7: c\n\nnew7\n"


def test_a_partial_run_replaces_and_dates_only_its_sections():
    out = merge(OLD, FRESH, "2026-12-01 15:00 UTC")
    assert "old1" in out and "old2" not in out and "new2" in out and out.index("## B2") < out.index("## B7")
    assert out.count("_Measured in a partial run, 2026-12-01 15:00 UTC._") == 2
    assert "**Partial run** (y)" not in out and out.count("**Partial runs**") == 1
    again = merge(out, FRESH, "2026-12-01 16:00 UTC")
    assert "15:00" not in again and again.count("_Measured") == 2 and again.count("**Partial runs**") == 1
