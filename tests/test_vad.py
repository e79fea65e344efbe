"""Turn segmentation on scripted probabilities, then the real Silero model on espeak-ng speech."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio import STT_RATE, Int16Array, resample_pcm
from agent.config import ConversationConfig
from agent.turntaking.vad import (
    SileroVad,
    SpeechEnded,
    SpeechStarted,
    StreamingVad,
    TurnEvent,
    TurnSegmenter,
    VadSettings,
    window_count_for_ms,
)
from benchmarks.corpus import espeak
from benchmarks.onset import window_levels

ESPEAK_DEFAULT_SPEED = 175
"""espeak-ng's own words per minute: the speech these tests were tuned on."""

WINDOW = SileroVad.WINDOW
WINDOW_MS = WINDOW * 1000 / STT_RATE  # 32 ms
SETTINGS = VadSettings(
    threshold=0.5, start_ms=100, endpoint_ms=300, preroll_ms=300, max_utterance_s=20.0
)


def timeline(script: str) -> list[float]:
    """ "0.1*10, 0.9*20" -> ten windows at 0.1 then twenty at 0.9."""
    probabilities: list[float] = []
    for part in script.split(","):
        value, _, count = part.strip().partition("*")
        probabilities.extend([float(value)] * int(count or 1))
    return probabilities


def run_timeline(
    script: str, settings: VadSettings = SETTINGS
) -> tuple[list[TurnEvent], TurnSegmenter]:
    """Each window's samples hold its index, so audio slices can be traced back to windows."""
    segmenter = TurnSegmenter(settings)
    events: list[TurnEvent] = []
    for index, probability in enumerate(timeline(script)):
        window = np.full(WINDOW, index, dtype=np.int16)
        events.extend(segmenter.push(window, probability, wall_time=1000.0 + index))
    return events, segmenter


def starts(events: list[TurnEvent]) -> list[SpeechStarted]:
    return [e for e in events if isinstance(e, SpeechStarted)]


def ends(events: list[TurnEvent]) -> list[SpeechEnded]:
    return [e for e in events if isinstance(e, SpeechEnded)]


START_WINDOWS = window_count_for_ms(SETTINGS.start_ms)  # 4 windows = 128 ms
ENDPOINT_WINDOWS = window_count_for_ms(SETTINGS.endpoint_ms)  # 10 windows = 320 ms


def test_settings_from_config() -> None:
    conversation = ConversationConfig(
        vad_threshold=0.6, vad_start_ms=64, endpoint_ms=500, endpoint_max_ms=1500, pause_ms=128
    )
    settings = VadSettings.from_config(conversation, semantic=False)
    assert (settings.threshold, settings.start_ms, settings.endpoint_ms) == (0.6, 64, 500)
    assert settings.pause_ms == 128
    # With an end-of-turn model the utterance lasts until its ceiling.
    assert VadSettings.from_config(conversation, semantic=True).endpoint_ms == 1500
    assert settings.preroll_ms == conversation.preroll_ms
    assert settings.max_utterance_s == conversation.max_utterance_s
    assert settings.silence_threshold == pytest.approx(0.45)


def test_start_only_after_start_ms_with_exact_stamps() -> None:
    events, _ = run_timeline("0.1*10, 0.9*20")
    (started,) = starts(events)
    assert started.onset_sample == 10 * WINDOW
    assert started.decided_sample == (10 + START_WINDOWS) * WINDOW
    assert started.wall_time == 1000.0 + 10 + START_WINDOWS - 1
    events, segmenter = run_timeline(f"0.1*10, 0.9*{START_WINDOWS - 1}")
    assert events == [] and not segmenter.in_speech


def test_short_blip_never_starts_speech() -> None:
    events, segmenter = run_timeline("0.1*10, 0.9*2, 0.1*20, 0.9*1, 0.1*20")
    assert events == []
    assert not segmenter.in_speech and segmenter.speech_ms == 0.0


def test_undecided_windows_pause_the_onset_but_silence_drops_it() -> None:
    # 0.4 is between the silence threshold (0.35) and the speech threshold: it neither counts
    # nor cancels, so the onset stays at the first voiced window.
    (started,) = starts(run_timeline("0.1*5, 0.9*2, 0.4*1, 0.9*2, 0.1*20")[0])
    assert started.onset_sample == 5 * WINDOW
    assert started.decided_sample == 10 * WINDOW
    assert run_timeline("0.1*5, 0.9*2, 0.2*1, 0.9*2, 0.1*20")[0] == []


