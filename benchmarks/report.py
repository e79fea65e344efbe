"""Benchmark outputs: one JSON with every turn, a Markdown summary, PNG plots."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import models_note, one_line

SERVER_STAGES = (
    "endpoint_ms",
    "stt_done_ms",
    "llm_first_token_ms",
    "first_chunk_ms",
    "tts_first_audio_ms",
    "first_frame_sent_ms",
)
CLIENT_METRICS = (
    "mouth_to_ear_ms",
    "overhead_ms",
    "transport_ms",
    "uplink_ms",
    "downlink_ms",
    "event_downlink_ms",
)
# (label, how to get it from one turn): the critical path, increments that add up to
# mouth-to-ear. The reply is prepared in the pause (speculation), so recognition, the LLM
# and the voice run while the endpoint decides: after the decision only what was not ready
# yet is waited for.
STAGE_PARTS: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("uplink", lambda t: value(t, "uplink_ms")),
    ("endpoint", lambda t: value(t, "endpoint_ms")),
    ("reply after the endpoint", lambda t: _after_endpoint(t)),
    ("playout queue", lambda t: _playout_queue(t)),
    ("downlink", lambda t: value(t, "downlink_ms")),
)
# Each model stage's own time (per call, not on the critical path): where compute goes.
COMPUTE_PARTS: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("stt call", lambda t: value(t, "stt_ms")),
    ("llm first token after stt", lambda t: part(t, "llm_first_token_ms", "stt_done_ms")),
    ("first chunk after first token", lambda t: part(t, "first_chunk_ms", "llm_first_token_ms")),
    ("tts first chunk", lambda t: part(t, "tts_first_audio_ms", "first_chunk_ms")),
)
FLOOR_METRICS = (
    "pause_ms",
    "turn_ms",
    "endpoint_ms",
    "stt_ms",
    "llm_first_token_ms",
    "llm_first_chunk_ms",
    "tts_ms",
)


MATPLOTLIB_MISSING = (
    "matplotlib is not installed (pip install matplotlib, or the bench extra: "
    'pip install "voice-agent[bench]")'
)
PLOTS = "Plots: `cdf.png`, `stages.png`, `sessions.png`."
NO_PLOTS = f"No plots: {MATPLOTLIB_MISSING}."


def stats(values: Iterable[float | None]) -> dict[str, float | int | None]:
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if data.size == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {
        "n": int(data.size),
        "p50": round(float(p50), 1),
        "p90": round(float(p90), 1),
        "p99": round(float(p99), 1),
        "max": round(float(data.max()), 1),
        "mean": round(float(data.mean()), 1),
    }


def value(turn: dict[str, Any], key: str) -> float | None:
    found = turn.get(key)
    if found is None:
        found = turn.get("server", {}).get(key)
    return None if found is None else float(found)


def part(turn: dict[str, Any], key: str, minus: str | None) -> float | None:
    end = value(turn, key)
    if end is None:
        return None
    if minus is None:
        return end
    start = value(turn, minus)
    return None if start is None else end - start


def _after_endpoint(turn: dict[str, Any]) -> float | None:
    """Time the reply's first audio still needed once the turn was decided (0: ready)."""
    ready, decided = value(turn, "tts_first_audio_ms"), value(turn, "endpoint_ms")
    return None if ready is None or decided is None else max(0.0, ready - decided)


def _playout_queue(turn: dict[str, Any]) -> float | None:
    sent, ready = value(turn, "first_frame_sent_ms"), value(turn, "tts_first_audio_ms")
    decided = value(turn, "endpoint_ms")
    if sent is None or ready is None or decided is None:
        return None
    return sent - max(ready, decided)


def add_overhead(turns: list[dict[str, Any]], floor: dict[str, float]) -> None:
    for turn in turns:
        base = floor.get(turn["utterance"])
        m2e = turn.get("mouth_to_ear_ms")
        turn["floor_ms"] = base
        turn["overhead_ms"] = None if base is None or m2e is None else m2e - base


