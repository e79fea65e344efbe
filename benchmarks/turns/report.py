"""The turn-taking benchmark's outputs: results.json (every case: its label, what the client
saw, its score), summary.md (per category against the targets, and every failed case with
its events) and turns.png (needs matplotlib, like benchmarks/report.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import models_note
from benchmarks.machine import one_line as machine_line
from benchmarks.report import MATPLOTLIB_MISSING, write_json
from benchmarks.report_plots import pyplot
from benchmarks.turns.corpus import Case
from benchmarks.turns.run import Observation
from benchmarks.turns.score import against_targets, score, summarize

TURN_CATEGORIES = ("complete", "incomplete")
SOUND_CATEGORIES = ("noise", "echo", "backchannel", "interruption")
QUIET_EVENTS = frozenset({"agent_text"})
"""Left out of the failure listings: one per spoken chunk, they say nothing of turn-taking."""


def one_line(case: Case, observation: Observation) -> str:
    """Progress: the case and what happened."""
    scored = score(observation.as_dict())
    if not scored["valid"]:
        return f"{case.name}: {observation.status}"
    if "outcome" in scored:
        extra = f" stop {scored['stop_ms']} ms" if scored.get("stop_ms") is not None else ""
        return f"{case.name}: {scored['outcome']}{extra}"
    flags = [k for k in ("false_end_of_turn", "missed_end_of_turn") if scored[k]]
    return f"{case.name}: {', '.join(flags) or 'ok'}, endpoint {scored['endpoint_ms']} ms"


def failed(case: dict[str, Any]) -> str | None:
    """Why this case counts against a target, or None."""
    s, category = case["score"], case["case"]["category"]
    if not s["valid"]:
        return None
    reasons = []
    if s.get("false_end_of_turn"):
        reasons.append(f"false end of turn (agent voice at {s['early_voice_ms']} ms)")
    if s.get("missed_end_of_turn"):
        reasons.append("missed end of turn")
    if s.get("late_reply"):
        reasons.append(f"late reply (voice at {s['mouth_to_ear_ms']} ms after the end of speech)")
    if category in ("noise", "echo", "backchannel") and s["outcome"] in ("stopped", "stalled"):
        reasons.append(f"false barge-in ({s['outcome']})")
    if category == "interruption" and s["outcome"] != "stopped":
        reasons.append(f"missed barge-in ({s['outcome']})")
    if s.get("answered_sound"):
        reasons.append("the sound became a user turn")
    lost = s.get("words", {}).get("lost", 0)
    if lost:
        reasons.append(f"{lost} word(s) lost")
    return "; ".join(reasons) or None


def _cell(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.0f}"
    return str(x)


def _as_ms(x: float) -> str:
    return f"{x:.0f} ms"


def _as_share(x: float) -> str:
    return f"{x:.1%}"


def _rate(r: dict[str, Any]) -> str:
    return "–" if r["rate"] is None else f"{r['count']}/{r['n']} ({r['rate']:.0%})"


def _pp(s: dict[str, Any]) -> str:
    return f"{_cell(s['p50'])} / {_cell(s['p90'])}"


def _words(w: dict[str, Any]) -> str:
    return (
        f"{w['lost']} lost of {w['script_words']} ({w['deleted']} deleted, "
        f"{w['deleted_direct']} by Whisper alone; {w['missing']} missing or wrong, "
        f"{w['missing_direct']} by Whisper alone)"
    )


def markdown(result: dict[str, Any], *, plotted: bool) -> str:
    meta, summary, targets = result["meta"], result["summary"], result["targets"]
    models = meta.get("server", {}).get("models", {})
    lines = [
        "# Turn-taking benchmark",
        "",
        f"- date: {meta['started']}; {meta['seconds']} s for {len(result['cases'])} cases",
        f"- command: `{meta['command']}`",
        f"- server: profile **{models.get('profile', '?')}**, end of turn "
        f"`{json.dumps(models.get('turn', {}).get('endpoint'))}`; serve flags "
        f"`{' '.join(meta['server_args'] or [])}`",
        f"- models: {models_note(models.get('profile', '?'))}",
        f"- machine: {machine_line(meta['machine'])}; load average at start "
        f"{meta['machine'].get('load_average_at_start')}",
        f"- cases per category: {meta['cases_per_category']}, seed {meta['seed']}. {meta['note']}",
        *(
            [f"- scored again on {meta['rescored']} (`--rescore`) from the observations of the run"]
            if meta.get("rescored")
            else []
        ),
        "",
        "## Targets",
        "",
        "| target | judged on | figure | target | met |",
        "|---|---|---:|---:|---|",
    ]
    for name, t in targets.items():
        met = {None: "no data", True: "yes", False: "**no**"}[t["met"]]
        show = _as_ms if name.endswith("_ms") else _as_share if t["target"] else _cell
        figure = "–" if t["figure"] is None else show(t["figure"])
        label = name.removesuffix("_ms").replace("_", " ")
        lines.append(f"| {label} | {t['scope']} | {figure} | {show(t['target'])} | {met} |")
    lines += [
        "",
        "## User turns",
        "",
        "| category | cases (valid) | false end of turn | missed end of turn | late reply "
        "| reply shown early "
        "| end-of-turn delay p50 / p90 (server) | mouth to transcript p50 / p90 "
        "| mouth to ear p50 / p90 | endpoints | words |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for category in TURN_CATEGORIES:
        if (s := summary.get(category)) is None:
            continue
        lines.append(
            f"| {category} | {s['cases']} ({s['valid']}) | {_rate(s['false_end_of_turn'])} "
            f"| {_rate(s['missed_end_of_turn'])} | {_rate(s['late_reply'])} "
            f"| {_rate(s['shown_early'])} "
            f"| {_pp(s['endpoint_ms'])} | {_pp(s['mouth_to_transcript_ms'])} "
            f"| {_pp(s['mouth_to_ear_ms'])} | {json.dumps(s['endpoints'])} | {_words(s['words'])} |"
        )
    lines += [
        "",
        "## Sounds over the agent",
        "",
        "| category | cases (valid) | agent stopped | paused and resumed | pause at the ear "
        "p50 / p90 | became a user turn | stop time p50 / p90 | detected p50 / p90 | words |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for category in SOUND_CATEGORIES:
        if (s := summary.get(category)) is None:
            continue
        barge = category == "interruption"
        lines.append(
            f"| {category} | {s['cases']} ({s['valid']}) | {_rate(s['stopped'])} "
            f"| {_rate(s['paused'])} | {_pp(s['pause_at_ear_ms'])} | {_rate(s['answered_sound'])} "
            f"| {_pp(s['stop_ms']) if barge else '–'} | {_pp(s['detect_ms']) if barge else '–'} "
            f"| {_words(s['words']) if barge else '–'} |"
        )
    lines += [
        "",
        "## By kind",
        "",
        "| category | kind | cases | what happened |",
        "|---|---|---:|---|",
    ]
    for category, s in summary.items():
        for kind, k in s["by_kind"].items():
            detail = {key: v for key, v in k.items() if key != "n"}
            lines.append(f"| {category} | {kind} | {k['n']} | {json.dumps(detail)} |")
    lines += ["", "## Cases that missed", ""]
    misses = [(c, why) for c in result["cases"] if (why := failed(c))]
    invalid = [c for c in result["cases"] if not c["score"]["valid"]]
    if not misses:
        lines.append("None.")
    for case, why in misses:
        lines.append(
            f"- **{case['case']['name']}** ({case['case']['speaker']}): {why}. {_story(case)}"
        )
    if invalid:
        lines += ["", "Not scored (the case could not be played as meant):", ""]
        lines += [
            f"- {c['case']['name']}: {c['status']} after {c['attempts']} attempt(s)"
            for c in invalid
        ]
    lines += [
        "",
        "Plot: `turns.png`." if plotted else f"No plot: {MATPLOTLIB_MISSING}.",
        "",
        EXPLANATION,
    ]
    return "\n".join(lines) + "\n"


def _story(case: dict[str, Any]) -> str:
    """The case's script, what the server made of it, and its events in order."""
    c = case["case"]
    said = f"Said: {c['text']!r}" + (f", then {c['stimulus']!r}" if c.get("stimulus") else "")
    if c.get("pauses"):
        said += f" (pause {c['pause_ms']} ms at {c['pauses'][0][0] * 1000:.0f} ms)"
    speech = case["speech_ms"]
    stimulus = case.get("stimulus_ms")
    timing = f"speech {speech[0]:.0f}-{speech[1]:.0f} ms" + (
        f", stimulus {stimulus[0]:.0f}-{stimulus[1]:.0f} ms" if stimulus else ""
    )
    events = ", ".join(_event(e) for e in case["events"] if e["type"] not in QUIET_EVENTS)
    ear = ", ".join(f"{s:.0f}-{e:.0f}" for s, e in case["ear_ms"][:12])
    return f"{said}; {timing}; agent voice at the ear {ear or 'never'}; events: {events}."


