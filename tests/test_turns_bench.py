"""The turn-taking benchmark (benchmarks/turns): its noises, corpus, echo microphone and
scoring, and a few cases of every category through the real `small` models over real WebRTC
(the figures themselves live in benchmarks/results/turns)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.audio import OUTPUT_RATE
from benchmarks.onset import speech_bounds
from benchmarks.peer import MIC_FRAME, ReceivedAudio
from benchmarks.turns import noises
from benchmarks.turns.__main__ import bench, main, parse_args
from benchmarks.turns.corpus import CATEGORIES, Voices, sound
from benchmarks.turns.echo import EchoMicrophone
from benchmarks.turns.report import failed, write_all
from benchmarks.turns.score import against_targets, final_transcripts, merge, score, summarize


@pytest.mark.parametrize("name", [*noises.NOISES, "mm_hm"])
def test_noises_are_seeded_sounds_of_their_length(name: str) -> None:
    make = noises.mm_hm if name == "mm_hm" else noises.NOISES[name]
    first, again = make(np.random.default_rng(7)), make(np.random.default_rng(7))
    other = make(np.random.default_rng(8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    seconds = first.size / noises.RATE
    longest = {"cough": 0.5, "click": 1.5, "keyboard": 4.0, "door": 0.6, "music": 5.0}
    assert 0.15 <= seconds <= longest.get(name, 0.8), seconds
    peak_dbfs = 20 * np.log10(np.max(np.abs(first)) / 32768)
    assert -15.0 <= peak_dbfs <= -3.0, peak_dbfs


def test_a_noise_as_an_utterance_knows_where_its_sound_is() -> None:
    click = np.zeros(4_800, dtype=np.int16)
    click[1_000:1_010] = 20_000  # too short for the speech detector, still a sound
    utterance = sound("click", click, noises.RATE)
    assert utterance.speech_end - utterance.speech_start == 10
    assert utterance.pcm[utterance.speech_start] == 20_000
    with pytest.raises(ValueError, match="silent"):
        sound("nothing", np.zeros(100, dtype=np.int16), noises.RATE)


def test_an_unfinished_utterance_has_its_pause_where_it_says() -> None:
    utterance, pauses = Voices(None).utterance(
        "u", "espeak:en-us:160", ["I need eggs, milk,", "and bread"], pause_ms=800
    )
    ((start, end),) = pauses
    assert end - start == pytest.approx(0.8, abs=1e-3)
    rate = utterance.rate
    gap = utterance.pcm[round(start * rate) : round(end * rate)]
    assert not np.any(gap)
    before = speech_bounds(utterance.pcm[: round(start * rate)], rate)
    after = speech_bounds(utterance.pcm[round(end * rate) :], rate)
    assert before is not None and after is not None
    assert utterance.text == "I need eggs, milk, and bread"
    with pytest.raises(ValueError, match="Piper"):
        Voices(None).speak("piper:joe", "Hello.")


async def test_the_echo_microphone_feeds_back_what_it_hears_later_and_quieter() -> None:
    mic = EchoMicrophone(delay_ms=40.0, gain_db=-20.0)
    received = ReceivedAudio()
    received.append(np.full(MIC_FRAME, 9_999, dtype=np.int16), 0.0)  # before: not fed back
    mic.listen_to(received)
    received.append(np.full(MIC_FRAME * 2, 10_000, dtype=np.int16), 0.0)
    try:
        frames = [(await mic.recv()).to_ndarray().reshape(-1) for _ in range(5)]
    finally:
        mic.stop()
    heard = np.concatenate(frames)
    delay = round(0.04 * OUTPUT_RATE)
    assert not np.any(heard[:delay])
    assert np.all(heard[delay : delay + 2 * MIC_FRAME] == 1_000)  # -20 dB
    assert not np.any(heard[delay + 2 * MIC_FRAME :])


def event(t_ms: float, kind: str, turn: int, **data: Any) -> dict[str, Any]:
    return {"t_ms": t_ms, "type": kind, "turn": turn, **data}


def observation(category: str, script: str = "", **fields: Any) -> dict[str, Any]:
    case = {"name": f"{category}-x", "category": category, "kind": "k", "script": script}
    return {
        "case": case, "status": "ok", "speech_ms": (100.0, 1_600.0), "stimulus_ms": None,
        "ear_ms": [], "events": [], "direct_transcript": None, "ended_ms": 0.0, **fields,
    }  # fmt: skip


def test_an_answered_utterance_and_one_answered_in_its_pause() -> None:
    answered = observation(
        "incomplete",
        "I need eggs, milk, and bread",
        ear_ms=[(2_600.0, 4_000.0)],
        direct_transcript="I need eggs, milk and bread.",
        events=[
            event(1_200, "transcript", 1, text="I need eggs, milk,"),  # in the pause, then
            event(2_000, "transcript", 1, text="I need eggs, milk and bread."),  # the whole
            event(2_500, "agent_speech_start", 1),
            event(4_100, "turn_metrics", 1, endpoint_ms=240.0, endpoint="semantic"),
        ],
    )
    s = score(answered)
    assert s["valid"] and not s["false_end_of_turn"] and not s["missed_end_of_turn"]
    assert (s["mouth_to_ear_ms"], s["endpoint_ms"], s["mouth_to_transcript_ms"]) == (
        1_000.0, 240.0, 400.0,
    )  # fmt: skip
    assert s["words"]["missing"] == 0 and s["words"]["lost"] == 0 and s["shown_early"]
    assert failed({"case": answered["case"], "score": s}) is None

    cut_in = observation(
        "incomplete",
        "I need eggs, milk, um, and bread",
        ear_ms=[(1_000.0, 1_400.0), (2_600.0, 3_000.0)],
        direct_transcript="I need eggs, milk, and bread.",
        events=[event(900, "agent_speech_start", 1), event(1_300, "transcript", 2, text="eggs")],
    )
    s = score(cut_in)
    assert s["false_end_of_turn"] and s["early_voice_ms"] == 1_000.0
    assert s["words"]["script_words"] == 6  # "um" is not scored
    assert s["words"]["lost"] == 5 and s["words"]["missing_direct"] == 0
    assert "false end of turn" in str(failed({"case": cut_in["case"], "score": s}))

    assert score(observation("complete", "Yes."))["missed_end_of_turn"]
    late = score(
        observation(
            "complete",
            "Yes.",
            ear_ms=[(9_000.0, 9_500.0)],
            events=[
                event(2_000, "transcript", 1, text="Yes."),
                event(8_900, "agent_speech_start", 1),
            ],
        )
    )
    assert late["late_reply"] and not late["missed_end_of_turn"]


def test_final_transcripts_keep_the_last_of_each_turn_in_turn_order() -> None:
    events = [
        event(1, "transcript", 2, text="b"),
        event(2, "transcript", 1, text="a1"),
        event(3, "transcript", 1, text="a2"),
        event(4, "agent_text", 1, delta="x"),
    ]
    assert final_transcripts(events) == ["a2", "b"]
    assert final_transcripts(events, after_turn=1) == ["b"]


def over(category: str, events: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    start = [event(2_500, "agent_speech_start", 1)]
    return observation(category, stimulus_ms=(4_000.0, 4_500.0), events=start + events, **fields)


def test_sounds_over_the_agent() -> None:
    voice = [(2_600.0, 4_100.0), (4_120.0, 4_300.0), (5_200.0, 9_000.0)]
    resumed = over(
        "noise",
        [event(5_100, "interrupted", 1, false_interruption=True, resumed=True)],
        ear_ms=voice,
        ended_ms=9_000.0,
    )
    s = score(resumed)
    assert (s["outcome"], s["pauses"], s["pause_at_ear_ms"]) == ("resumed", 1, 900.0)

    ignored = score(over("echo", [], ear_ms=[(2_600.0, 9_000.0)], ended_ms=9_000.0))
    assert (ignored["outcome"], ignored["paused"]) == ("ignored", False)

    stalled = score(over("backchannel", [], ear_ms=[(2_600.0, 4_200.0)], ended_ms=7_000.0))
    assert stalled["outcome"] == "stalled"

    stopped = over(
        "interruption",
        [
            event(4_700, "interrupted", 1, false_interruption=False, heard="Once upon"),
            event(6_000, "transcript", 2, text="Stop."),
        ],
        ear_ms=[(2_600.0, 4_100.0), (4_200.0, 4_450.0), (6_500.0, 7_000.0)],
        direct_transcript="Stop!",
    )
    stopped["case"]["script"] = "Stop."
    s = score(stopped)
    assert s["outcome"] == "stopped" and s["stop_ms"] == 450.0 and s["detect_ms"] == 700.0
    assert s["words"]["lost"] == 0 and not s["answered_sound"]
    assert score(over("noise", [], status="no_reply")) == {"valid": False}

    paused_first = over(
        "interruption",
        [
            event(4_500, "interrupted", 1, false_interruption=True, resumed=True),
            event(6_000, "interrupted", 1, false_interruption=False, heard="Once upon a"),
        ],
        ear_ms=[(2_600.0, 4_200.0), (4_700.0, 5_300.0), (7_000.0, 7_500.0)],
    )
    s = score(paused_first)  # paused at the onset, resumed, then stopped for good
    assert (s["outcome"], s["paused"], s["stop_ms"]) == ("stopped", True, 1_300.0)


def test_the_summary_judges_each_target() -> None:
    cases = []
    for category in CATEGORIES:
        obs = over(category, [], ear_ms=[(2_600.0, 9_000.0)], ended_ms=9_000.0)
        if category in ("complete", "incomplete"):
            obs = observation(
                category, "Yes.", ear_ms=[(2_600.0, 3_000.0)], direct_transcript="Yes."
            )
            obs["events"] = [event(3_100, "turn_metrics", 1, endpoint_ms=300.0)]
        cases.append({**obs, "score": score(obs)})
    targets = against_targets(summarize(cases))
    assert targets["end_of_turn_delay_p50_ms"] == {
        "scope": "complete", "target": 250.0, "figure": 300.0, "met": False,
    }  # fmt: skip
    assert targets["false_end_of_turn"]["met"] and targets["false_barge_in"]["figure"] == 0.0
    assert targets["missed_barge_in"]["figure"] == 1.0  # the interruption was ignored
    assert targets["words_lost"]["met"] is False  # no transcript: the word is lost


def test_rescore_rewrites_the_outputs_from_the_saved_observations(tmp_path: Path) -> None:
    obs = observation("complete", "Yes.", ear_ms=[(2_600.0, 3_000.0)], direct_transcript="Yes.")
    obs["events"] = [
        event(2_000, "transcript", 1, text="Yes."),
        event(3_100, "turn_metrics", 1, endpoint_ms=200.0, endpoint="semantic"),
    ]
    meta = {
        "started": "then", "seconds": 1.0, "command": "c", "server_args": None, "server": {},
        "machine": {}, "cases_per_category": 1, "seed": 0, "note": "",
    }  # fmt: skip
    stale = {**obs, "score": {"valid": False}}
    (tmp_path / "results.json").write_text(json.dumps({"meta": meta, "cases": [stale]}))
    assert main(["--rescore", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["cases"][0]["score"]["endpoint_ms"] == 200.0
    assert saved["cases"][0]["events"] == obs["events"]  # the observation is kept as it was
    assert saved["targets"]["end_of_turn_delay_p50_ms"]["met"]
    assert "scored again" in (tmp_path / "summary.md").read_text()


def test_merge_joins_segments_closer_than_the_gap() -> None:
    assert merge([(0, 10), (15, 20), (100, 110)], 10) == [(0, 20), (100, 110)]


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_a_few_cases_of_each_category_through_the_small_models(
    small_models: Path, tmp_path: Path
) -> None:
    args = parse_args(["--launch", "--models", str(small_models), "--cases", "2"])
    args.out, args.started = tmp_path, "test"
    result = await bench(args)
    written = write_all(result, tmp_path)
    assert {p.name for p in written} == {"results.json", "summary.md", "turns.png"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "## Targets" in (tmp_path / "summary.md").read_text()
    assert set(saved["summary"]) == set(CATEGORIES)
    assert (tmp_path / "server.log").stat().st_size > 0
    by_name = {c["case"]["name"]: c for c in saved["cases"]}
    print({name: c["status"] + " " + json.dumps(c["score"])[:200] for name, c in by_name.items()})

    question = by_name["complete-000-question"]["score"]
    assert question["valid"] and not question["missed_end_of_turn"], question
    assert question["endpoint_ms"] is not None and question["mouth_to_ear_ms"] > 0
    # Scored against its script (Piper's voice varies from run to run, and so can Whisper's
    # words: its errors are a figure of the benchmark, not a failure here).
    assert (
        question["words"]["script_words"] == 6
        and by_name["complete-000-question"]["direct_transcript"]
    )
    assert any(e["type"] == "transcript" for e in by_name["complete-000-question"]["events"])
    for name in ("interruption-000-short", "interruption-001-question"):
        stopped = by_name[name]["score"]
        assert stopped["valid"] and stopped["outcome"] == "stopped", (name, stopped)
        assert stopped["stop_ms"] is not None and stopped["stop_ms"] > 0
    cough = by_name["noise-000-cough"]["score"]
    assert cough["valid"] and cough["outcome"] not in ("stopped", "stalled"), cough
    echo = by_name["echo-000-20dB-50ms"]
    # At least the agent's first syllables went back into the microphone (it may have been
    # stopped by them: that is a figure of the benchmark, not a failure of the test).
    assert echo["fed_back_ms"] > 200, echo["fed_back_ms"]
    for case in saved["cases"]:
        assert case["status"] == "ok" or case["status"] in ("no_reply", "reply_too_short")
        if case["case"]["category"] in ("incomplete", "interruption") and case["score"]["valid"]:
            assert case["direct_transcript"], case["case"]["name"]


def test_the_pause_study_replays_the_endpoint_policy_on_each_pause() -> None:
    """A cut utterance whose pause reads finished and sounds unsure ends there (false) under
    a policy whose words may shorten the wait, not under one that trusts the model below
    0.05; the complete one's delay is its pause plus the model's time."""
    from benchmarks.turns.pauses import Pause, Policy, replay

    def pause(case: str, category: str, where: str, p: float, text: str, silence: float | None):
        return Pause(case, category, "k", "espeak", 128, where, 130.0, silence, p, 50.0, text, None)

    pauses = [
        pause("cut", "incomplete", "inside", 0.02, "We visited Paris, Rome.", 1200.0),
        pause("cut", "incomplete", "end", 0.9, "We visited Paris, Rome, and Madrid.", None),
        pause("whole", "complete", "end", 0.9, "What is the capital of France?", None),
    ]
    trusting_words = replay(pauses, Policy(0.5, 0.0, 700, 2000))
    assert trusting_words["false_end_of_turn"] == 1 and trusting_words["false_cases"] == ["cut"]
    trusting_model = replay(pauses, Policy(0.5, 0.05, 700, 2000))
    assert trusting_model["false_end_of_turn"] == 0
    assert trusting_model["delay_p50_ms"] == 180.0


@pytest.mark.slow
def test_the_pause_study_runs_on_the_small_models(small_models: Path, tmp_path: Path) -> None:
    from benchmarks.turns.pauses import main as study

    assert study(["--models", str(small_models), "--cases", "1", "--pause-ms", "128",
                  "--out", str(tmp_path)]) == 0  # fmt: skip
    result = json.loads((tmp_path / "results.json").read_text())
    pauses = result["pauses"]
    assert {p["category"] for p in pauses} == {"complete", "incomplete"}
    # The cut utterance's pause is found inside it, with the silence the user left there.
    inside = [p for p in pauses if p["where"] == "inside"]
    assert inside and all(p["silence_ms"] > 100 for p in inside), pauses
    assert all(0.0 <= p["probability"] <= 1.0 and p["transcript"] for p in pauses), pauses
    assert result["replays"] and "Smart Turn's probability" in (tmp_path / "summary.md").read_text()
