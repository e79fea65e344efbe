"""The Markdown summary of a load run (benchmarks.load)."""

from __future__ import annotations

from typing import Any

from benchmarks import machine


def _lag_cells(lag: dict[str, Any]) -> str:
    if not lag.get("samples"):
        return "| - | - | - | - |"
    top = lag["max_at_most_ms"]
    return (
        f"| {lag['p50_ms']} ms | {lag['p99_ms']} ms | {lag['share_over_50ms'] * 100:.3f} % "
        f"| {'≤ ' + str(top) + ' ms' if top is not None else '> 2500 ms'} |"
    )


def _times_row(name: str, t: dict[str, float]) -> str:
    return (
        f"| {name} | {t['n']} | {t['median']} ms | {t['p90']} ms | {t['p99']} ms | {t['max']} ms |"
    )


def markdown(data: dict[str, Any]) -> str:
    meta, load = data["meta"], data["load"]
    idle, cap = load["idle"], load["over_cap"]
    cost = load["cpu_per_listening_session"]
    lines = [
        "# Load: event-loop lag, the cost of a listening session, refusals beyond the cap",
        "",
        f"Machine: {machine.one_line(meta['machine'])}; load average at the start "
        f"{meta['machine'].get('load_average')}. {meta['note']}",
        f"Command: `{meta['command']}`. Models: profile **{meta['profile']}** "
        f"({machine.models_note(meta['profile'])}). The server runs as its own process "
        f"(`voice-agent serve`, --max-sessions {load['settings']['cap']}); the clients run in "
        "the benchmark's process on the same cores.",
        "",
        "## Event-loop lag",
        "",
        "From the server's `voice_agent_event_loop_lag_seconds` histogram (a task sleeping "
        "10 ms records how late it wakes), scraped before and after each stretch; "
        "percentiles interpolated inside buckets of 1 to 10 ms below 50 ms.",
        "",
        "| load | lag p50 | lag p99 | share > 50 ms | max | server CPU (s/s) "
        "| mouth-to-ear p50 / p90 | turns |",
        "|---|---|---|---|---|---|---|---|",
        f"| idle {_lag_cells(idle['lag'])} {idle['cpu_per_s']['median']} | - | - |",
    ]
    for r in load["listening"]:
        lines.append(
            f"| {r['sessions']} listening {_lag_cells(r['lag'])} {r['cpu_per_s']['median']} "
            "| - | - |"
        )
    for r in load["talking"]:
        m2e = r["mouth_to_ear_ms"]
        m2e_cell = f"{m2e['median']} / {m2e['p90']} ms" if m2e else "-"
        turns = ", ".join(f"{k} {v}" for k, v in sorted(r["turn_status"].items()))
        lines.append(
            f"| {r['sessions']} talking {_lag_cells(r['lag'])} {r['cpu_per_s']} "
            f"| {m2e_cell} | {turns} |"
        )
    lines.append(f"| {load['settings']['cap']} listening + offers over the cap "
                 f"{_lag_cells(cap['lag'])} - | - | - |")  # fmt: skip
    lines += [
        "",
        "## CPU of one listening session",
        "",
        "A client connected with an open, silent microphone (50 Opus frames a second in, the "
        "agent's silence out, VAD on every block). Server CPU seconds per wall second over "
        f"{load['settings']['windows']} windows of {load['settings']['window_s']} s each "
        "(median, p90), minus idle, divided by the sessions.",
        "",
        "| sessions | server CPU (s/s), median | p90 | per session, minus idle |",
        "|---|---|---|---|",
        f"| 0 (idle) | {idle['cpu_per_s']['median']} | {idle['cpu_per_s']['p90']} | - |",
    ]
    for r in load["listening"]:
        per = cost["by_sessions"][str(r["sessions"])]
        lines.append(
            f"| {r['sessions']} | {r['cpu_per_s']['median']} | {r['cpu_per_s']['p90']} "
            f"| {per} ({per * 100:.1f} % of a core) |"
        )
    lines += [
        "",
        f"Least-squares slope through idle and every K: **{cost['slope']} CPU s/s per "
        f"listening session ({cost['slope'] * 100:.1f} % of a core)**.",
        "",
        "## Offers beyond the session cap",
        "",
        f"With {load['settings']['cap']} sessions connected, offers one after another and "
        "in a concurrent burst, timed at the client from request to the full response.",
        "",
        "| offers | n | median | p90 | p99 | max |",
        "|---|---|---|---|---|---|",
        _times_row("one by one", cap["one_by_one_ms"]),
        _times_row("concurrent burst", cap["burst_ms"]),
        "",
        f"Statuses: {cap['statuses']}; every 503 has Retry-After: "
        f"{cap['all_have_retry_after']}; once the sessions closed, a new offer was answered: "
        f"{cap['accepted_after_sessions_closed']}.",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["markdown"]
