"""The echo mask: the agent's own voice coming back, quiet and late, is echo; the user's own
voice over it is not. Real speech (espeak-ng) and the real resampler, no model."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio import OUTPUT_FRAME_SAMPLES, OUTPUT_RATE, STT_RATE, Int16Array, resample_pcm
from agent.turntaking.echo import EchoMask, echoes_agent
from agent.turntaking.segmenter import SpeechStarted, VadSettings
from agent.turntaking.vad import StreamingVad
from benchmarks.corpus import espeak

WINDOW = 512


def speech(text: str, rate: int) -> Int16Array:
    pcm, source_rate = espeak(text, speed=170)
    return resample_pcm(pcm, source_rate, rate)


def play_and_hear(
    agent: Int16Array, heard: Int16Array, delay_s: float, start: float = 1000.0
) -> list[bool]:
    """Send `agent` (48 kHz) frame by frame from `start` while `heard` (16 kHz, which began
    `delay_s` after the agent's first frame) comes back window by window, as they would
    interleave in a session; the mask's verdict on each window."""
    mask = EchoMask()
    frames = agent.size // OUTPUT_FRAME_SAMPLES
    sent = 0
    verdicts = []
    for index in range(heard.size // WINDOW):
        arrived = start + delay_s + (index + 1) * WINDOW / STT_RATE
        while sent < frames and start + sent * OUTPUT_FRAME_SAMPLES / OUTPUT_RATE <= arrived:
            frame = agent[sent * OUTPUT_FRAME_SAMPLES : (sent + 1) * OUTPUT_FRAME_SAMPLES]
            mask.played(frame, start + sent * OUTPUT_FRAME_SAMPLES / OUTPUT_RATE)
            sent += 1
        mask.hear(heard[index * WINDOW : (index + 1) * WINDOW], arrived)
        verdicts.append(mask.is_echo(arrived))
    return verdicts


def loud(audio: Int16Array, count: int) -> list[bool]:
    """Windows where the sound is loud enough for the VAD to call it speech."""
    levels = [
        float(np.sqrt(np.mean(audio[i * WINDOW : (i + 1) * WINDOW].astype(np.float64) ** 2)))
        for i in range(count)
    ]
    return [level > 0.15 * max(levels) for level in levels]


@pytest.mark.parametrize("attenuation_db", [20, 35])
def test_the_agents_own_voice_coming_back_is_echo(attenuation_db: int) -> None:
    agent = speech("The sea is vast and deep, and it covers most of the earth.", OUTPUT_RATE)
    gain = 10 ** (-attenuation_db / 20)
    back = (resample_pcm(agent, OUTPUT_RATE, STT_RATE) * gain).astype(np.int16)
    verdicts = play_and_hear(agent, back, delay_s=0.18)
    # The first 300 ms fill the comparison; after that the loud windows (the ones the VAD
    # would take for speech) are echo.
    voiced = [v for v, is_loud in zip(verdicts, loud(back, len(verdicts)), strict=True) if is_loud]
    settled = voiced[5:]
    assert sum(settled) >= 0.8 * len(settled), verdicts


def vad_onsets(sent: Int16Array, heard: Int16Array, mask: EchoMask | None) -> list[float]:
    """The session's VAD (real Silero) with `mask` on `heard` (16 kHz, from the agent's first
    frame on) while `sent` (48 kHz) is played, both in 20 ms frames as WebRTC moves them: the
    times (s from the start) of its speech onsets."""
    vad = StreamingVad(VadSettings(), echo=mask)
    start, frames, played, onsets = 1000.0, sent.size // OUTPUT_FRAME_SAMPLES, 0, []
    for index in range(heard.size // 320):
        arrived = start + (index + 1) * 320 / STT_RATE
        while played < frames and start + played * 0.02 <= arrived:
            if mask is not None:
                at = played * OUTPUT_FRAME_SAMPLES
                mask.played(sent[at : at + OUTPUT_FRAME_SAMPLES], start + played * 0.02)
            played += 1
        for event in vad.feed(heard[index * 320 : (index + 1) * 320], arrived):
            if isinstance(event, SpeechStarted):
                onsets.append(arrived - start)
    return onsets


def echo_of(sent: Int16Array, delay_s: float, attenuation_db: float) -> Int16Array:
    """What the microphone hears of `sent`: late, quiet, over a faint noise floor."""
    echo = (resample_pcm(sent, OUTPUT_RATE, STT_RATE) * 10 ** (-attenuation_db / 20)).astype(
        np.int16
    )
    heard = np.concatenate([np.zeros(round(delay_s * STT_RATE), dtype=np.int16), echo])
    return (heard + np.random.default_rng(0).normal(0, 2, heard.size)).astype(np.int16)


def test_an_echo_is_masked_from_its_first_syllable_through_the_real_vad() -> None:
    """The agent starts after a silence, as a reply does; its echo comes back 250 ms later
    at -30 dB. The session's VAD with the mask hears no speech in it: the onset must be
    masked too, or the echo pauses the agent. (The mask is given every window, not only the
    voiced ones: an onset is told by the silence before it.)"""
    agent = speech("One day, in a land far away, there lived a dragon.", OUTPUT_RATE)
    sent = np.concatenate([np.zeros(OUTPUT_RATE, dtype=np.int16), agent])
    heard = echo_of(sent, 0.25, 30)
    assert vad_onsets(sent, heard, None), "the echo is loud enough for Silero to call it speech"
    mask = EchoMask()
    assert not vad_onsets(sent, heard, mask) and mask.matches > 0


def test_the_user_interrupting_over_the_echo_is_heard_at_once() -> None:
    """Once the echo path is known, the user's "Stop, please." on top of the echo is
    speech within a few windows of its onset: its envelope may follow the agent's for a
    moment, its loudness never does."""
    agent = speech(
        "The sea is vast and deep, and it covers most of the earth, from pole to pole.",
        OUTPUT_RATE,
    )
    sent = np.concatenate([np.zeros(OUTPUT_RATE // 2, dtype=np.int16), agent])
    heard = echo_of(sent, 0.2, 30).astype(np.int32)
    user = speech("Stop, please.", STT_RATE)
    at = round(2.0 * STT_RATE)
    heard[at : at + user.size] += user
    onsets = vad_onsets(sent, heard.clip(-32768, 32767).astype(np.int16), EchoMask())
    assert onsets and 2.0 <= onsets[0] <= 2.35, onsets


def test_the_user_talking_over_the_agent_is_not_echo() -> None:
    agent = speech("The sea is vast and deep, and it covers most of the earth.", OUTPUT_RATE)
    user = speech("Wait, I have another question about rivers.", STT_RATE)
    echo = (resample_pcm(agent, OUTPUT_RATE, STT_RATE) * 0.05).astype(np.int16)
    length = min(user.size, echo.size)
    both = (user[:length].astype(np.int32) + echo[:length]).clip(-32768, 32767).astype(np.int16)
    verdicts = play_and_hear(agent, both, delay_s=0.18)
    voiced = [v for v, is_loud in zip(verdicts, loud(both, len(verdicts)), strict=True) if is_loud]
    # A few windows where the user's envelope happens to follow the agent's may be masked;
    # the user's voice as a whole is heard (barge-in needs only a few hundred ms of it).
    assert sum(voiced) <= 0.2 * len(voiced), verdicts


def test_speech_when_the_agent_said_nothing_is_not_echo() -> None:
    silent = np.zeros(OUTPUT_RATE * 2, dtype=np.int16)
    user = speech("Hello, can you hear me?", STT_RATE)
    assert not any(play_and_hear(silent, user, delay_s=0.1))


def test_words_that_repeat_the_agent_are_its_echo() -> None:
    said = "Airplanes fly using a device called a jet engine, and history is steeped in it."
    assert echoes_agent("the sea is vast", "The sea is vast and deep")
    assert echoes_agent("Air planes fly", said)  # Whisper's reading of a quiet copy
    assert not echoes_agent("stop, what about rivers", said)
    # One word resembles some stretch by chance: only the same word, just said, is echo.
    assert not echoes_agent("Sorry.", said) and not echoes_agent("Stop.", said)
    assert not echoes_agent("Airplanes.", said)  # said, but too long ago for an echo
    assert echoes_agent("my", "My favorite book")  # the turns benchmark's echo of "My"
    assert not echoes_agent("my", "My favorite book", sound_over=False)  # "My question is"
    assert echoes_agent("In.", said)
    assert not echoes_agent("Wait!", "you just have to wait")  # it takes the floor
    assert not echoes_agent("", said)


def test_the_user_starting_as_the_agent_starts_a_phrase_is_not_echo() -> None:
    """Talking at the moment the agent's phrase reaches the ear: the user's onset comes one
    round trip after the agent's, a step in both envelopes, but as loud as the agent's
    voice, which no echo is."""
    agent = speech("Once upon a time, a dragon lived by the sea.", OUTPUT_RATE)
    sent = np.concatenate([np.zeros(OUTPUT_RATE, dtype=np.int16), agent])
    user = speech("Wait, wait.", STT_RATE)
    lead = np.zeros(round(1.07 * STT_RATE), dtype=np.int16)
    heard = np.concatenate([lead, user, np.zeros(STT_RATE, dtype=np.int16)])
    heard = (heard + np.random.default_rng(1).normal(0, 2, heard.size)).astype(np.int16)
    onsets = vad_onsets(sent, heard, EchoMask())
    assert onsets and 1.07 <= onsets[0] <= 1.4, onsets


def test_nothing_is_echo_while_held_until_the_agent_speaks_again() -> None:
    """The conversation holds the mask when the user talks over the agent (its voice
    paused): the user's words are never masked then; the agent's next words re-arm it."""
    agent = speech("The sea is vast and deep, and it covers most of the earth.", OUTPUT_RATE)
    sent = np.concatenate([np.zeros(OUTPUT_RATE // 2, dtype=np.int16), agent])
    heard = echo_of(sent, 0.2, 30)
    mask = EchoMask()
    assert not vad_onsets(sent, heard, mask)
    mask.hold()
    assert not mask.is_echo(1000.0)
    mask.played(np.zeros(OUTPUT_FRAME_SAMPLES, dtype=np.int16), 1010.0)
    assert mask.held  # silence does not re-arm it
    mask.played(agent[OUTPUT_RATE : OUTPUT_RATE + OUTPUT_FRAME_SAMPLES], 1010.02)
    assert not mask.held