def stage_means(turns: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean of each increment over the turns where every one is known: they add up to
    those turns' mean mouth-to-ear."""
    rows = [[get(t) for _, get in STAGE_PARTS] for t in turns]
    complete = np.asarray([r for r in rows if None not in r], dtype=np.float64)
    if complete.size == 0:
        return {label: None for label, _ in STAGE_PARTS}
    means = complete.mean(axis=0)
    return {label: round(float(m), 1) for (label, _), m in zip(STAGE_PARTS, means, strict=True)}


def speculation(turns: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How the reply prepared in the pause fared, per measured turn: used (its audio was
    ready at the decision), late (still being made), none."""
    counts: dict[str, int] = {}
    for turn in turns:
        outcome = str(turn.get("server", {}).get("speculation"))
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def measured(turns: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in turns if t["kind"] == "turn" and t["status"] == "ok"]


def summarize(runs: list[dict[str, Any]], floor: list[dict[str, Any]] | None) -> dict[str, Any]:
    summary: dict[str, Any] = {"by_sessions": {}}
    for run in runs:
        turns = run["turns"]
        ok = measured(turns)
        barge = [t for t in turns if t["kind"] == "barge_in"]
        statuses: dict[str, int] = {}
        for t in turns:
            if t["kind"] != "warmup":
                statuses[t["status"]] = statuses.get(t["status"], 0) + 1
        entry: dict[str, Any] = {
            "turns": sum(1 for t in turns if t["kind"] == "turn"),
            "statuses": statuses,
            "split_turns": sum(1 for t in turns if t["kind"] == "turn" and t["server_turns"] > 1),
            "metrics": {k: stats(value(t, k) for t in ok) for k in CLIENT_METRICS},
            "server": {k: stats(value(t, k) for t in ok) for k in SERVER_STAGES},
            "llm_queue_wait_ms": stats(value(t, "llm_queue_wait_ms") for t in ok),
            "stages_mean": stage_means(ok),
            "compute": {label: stats(get(t) for t in ok) for label, get in COMPUTE_PARTS},
            "speculation": speculation(ok),
            "underruns": stats(t.get("underruns") for t in ok),
            "concealed_ms": stats(t.get("concealed_ms") for t in ok),
            "barge_in_stop_ms": stats(t["barge_in_stop_ms"] for t in barge if t["status"] == "ok"),
            "barge_in_detect_ms": stats(
                t.get("barge_in_detect_ms") for t in barge if t["status"] == "ok"
            ),
            "barge_ins": len(barge),
            "barge_ins_interrupted": sum(1 for t in barge if t.get("interrupted")),
        }
        summary["by_sessions"][str(run["sessions"])] = entry
    if floor is not None:
        summary["floor"] = {k: stats(f.get(k) for f in floor) for k in (*FLOOR_METRICS, "floor_ms")}
    return summary


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")


def _cell(x: float | int | None) -> str:
    return "–" if x is None else (f"{x:.0f}" if isinstance(x, float) else str(x))


def _table(rows: list[tuple[str, dict[str, Any]]], first: str = "metric") -> list[str]:
    lines = [f"| {first} | n | p50 | p90 | p99 | max |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in rows:
        cells = " | ".join(_cell(s[k]) for k in ("n", "p50", "p90", "p99", "max"))
        lines.append(f"| {name} | {cells} |")
    return lines


EXPLANATION = """\
## How to read this

- **mouth-to-ear**: from the end of the user's speech leaving the client (the last sample of
  speech in the sent WAV, placed in time by the microphone track) to the onset of the agent's
  audio pulled from the client's receive path, after aiortc's jitter buffer (short-window RMS
  above a threshold set from the silence heard while the user spoke; a frame counts from the
  moment it is pulled). A browser adds its own playout buffer (about 50 ms in Chromium) and
  the sound card on top. Only turns whose reply played in full and uninterrupted count.
- **server stages** come from the `turn_metrics` event: each is ms after the server's estimate
  of the end of speech (cumulative, not per stage). `first_frame_sent_ms` is the server's
  whole share.
- **transport** = mouth-to-ear − server `first_frame_sent_ms`: everything the server's clock
  cannot see, exactly, from relative values only (valid for a remote server too). It splits into
  - **uplink**: client send of the end of speech → the server's end-of-speech estimate, taken
    as (client receipt of the last `user_speech_end`) − its `silence_ms` − (end of speech at
    the client).
    It includes the inbound jitter buffer, decoding, the drain queue, the VAD compute and the
    data channel's delivery of the event, so it is an upper bound;
  - **downlink** = transport − uplink: server's first frame → client ear (outbound pacing, Opus,
    network, the client's jitter buffer). It absorbs the same data-channel delay with the
    opposite sign, so it is a lower bound. `event_downlink` (ear onset − client receipt of
    `agent_speech_start`) is a second lower bound by the same reasoning.
- **stage breakdown** (plot and line under each table): the mean of each increment on the
  critical path (uplink; endpoint: the server's end of speech to its decision; reply after the
  endpoint: what the reply's first audio still needed once the turn was decided, 0 when the
  reply prepared in the pause was ready; playout queue; downlink) over the turns where all
  are known; means add up, so the stack's height is those turns' mean mouth-to-ear. The
  per-call table beside it is each model's own time, which mostly overlaps the endpoint.
- **speculation**: `used`, the reply prepared in the pause had its audio ready when the turn
  was decided; `late`, it was still being prepared; `none`, it started at the decision.
- **underruns**: frames of the reply that reached the client later than a sound card playing
  20 ms every 20 ms from the reply's first frame would have wanted them; `concealed` is the
  time such a card would have had nothing to play (a thinner jitter buffer must not buy its
  milliseconds with these).
- **compute floor**: the same utterances through the VAD (20 ms blocks, the silence it must
  wait for included) to the pause that ends them, the end-of-turn model, and STT, the LLM to
  the first chunk and TTS of that chunk, each model called directly with no transport, one
  at a time. The reply is prepared from the pause on, so the floor is max(the endpoint's
  decision, the pause + STT + LLM + TTS). **overhead** = mouth-to-ear − floor of the same
  utterance.
- **barge-in stop**: the user starts talking over the agent; from the onset of the user's
  speech at the mouth to the agent's audio falling silent (400 ms of silence) at the ear.
  It includes the server's barge-in threshold (`--barge-in-ms` of voiced speech).
  **barge-in detected**: from the same onset to the client's receipt of the `interrupted`
  event (uplink, VAD, the threshold, and the event's delivery).
- Synthetic models (random weights) say nothing about reply quality; their timings are real.
"""


def markdown(result: dict[str, Any], *, plotted: bool = True) -> str:
    meta, summary = result["meta"], result["summary"]
    server = meta.get("server", {}).get("models", {})
    lines = [
        "# voice-agent mouth-to-ear benchmark",
        "",
        f"- date: {meta['started']}",
        f"- command: `{meta['command']}`",
        f"- server: {meta['url']}, profile **{server.get('profile', '?')}**, device "
        f"{json.dumps(server.get('device', {}).get('description', '?'))}",
        f"- models: {models_note(server.get('profile', '?'))}",
        f"- machine: {one_line(meta['machine'])}; load average at start "
        f"{meta['machine'].get('load_average')}",
        f"- flags: {json.dumps(meta['flags'])}",
        f"- corpus: {len(meta['corpus'])} utterances "
        f"({sum(1 for u in meta['corpus'] if u['has_pause'])} with a mid-sentence pause)",
    ]
    if server.get("synthetic"):
        lines.append(f"- **{server.get('warning', 'synthetic models')}**")
    lines += ["", "## Mouth-to-ear by concurrent sessions (ms)", ""]
    by = summary["by_sessions"]
    lines += _table([(n, s["metrics"]["mouth_to_ear_ms"]) for n, s in by.items()], "sessions")
    for n, s in by.items():
        lines += ["", f"## {n} session(s)", ""]
        lines.append(
            f"{s['turns']} measured turns; outcomes {json.dumps(s['statuses'])}; "
            f"{s['split_turns']} utterance(s) split by the server's endpointer; "
            f"{s['barge_ins_interrupted']}/{s['barge_ins']} barge-ins interrupted the agent."
        )
        lines.append("")
        rows = [(k.removesuffix("_ms").replace("_", " "), s["metrics"][k]) for k in CLIENT_METRICS]
        rows += [(f"server {k.removesuffix('_ms')}", s["server"][k]) for k in SERVER_STAGES]
        rows.append(("server llm queue wait", s["llm_queue_wait_ms"]))
        rows.append(("barge-in stop", s["barge_in_stop_ms"]))
        rows.append(("barge-in detected", s["barge_in_detect_ms"]))
        lines += _table(rows)
        parts = s["stages_mean"]
        lines += [
            "",
            "Mean of each stage on the critical path (ms; they add up to the mean mouth-to-ear "
            "of the same turns): " + ", ".join(f"{label} {_cell(v)}" for label, v in parts.items()),
            "",
            "Each model stage's own time (ms, per call; the reply is prepared in the pause, so "
            "much of it overlaps the endpoint's wait):",
            "",
        ]
        lines += _table(list(s["compute"].items()), "stage")
        played = s["underruns"]
        lines += [
            "",
            f"Speculation (the reply prepared in the pause), per measured turn: "
            f"{json.dumps(s['speculation'])}. Playout at the client: "
            f"{_cell(played['mean'])} underruns per reply on average (max {_cell(played['max'])}), "
            f"{_cell(s['concealed_ms']['mean'])} ms concealed on average "
            f"(max {_cell(s['concealed_ms']['max'])}).",
        ]
    if "floor" in summary:
        lines += ["", "## Compute floor (ms, models called directly)", ""]
        lines += _table([(k.removesuffix("_ms"), v) for k, v in summary["floor"].items()])
    else:
        lines += ["", "No compute floor (run with --models and --profile to measure it)."]
    lines += ["", PLOTS if plotted else NO_PLOTS, "", EXPLANATION]
    return "\n".join(lines)


def write_all(result: dict[str, Any], out: Path) -> list[Path]:
    from benchmarks.report_plots import plots, pyplot  # they draw what this module sums up

    out.mkdir(parents=True, exist_ok=True)
    floor = result.get("floor")
    if floor:
        from benchmarks.floor import FloorResult, floor_by_utterance

        by_utt = floor_by_utterance([FloorResult(**f) for f in floor])
        for run in result["runs"]:
            add_overhead(run["turns"], by_utt)
    result["summary"] = summarize(result["runs"], floor)
    plt = pyplot()
    write_json(out / "results.json", result)
    (out / "summary.md").write_text(markdown(result, plotted=plt is not None) + "\n", "utf-8")
    written = [out / "results.json", out / "summary.md"]
    if plt is None:
        print(f"no plots: {MATPLOTLIB_MISSING}", file=sys.stderr)
        return written
    return [*written, *plots(result, out, plt)]


__all__ = ["markdown", "stats", "summarize", "write_all", "write_json"]
