"""Label what happened in one case (an `Observation` as a dict, as results.json keeps it),
and sum the labels up per category against the targets.

Time is ms after the case's first clip began leaving the client (mouth and ear on one clock).
Per case:

- a user turn (`complete`, `incomplete`): **false end of turn** when the agent's voice
  reaches the ear before the utterance is over (from its first word to `EARLY_MS` after its
  last), or the server announces it (`agent_speech_start`) then; **missed end of turn** when
  within `ANSWER_WITHIN_MS` of the end of the utterance neither its transcript (sent when the
  turn is decided) nor the agent's voice came; a **late reply** when the turn was decided but
  the voice took longer than that; the end-of-turn delay is the server's `endpoint_ms` of the
  answer, mouth-to-ear and mouth-to-transcript the client's view of it.
- a sound over the agent (`noise`, `echo`, `backchannel`): **false barge-in** when the agent is
  stopped for good (`interrupted` without `false_interruption`), or falls silent without
  resuming and without finishing; **paused** when it stopped and resumed (`false_interruption`,
  `resumed`), with the gaps that left in its voice at the ear (the longest one counts).
- an interruption: **missed barge-in** unless the agent is stopped; **stop time** from the
  onset of the user's voice at the mouth to the agent's voice falling silent at the ear for
  good (`STOP_GAP_MS` of silence; the end of its last sound before the `interrupted` event,
  so a pause that resumed does not count as the stop).
- words: the user's final transcripts (the last one of each turn: a reply cancelled because
  the user went on is transcribed again with the same turn) against the script, fillers
  ("um", "uh") aside; **words lost** are the script's words deleted from them beyond those
  Whisper deletes when it transcribes the same audio directly (its own errors); words heard
  as other words are counted apart (`missing`), with Whisper's own count beside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.report import stats
from benchmarks.runner import OFFSET_SETTINGS
from benchmarks.wer import word_errors

ANSWER_WITHIN_MS = 6_000.0
EARLY_MS = 100.0
"""Agent voice this soon after the end of speech cannot answer all of it (the pause alone is
160 ms): it answers a part."""
STOP_GAP_MS = OFFSET_SETTINGS.hangover_ms
STALL_MS = 1_500.0
"""Silence at the end of a case, the reply neither finished nor interrupted: the agent stopped."""
FILLERS = ("um", "uh", "er", "erm", "hmm", "mm")
_FILLER = re.compile(r"\b(?:" + "|".join(FILLERS) + r")\b[,.]?", re.IGNORECASE)

TARGETS = {
    "false_end_of_turn": ("incomplete", "<=", 0.05),
    "end_of_turn_delay_p50_ms": ("complete", "<=", 250.0),
    "false_barge_in": ("noise, echo, backchannel", "<=", 0.02),
    "missed_barge_in": ("interruption", "<=", 0.02),
    "words_lost": ("incomplete, interruption", "<=", 0.0),
}

Event = dict[str, Any]


def strip_fillers(text: str) -> str:
    return _FILLER.sub(" ", text)


def final_transcripts(events: Sequence[Event], after_turn: int = 0) -> list[str]:
    """The last transcript of each user turn after `after_turn`, in turn order."""
    last: dict[int, str] = {}
    for event in events:
        if event.get("type") == "transcript" and int(event.get("turn", 0)) > after_turn:
            last[int(event["turn"])] = str(event.get("text", ""))
    return [last[turn] for turn in sorted(last)]


def word_score(script: str, transcripts: Sequence[str], direct: str | None) -> dict[str, Any]:
    """The script's words against the transcripts: `deleted` (absent), `missing` (absent or
    heard as another word), and, against Whisper on the same audio directly, `lost`: the
    words deleted beyond those it deletes by itself. A word heard wrong is recognition's
    error; a word deleted is where a cut or a dropped stretch of audio shows."""
    reference = strip_fillers(script)
    heard = word_errors([reference], [strip_fillers(" ".join(transcripts))])
    out: dict[str, Any] = {
        "script_words": heard.reference_words,
        "deleted": heard.deletions,
        "missing": heard.deletions + heard.substitutions,
        "wer": round(heard.wer, 4),
    }
    if direct is not None:
        alone = word_errors([reference], [strip_fillers(direct)])
        out["deleted_direct"] = alone.deletions
        out["missing_direct"] = alone.deletions + alone.substitutions
        out["wer_direct"] = round(alone.wer, 4)
        out["lost"] = max(0, heard.deletions - alone.deletions)
    return out


def merge(segments: Iterable[Sequence[float]], gap_ms: float) -> list[tuple[float, float]]:
    """Segments closer than `gap_ms` joined into one."""
    merged: list[tuple[float, float]] = []
    for start, end in segments:
        if merged and start - merged[-1][1] < gap_ms:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _first(
    events: Sequence[Event], kind: str, after: float, turn: int | None = None
) -> Event | None:
    return next(
        (
            e
            for e in events
            if e.get("type") == kind and e["t_ms"] >= after and (turn is None or e["turn"] == turn)
        ),
        None,
    )


def score_turn(obs: dict[str, Any]) -> dict[str, Any]:
    """A user turn (complete or incomplete)."""
    start, end = obs["speech_ms"]
    events, ear = obs["events"], obs["ear_ms"]
    early = [s for s, _ in ear if start <= s < end + EARLY_MS]
    announced = [e for e in events if e["type"] == "agent_speech_start" and e["t_ms"] < end]
    answer = next((s for s, _ in ear if s >= end + EARLY_MS), None)
    metrics = next(
        (
            e
            for e in events
            if e["type"] == "turn_metrics" and not e.get("interrupted") and e["t_ms"] >= end
        ),
        None,
    )
    turn = None if metrics is None else int(metrics["turn"])
    transcript = _first(events, "transcript", end, turn)
    decided = _first(events, "transcript", end)
    in_time = [
        t for t in (answer, decided and decided["t_ms"]) if t and t - end <= ANSWER_WITHIN_MS
    ]
    out: dict[str, Any] = {
        "false_end_of_turn": bool(early or announced),
        "early_voice_ms": early[0] if early else None,
        "missed_end_of_turn": not in_time,
        "late_reply": bool(in_time) and (answer is None or answer - end > ANSWER_WITHIN_MS),
        "mouth_to_ear_ms": None if answer is None else round(answer - end, 1),
        "mouth_to_transcript_ms": None
        if transcript is None
        else round(transcript["t_ms"] - end, 1),
        "shown_early": any(e["type"] == "transcript" and e["t_ms"] < end for e in events),
        "turn_pending": [e.get("reason") for e in events if e["type"] == "turn_pending"],
    }
    for key in ("endpoint_ms", "endpoint", "turn_probability", "speculation"):
        out[key] = None if metrics is None else metrics.get(key)
    out["words"] = word_score(
        obs["case"]["script"], final_transcripts(events), obs["direct_transcript"]
    )
    return out


def score_over(obs: dict[str, Any]) -> dict[str, Any]:
    """A sound or an interruption over the agent's reply."""
    end = obs["speech_ms"][1]
    events, ear = obs["events"], obs["ear_ms"]
    started = _first(events, "agent_speech_start", end)
    turn = int(started["turn"]) if started else -1
    agent_onset = next((s for s, _ in ear if s >= end + EARLY_MS), None)
    stimulus = obs["stimulus_ms"]
    onset = stimulus[0] if stimulus is not None else agent_onset
    if onset is None:
        return {"outcome": "no_reply"}
    verdicts = [
        e for e in events if e["type"] == "interrupted" and e["turn"] == turn and e["t_ms"] >= onset
    ]
    stopped = next((v for v in verdicts if not v.get("false_interruption")), None)
    resumptions = [v for v in verdicts if v.get("resumed")]
    resumed = resumptions[0] if resumptions else None
    gaps = [g for v in resumptions if (g := _gap_before(ear, v["t_ms"], onset)) is not None]
    reply_end = _first(events, "agent_speech_end", onset, turn) or _first(
        events, "turn_metrics", onset, turn
    )
    last_sound = max((e for _, e in ear), default=onset)
    ended = max([e["t_ms"] for e in events] + [last_sound, obs.get("ended_ms") or 0.0])
    stalled = stopped is None and reply_end is None and ended - last_sound >= STALL_MS
    outcome = (
        "stopped" if stopped else "stalled" if stalled else "resumed" if resumed else "ignored"
    )
    out: dict[str, Any] = {
        "outcome": outcome,
        "paused": resumed is not None,
        "pauses": len(resumptions),
        "pause_gaps_ms": gaps,
        "pause_at_ear_ms": max(gaps, default=None),
        "reply_finished": reply_end is not None and stopped is None,
        "answered_sound": bool(final_transcripts(events, after_turn=turn))
        and obs["case"]["category"] != "interruption",
    }
    if obs["case"]["category"] == "interruption":
        voice = merge(ear, STOP_GAP_MS)
        out["agent_silent_at_onset"] = not any(s <= onset < e for s, e in voice)
        out["stop_ms"] = None
        if stopped is not None and not out["agent_silent_at_onset"]:
            # The last of the reply's sound: the agent may have paused at the onset, resumed
            # (the start of the interruption sounded like a backchannel) and stopped later.
            last = max(e for s, e in voice if s < stopped["t_ms"])
            out["stop_ms"] = round(last - onset, 1)
        out["detect_ms"] = None if stopped is None else round(stopped["t_ms"] - onset, 1)
        out["words"] = word_score(
            obs["case"]["script"],
            final_transcripts(events, after_turn=turn),
            obs["direct_transcript"],
        )
    return out