def _event(e: dict[str, Any]) -> str:
    detail = ""
    if e["type"] == "transcript":
        detail = f" {e.get('text')!r}"
    elif e["type"] == "interrupted":
        detail = (
            " (false, resumed)" if e.get("false_interruption") else f" (heard {e.get('heard')!r})"
        )
    elif e["type"] == "turn_pending":
        detail = f" ({e.get('reason')}, p={e.get('probability')})"
    elif e["type"] == "turn_metrics":
        detail = f" ({e.get('endpoint')} {e.get('endpoint_ms')} ms)"
    return f"{e['t_ms']:.0f} {e['type']}#{e.get('turn')}{detail}"


EXPLANATION = """\
## How to read this

Each case runs on a fresh session of the real server (real models, real WebRTC through the
bench client), one at a time. Times are on the client's clock: the user's speech at the
mouth (the clip's samples as they leave the client), the agent's voice at the ear (energy in
the audio pulled from the client's receive path).

- **false end of turn**: the agent's voice reached the ear (or `agent_speech_start` arrived)
  before the user's utterance was over: in one of its pauses, or during its rest. **reply
  shown early**: a `transcript` arrived then (a reply was released, even if not heard).
- **missed end of turn**: within 6 s after the end of the utterance, neither its transcript
  (the server sends it when it decides the turn is over) nor the agent's voice. **late
  reply**: the turn was decided in time, but the voice came more than 6 s after the end of
  speech (a stall in the reply, not in the turn-taking).
- **end-of-turn delay**: the server's `endpoint_ms` (its estimate of the end of speech to its
  decision); **mouth to transcript**: end of speech at the mouth to the `transcript` event at
  the client (the uplink, the decision, the transcription when it was not ready, the data
  channel); **mouth to ear**: to the first sound of the answer.
- **agent stopped** (noise, echo, backchannel: a false barge-in): `interrupted` without
  `false_interruption`, or the agent's voice stopped for good without its reply finishing.
  **paused and resumed**: the server paused the voice and went on (`false_interruption`,
  `resumed`); **pause at the ear**: the silence that left in the agent's voice (the longest
  one of the case when it paused more than once).
  **became a user turn**: the sound was transcribed as a user turn of its own.
- **interruption**: missed unless the agent was stopped. **stop time**: from the onset of the
  user's voice at the mouth to the agent's voice falling silent at the ear (400 ms of
  silence); **detected**: to the `interrupted` event at the client.
- **words**: the user's final transcripts (the last one of each turn) against the script,
  fillers aside: script words *deleted* (absent from the transcripts), the same for Whisper
  on the same audio directly (*by Whisper alone*), and *lost*: how many more were deleted
  through the pipeline than directly, case by case (the turn-taking's share: a cut, a
  dropped stretch of audio; the target is 0). *Missing or wrong* adds the words heard as
  other words (recognition errors, which the codec path changes from run to run).
"""