def test_endpoint_after_silence_with_end_at_last_voiced_window() -> None:
    events, segmenter = run_timeline("0.1*20, 0.9*30, 0.1*40")
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert ended.onset_sample == 20 * WINDOW
    assert ended.end_sample == 50 * WINDOW
    assert ended.decided_sample == (50 + ENDPOINT_WINDOWS) * WINDOW
    assert ended.wall_time == 1000.0 + 50 + ENDPOINT_WINDOWS - 1
    assert not ended.forced
    assert ended.speech_ms == pytest.approx(30 * WINDOW_MS)
    assert not segmenter.in_speech and segmenter.stream_samples == 90 * WINDOW


def test_preroll_and_trailing_audio() -> None:
    (ended,) = ends(run_timeline("0.1*20, 0.9*30, 0.1*40")[0])
    preroll = SETTINGS.preroll_ms * STT_RATE // 1000
    trailing = SETTINGS.trailing_ms * STT_RATE // 1000
    assert ended.audio_start_sample == 20 * WINDOW - preroll
    assert len(ended.audio) == preroll + 30 * WINDOW + trailing
    # Samples carry their window index: the slice is exactly the stream between the stamps.
    expected = np.repeat(np.arange(90, dtype=np.int16), WINDOW)
    assert np.array_equal(ended.audio, expected[20 * WINDOW - preroll : 50 * WINDOW + trailing])


def test_preroll_never_reaches_before_stream_start() -> None:
    (ended,) = ends(run_timeline("0.1*2, 0.9*10, 0.1*20")[0])
    assert ended.onset_sample == 2 * WINDOW
    assert ended.audio_start_sample == 0
    assert ended.audio[0] == 0 and ended.audio[-1] == 12 + 3  # 100 ms tail: into window 15
    (ended,) = ends(run_timeline("0.9*10, 0.1*20")[0])
    assert ended.onset_sample == 0 and ended.audio_start_sample == 0


def test_mid_sentence_dip_does_not_end_the_turn() -> None:
    # ~190 ms below threshold at a comma (as espeak's "Hello, can you ..."), then more speech.
    dip = round(190 / WINDOW_MS)
    events, _ = run_timeline(f"0.1*10, 0.9*15, 0.05*{dip}, 0.9*20, 0.1*20")
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    (ended,) = ends(events)
    assert ended.end_sample == (10 + 15 + dip + 20) * WINDOW
    assert ended.speech_ms == pytest.approx(35 * WINDOW_MS)


def test_undecided_windows_do_not_end_or_restart_silence() -> None:
    # Hysteresis: after the first silent window, 0.4 keeps counting as silence...
    events, _ = run_timeline(f"0.1*5, 0.9*10, 0.1*1, 0.4*{ENDPOINT_WINDOWS + 5}")
    (ended,) = ends(events)
    assert ended.decided_sample == (15 + ENDPOINT_WINDOWS) * WINDOW
    # ...and right after speech it is not silence yet.
    events, segmenter = run_timeline(f"0.1*5, 0.9*10, 0.4*{ENDPOINT_WINDOWS + 5}")
    assert ends(events) == [] and segmenter.in_speech


def test_two_quick_utterances_make_two_turns() -> None:
    gap = ENDPOINT_WINDOWS + 2
    events, _ = run_timeline(f"0.1*10, 0.9*10, 0.1*{gap}, 0.9*8, 0.1*20")
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, SpeechStarted, SpeechEnded]
    first, second = ends(events)
    assert first.end_sample == 20 * WINDOW
    assert second.onset_sample == (20 + gap) * WINDOW
    # The second pre-roll does not repeat audio the first utterance already delivered.
    assert second.audio_start_sample == first.audio_start_sample + len(first.audio)


def test_max_length_forces_an_end_and_speech_goes_on_as_a_new_utterance() -> None:
    settings = VadSettings(max_utterance_s=1.0)
    max_windows = window_count_for_ms(1000)  # 32 windows
    events, segmenter = run_timeline("0.1*10, 0.9*50, 0.1*20", settings)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, SpeechStarted, SpeechEnded]
    forced, rest = ends(events)
    assert forced.forced and not rest.forced
    assert forced.decided_sample == (10 + max_windows) * WINDOW
    assert forced.end_sample == forced.decided_sample
    assert rest.onset_sample == forced.decided_sample
    assert rest.audio_start_sample == forced.audio_start_sample + len(forced.audio)
    assert rest.end_sample == 60 * WINDOW
    assert not segmenter.in_speech


def test_speech_ms_grows_during_the_utterance() -> None:
    segmenter = TurnSegmenter(SETTINGS)
    window = np.zeros(WINDOW, dtype=np.int16)
    seen: list[float] = []
    for probability in timeline("0.9*10, 0.2*3, 0.9*2"):
        segmenter.push(window, probability, 0.0)
        seen.append(segmenter.speech_ms)
    assert seen[: START_WINDOWS - 1] == [0.0] * (START_WINDOWS - 1)
    assert seen[START_WINDOWS - 1] == pytest.approx(START_WINDOWS * WINDOW_MS)
    assert seen[-1] == pytest.approx(12 * WINDOW_MS)