def _gap_before(ear: Sequence[Sequence[float]], resumed_ms: float, onset: float) -> float | None:
    """The silence in the agent's voice that the resumption at `resumed_ms` ended: from the
    last sound before it to the first after it."""
    after = next((i for i, (s, _) in enumerate(ear) if s >= resumed_ms - 50.0), None)
    if after is None or after == 0 or ear[after - 1][1] < onset - 200.0:
        return None
    return round(ear[after][0] - ear[after - 1][1], 1)


def score(obs: dict[str, Any]) -> dict[str, Any]:
    if obs["status"] != "ok":
        return {"valid": False}
    if obs["case"]["category"] in ("complete", "incomplete"):
        return {"valid": True, **score_turn(obs)}
    result = score_over(obs)
    return {"valid": result["outcome"] != "no_reply", **result}


def _rate(flags: Sequence[bool]) -> dict[str, Any]:
    return {
        "n": len(flags),
        "count": sum(flags),
        "rate": round(sum(flags) / len(flags), 4) if flags else None,
    }


def _words(scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    words = [s["words"] for s in scored if "words" in s]
    total = sum(w["script_words"] for w in words)
    return {
        "cases": len(words),
        "script_words": total,
        "deleted": sum(w["deleted"] for w in words),
        "deleted_direct": sum(w.get("deleted_direct", 0) for w in words),
        "missing": sum(w["missing"] for w in words),
        "missing_direct": sum(w.get("missing_direct", 0) for w in words),
        "lost": sum(w.get("lost", 0) for w in words),
        "cases_with_lost_words": sum(1 for w in words if w.get("lost", 0) > 0),
    }


def summarize(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per category (and per kind within it): the figures of the report."""
    by: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        by.setdefault(case["case"]["category"], []).append(case)
    out: dict[str, Any] = {}
    for category, members in by.items():
        valid = [c["score"] for c in members if c["score"]["valid"]]
        entry: dict[str, Any] = {
            "cases": len(members),
            "valid": len(valid),
            "statuses": _count(c["status"] for c in members),
        }
        if category in ("complete", "incomplete"):
            entry |= {
                "false_end_of_turn": _rate([s["false_end_of_turn"] for s in valid]),
                "missed_end_of_turn": _rate([s["missed_end_of_turn"] for s in valid]),
                "late_reply": _rate([s["late_reply"] for s in valid]),
                "shown_early": _rate([s["shown_early"] for s in valid]),
                "endpoint_ms": stats(s["endpoint_ms"] for s in valid),
                "mouth_to_ear_ms": stats(s["mouth_to_ear_ms"] for s in valid),
                "mouth_to_transcript_ms": stats(s["mouth_to_transcript_ms"] for s in valid),
                "endpoints": _count(s["endpoint"] or "no decision" for s in valid),
                "words": _words(valid),
            }
        else:
            entry |= {
                "outcomes": _count(s["outcome"] for s in valid),
                "stopped": _rate([s["outcome"] in ("stopped", "stalled") for s in valid]),
                "paused": _rate([s["paused"] for s in valid]),
                "pause_at_ear_ms": stats(s["pause_at_ear_ms"] for s in valid),
                "answered_sound": _rate([s["answered_sound"] for s in valid]),
            }
            if category == "interruption":
                entry |= {
                    "stop_ms": stats(s["stop_ms"] for s in valid),
                    "detect_ms": stats(s["detect_ms"] for s in valid),
                    "words": _words(valid),
                }
        kinds: dict[str, list[dict[str, Any]]] = {}
        for c in members:
            if c["score"]["valid"]:
                kinds.setdefault(c["case"]["kind"], []).append(c["score"])
        entry["by_kind"] = {kind: _kind_line(category, s) for kind, s in sorted(kinds.items())}
        out[category] = entry
    return out


def _kind_line(category: str, scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if category in ("complete", "incomplete"):
        return {
            "n": len(scored),
            "false_end_of_turn": sum(s["false_end_of_turn"] for s in scored),
            "missed_end_of_turn": sum(s["missed_end_of_turn"] for s in scored),
            "endpoint_ms_p50": stats(s["endpoint_ms"] for s in scored)["p50"],
            "words_lost": _words(scored)["lost"],
        }
    return {"n": len(scored), "outcomes": _count(s["outcome"] for s in scored)}


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def against_targets(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the figure it is judged on and whether it is met (None: no data)."""
    sounds = [summary[c] for c in ("noise", "echo", "backchannel") if c in summary]
    stopped = sum(s["stopped"]["count"] for s in sounds)
    heard = sum(s["stopped"]["n"] for s in sounds)
    words = [summary[c]["words"] for c in ("incomplete", "interruption") if c in summary]
    figures: dict[str, float | None] = {
        "false_end_of_turn": summary.get("incomplete", {}).get("false_end_of_turn", {}).get("rate"),
        "end_of_turn_delay_p50_ms": summary.get("complete", {}).get("endpoint_ms", {}).get("p50"),
        "false_barge_in": round(stopped / heard, 4) if heard else None,
        "missed_barge_in": _missed(summary.get("interruption")),
        "words_lost": float(sum(w["lost"] for w in words)) if words else None,
    }
    out = {}
    for name, (scope, _, limit) in TARGETS.items():
        figure = figures[name]
        out[name] = {"scope": scope, "target": limit, "figure": figure,
                     "met": None if figure is None else figure <= limit}  # fmt: skip
    return out


def _missed(entry: dict[str, Any] | None) -> float | None:
    if not entry or not entry["valid"]:
        return None
    stopped = int(entry["outcomes"].get("stopped", 0))
    return round(1.0 - stopped / int(entry["valid"]), 4)


__all__ = [
    "ANSWER_WITHIN_MS",
    "TARGETS",
    "against_targets",
    "final_transcripts",
    "merge",
    "score",
    "strip_fillers",
    "summarize",
    "word_score",
]