def plot(result: dict[str, Any], out: Path, plt: Any) -> Path:
    summary, targets = result["summary"], result["targets"]
    fig, (bars, cdfs) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, values, limits = [], [], []
    for category, key, limit in (
        ("complete", "false_end_of_turn", targets["false_end_of_turn"]["target"]),
        ("incomplete", "false_end_of_turn", targets["false_end_of_turn"]["target"]),
        ("noise", "stopped", targets["false_barge_in"]["target"]),
        ("echo", "stopped", targets["false_barge_in"]["target"]),
        ("backchannel", "stopped", targets["false_barge_in"]["target"]),
    ):
        if category in summary and summary[category][key]["rate"] is not None:
            labels.append(f"{category}\n{'false EOT' if key == 'false_end_of_turn' else key}")
            values.append(summary[category][key]["rate"])
            limits.append(limit)
    if "interruption" in summary and (missed := targets["missed_barge_in"]["figure"]) is not None:
        labels.append("interruption\nmissed")
        values.append(missed)
        limits.append(targets["missed_barge_in"]["target"])
    xs = np.arange(len(labels))
    bars.bar(xs, values, color="tab:red")
    bars.scatter(xs, limits, marker="_", s=900, color="black", label="target", zorder=3)
    bars.set(xticks=xs, ylabel="share of cases", title="Failures per category")
    bars.set_xticklabels(labels, fontsize=8)
    bars.legend()
    for label, rows in (
        ("end-of-turn delay (server), complete", _values(result, "complete", "endpoint_ms")),
        ("mouth to ear, complete", _values(result, "complete", "mouth_to_ear_ms")),
        ("stop time, interruption", _values(result, "interruption", "stop_ms")),
        ("pause at the ear, sounds", _values(result, "noise,echo,backchannel", "pause_at_ear_ms")),
    ):
        if rows:
            data = np.sort(rows)
            cdfs.step(data, np.arange(1, data.size + 1) / data.size, where="post", label=label)
    cdfs.axvline(targets["end_of_turn_delay_p50_ms"]["target"], color="grey", linestyle=":")
    cdfs.set(xlabel="ms", ylabel="fraction of cases", title="Delays")
    cdfs.grid(alpha=0.3)
    if cdfs.get_legend_handles_labels()[0]:
        cdfs.legend(fontsize=8)
    fig.tight_layout()
    path = out / "turns.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _values(result: dict[str, Any], categories: str, key: str) -> list[float]:
    wanted = categories.split(",")
    return [
        float(c["score"][key])
        for c in result["cases"]
        if c["case"]["category"] in wanted and c["score"].get(key) is not None
    ]


def write_all(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    result["summary"] = summarize(result["cases"])
    result["targets"] = against_targets(result["summary"])
    plt = pyplot()
    write_json(out / "results.json", result)
    (out / "summary.md").write_text(markdown(result, plotted=plt is not None), "utf-8")
    written = [out / "results.json", out / "summary.md"]
    if plt is None:
        print(f"no plot: {MATPLOTLIB_MISSING}", file=sys.stderr)
        return written
    return [*written, plot(result, out, plt)]


def rescore(cases: Sequence[dict[str, Any]]) -> None:
    """Score the cases of a results.json again (after a change to the scoring)."""
    for case in cases:
        case["score"] = score(case)


__all__ = ["failed", "markdown", "one_line", "plot", "rescore", "write_all"]