def test_reset_drops_the_utterance_but_keeps_the_clock() -> None:
    _, segmenter = run_timeline("0.9*10")
    assert segmenter.in_speech
    segmenter.reset()
    assert not segmenter.in_speech and segmenter.stream_samples == 10 * WINDOW
    window = np.zeros(WINDOW, dtype=np.int16)
    later: list[TurnEvent] = []
    for probability in timeline("0.9*5, 0.1*12"):
        later.extend(segmenter.push(window, probability, 0.0))
    (ended,) = ends(later)
    assert ended.onset_sample == 10 * WINDOW and ended.audio_start_sample == 10 * WINDOW


# --- the real model ----------------------------------------------------------------------


def feed_in_blocks(vad: StreamingVad, pcm: Int16Array, block_ms: int = 20) -> list[TurnEvent]:
    block = STT_RATE * block_ms // 1000
    events: list[TurnEvent] = []
    for offset in range(0, len(pcm), block):
        events.extend(vad.feed(pcm[offset : offset + block], wall_time=offset / STT_RATE))
    return events


def voiced_span(pcm: Int16Array) -> tuple[int, int]:
    """First and last sample of audible energy, in 10 ms frames, 40 dB under the peak."""
    level, frame = window_levels(pcm, STT_RATE, 10)
    active = np.flatnonzero(level > level.max() - 40)
    return int(active[0]) * frame, (int(active[-1]) + 1) * frame


@pytest.fixture(scope="module")
def espeak_speech() -> Int16Array:
    pcm, rate = espeak("Hello, can you hear me?", speed=ESPEAK_DEFAULT_SPEED)
    return resample_pcm(pcm, rate, STT_RATE)


def test_silero_on_espeak_speech(espeak_speech: Int16Array) -> None:
    padding = np.zeros(STT_RATE, dtype=np.int16)
    stream = np.concatenate([padding, espeak_speech, padding])
    speech_start, speech_end = voiced_span(espeak_speech)
    true_start, true_end = len(padding) + speech_start, len(padding) + speech_end

    vad = StreamingVad(VadSettings())
    events = feed_in_blocks(vad, stream)

    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    tolerance = 150 * STT_RATE // 1000
    assert abs(started.onset_sample - true_start) <= tolerance
    assert abs(ended.end_sample - true_end) <= tolerance
    assert ended.onset_sample == started.onset_sample and not ended.forced
    assert started.decided_sample - started.onset_sample >= 100 * STT_RATE // 1000
    assert ended.decided_sample - ended.end_sample >= 300 * STT_RATE // 1000
    assert started.wall_time == pytest.approx(started.decided_sample / STT_RATE, abs=0.03)
    # The utterance holds all the speech, pre-roll included, and little else.
    audio_end = ended.audio_start_sample + len(ended.audio)
    assert ended.audio_start_sample <= true_start and audio_end >= true_end
    assert np.array_equal(ended.audio, stream[ended.audio_start_sample : audio_end])
    assert len(ended.audio) <= (true_end - true_start) + STT_RATE // 2
    assert vad.segmenter.stream_samples == len(stream) // WINDOW * WINDOW


def test_block_size_does_not_change_the_events(espeak_speech: Int16Array) -> None:
    padding = np.zeros(STT_RATE // 2, dtype=np.int16)
    stream = np.concatenate([padding, espeak_speech, padding])
    by_20ms = feed_in_blocks(StreamingVad(VadSettings()), stream, block_ms=20)
    by_100ms = feed_in_blocks(StreamingVad(VadSettings()), stream, block_ms=100)
    assert [(type(e), e.onset_sample, e.decided_sample) for e in by_20ms] == [
        (type(e), e.onset_sample, e.decided_sample) for e in by_100ms
    ]


@pytest.mark.parametrize("kind", ["zeros", "noise"])
def test_silence_yields_no_events(kind: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "zeros":
        pcm = np.zeros(3 * STT_RATE, dtype=np.int16)
    else:
        pcm = (rng.normal(0.0, 100.0, 3 * STT_RATE)).astype(np.int16)  # about -50 dBFS
    vad = StreamingVad(VadSettings())
    assert feed_in_blocks(vad, pcm) == []
    assert not vad.segmenter.in_speech
    assert vad.last_probability < 0.5


def test_streaming_vad_rejects_float_audio() -> None:
    vad = StreamingVad(VadSettings())
    with pytest.raises(TypeError):
        vad.feed(np.zeros(512, dtype=np.float32), 0.0)
    with pytest.raises(ValueError):
        SileroVad().probability(np.zeros(100, dtype=np.int16))
