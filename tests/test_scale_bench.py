"""The scale-out bench's own logic: the token never reaches committed results, and the
comparison table has one row per mode and session count."""

from __future__ import annotations

from typing import Any

from benchmarks.scale import compare


def by_sessions(p50: float) -> dict[str, Any]:
    stat = {"n": 4, "p50": p50, "p90": p50 + 100}
    entry = {"metrics": {"mouth_to_ear_ms": stat}, "server": {"llm_first_token_ms": stat}}
    return {"summary": {"by_sessions": {"1": entry, "2": entry}}}


def test_the_comparison_has_a_row_per_mode_and_session_count() -> None:
    meta = {
        "command": "python -m benchmarks.scale --models m --profile tiny",
        "started": "2026-01-01T00:00:00+00:00",
        "replicas": 2,
        "profile": "tiny",
        "machine": {"cpu": "a CPU", "cores": 2, "load_average": [1.0, 1.0, 1.0]},
    }
    table = compare({"in-process": by_sessions(900.0), "shared": by_sessions(800.0)}, meta)
    rows = [line for line in table.splitlines() if line.startswith("| in-") or "| shared" in line]
    assert len(rows) == 4
    assert "| shared | 2 | 4 | 800.0 ms | 900.0 ms |" in table
    assert "a CPU, 2 cores" in table
