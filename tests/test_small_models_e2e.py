"""The agent hears and speaks, with the real `small` models (Whisper base, SmolLM2-135M,
Piper joe, Smart Turn v3.2, fetched from the package index) over real WebRTC: a real aiortc
client speaks Piper's voice and listens to the agent. What it heard is transcribed back with
the same Whisper, so every check is about words, not only about timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import pytest_asyncio

from agent.app.runtime import Runtime
from agent.audio import OUTPUT_RATE, STT_RATE, Int16Array, resample_pcm
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.dialogue.conversation import Conversation
from agent.models.device import detect_device
from agent.models.loaders import load_piper
from agent.stages.chunker import SpeechChunker
from agent.stages.tts.piper import PiperSynthesizer
from agent.turntaking.endpoint import EndpointPolicy, Wait, wait_after_pause
from benchmarks.ear import Timeline, agent_onset_after
from benchmarks.peer import AgentClient
from benchmarks.wer import NORMALISE, word_error_rate, word_errors
from tests.conftest import ServerFactory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

VOICE = Path("piper-en_US-joe-medium/en_US-joe-medium.onnx")


@pytest_asyncio.fixture
async def small_runtime(small_models: Path) -> AsyncIterator[Runtime]:
    """Loaded per test (the models themselves once per process: the loaders cache them).
    Tests name it before `start_server`, so the server closes first."""
    config = AppConfig(
        models=ModelConfig(models_dir=small_models, profile="small", offline=True),
        conversation=ConversationConfig(max_reply_sentences=2),
    )
    runtime = await Runtime.load(config)
    assert runtime.turn_model is not None, "the small set has Smart Turn"
    # What these tests hear is SmolLM2 as served on a CPU: its weights unpacked to F16.
    assert runtime.chat.describe()["weights"].startswith("F16, unpacked from Q4_1")
    yield runtime
    await runtime.aclose()


@pytest.fixture(scope="module")
def joe(small_models: Path) -> PiperSynthesizer:
    """The user's voice: Piper joe, another voice than the agent's would be as good."""
    return PiperSynthesizer(load_piper(small_models / VOICE, detect_device("cpu")))


def as_said(text: str) -> str:
    """A reply's text the way the agent says it: cleaned for speech, chunk by chunk."""
    chunker = SpeechChunker()
    return " ".join(chunker.push(text) + chunker.flush())


def said(joe: PiperSynthesizer, text: str) -> tuple[Int16Array, int]:
    return joe.synthesize(text), joe.sample_rate


def cough(rate: int, seconds: float = 0.3) -> Int16Array:
    """A cough: a burst of noise, loud at once, fading, with the low body of a chest."""
    rng = np.random.default_rng(7)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t / 0.08)
    body = np.sin(2 * np.pi * 180 * t) * 0.4 + rng.standard_normal(n)
    return (body * envelope * 9000).astype(np.int16)


def without_numbers(texts: list[str]) -> list[str]:
    """The texts without the words that hold a digit."""
    return [" ".join(w for w in t.split() if not any(c.isdigit() for c in w)) for t in texts]


def silence(seconds: float, rate: int) -> Int16Array:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def event_log(client: AgentClient) -> str:
    """The session's events, for a failing test's output."""
    start = client.events[0].received_at if client.events else 0.0
    return "\n".join(
        f"{e.received_at - start:7.2f} {e.data}" for e in client.events if e.data["type"] != "pong"
    )


async def connected(url: str) -> AgentClient:
    client = AgentClient(url)
    await client.connect()
    await client.wait_channel_open()
    await asyncio.sleep(0.3)
    return client


def texts(client: AgentClient, kind: str, since: int = 0) -> list[str]:
    key = "text" if kind == "transcript" else "delta"
    return [str(e.data[key]) for e in client.events[since:] if e.data["type"] == kind]


def conversation_of(client: AgentClient, server: Any) -> Conversation:
    session = server.sessions.get(client.session_id or "")
    assert session is not None and isinstance(session.sink, Conversation)
    return session.sink


async def heard_words(runtime: Runtime, client: AgentClient, start: float, end: float) -> str:
    """Whisper's transcript of what reached the client's ear between two wall times."""
    timeline = Timeline(client.received, start)
    pcm = timeline.pcm[timeline.index_at(start) : timeline.index_at(end)]
    audio = resample_pcm(pcm, OUTPUT_RATE, STT_RATE)
    return (await runtime.transcriber.transcribe(audio)).text


async def test_small_models_spoken_questions_get_spoken_answers_in_words(
    small_runtime: Runtime, start_server: ServerFactory, joe: PiperSynthesizer
) -> None:
    """Two turns: each transcript is what was said, and what the client heard of each
    reply, transcribed, is the reply's text (over both replies, for enough words)."""
    server = await start_server(small_runtime.config, small_runtime)
    client = await connected(server.url)
    questions = ["What is the capital of France?", "Can you tell me a fact about the ocean?"]
    replies: list[str] = []
    heard: list[str] = []
    try:
        for turn, question in enumerate(questions, start=1):
            since = len(client.events)
            pcm, rate = said(joe, question)
            sent: list[float] = []
            client.mic.play(pcm, rate, on_sent=lambda start, end, sent=sent: sent.append(end))
            client.mic.play(silence(1.0, rate), rate)
            metrics = await client.wait_for_event(
                lambda e, n=turn: e["type"] == "turn_metrics" and e["turn"] == n, 60, since
            )
            await asyncio.sleep(0.5)  # the reply's last frames
            (transcript,) = texts(client, "transcript", since)
            assert word_error_rate([question], [transcript]) <= 0.2, transcript
            reply = "".join(texts(client, "agent_text", since)).strip()
            assert reply, "the agent said nothing"
            onset = agent_onset_after(client, sent[0] - 1.0, sent[0])
            assert onset is not None, "no reply audio reached the client"
            end = client.received.arrival[-1]
            replies.append(reply)
            heard.append(await heard_words(small_runtime, client, onset - 0.1, end))
            assert metrics["reply_sentences"] <= 2 and metrics["interrupted"] is False
            assert metrics["endpoint"] in ("semantic", "words", "ceiling"), metrics
            await asyncio.sleep(0.5)
        # Numbers aside: Piper reads "12,700,000" its own way and Whisper writes what it hears
        # of that ("12 quadruing 700"); the words around them are what the client must hear.
        wer = word_error_rate(without_numbers(replies), without_numbers(heard))
        print(f"\nthe agent said {replies}; the client heard {heard} (WER {wer:.2f})")
        assert wer <= 0.3, (replies, heard)
        history = conversation_of(client, server).history.messages
        assert [m["role"] for m in history] == ["system", "user", "assistant"] * 1 + [
            "user",
            "assistant",
        ]
        # The history keeps the model's own words (line breaks, list marks) so that its saved
        # context stays reusable; said the way the agent says them, they are what it said.
        assistant = [m["content"] for m in history if m["role"] == "assistant"]
        assert [NORMALISE(as_said(text)) for text in assistant] == [
            NORMALISE(reply) for reply in replies
        ], (assistant, replies)
    finally:
        print(event_log(client))
        await client.close()


async def test_small_models_a_pause_mid_sentence_loses_no_word(
    small_runtime: Runtime, start_server: ServerFactory, joe: PiperSynthesizer
) -> None:
    """A 900 ms pause after "a table for": not the end of the turn (the words stop
    mid-phrase); the whole sentence is one user message, and the agent says nothing in the
    pause. (Whether the pause was ever taken for an end inside the server, a reply started
    and discarded unheard, is the turn-taking benchmark's count, not this test's: Whisper
    sometimes ends "... a table for" with a word of its own, see
    agent/turntaking/endpoint.py.)"""
    server = await start_server(small_runtime.config, small_runtime)
    client = await connected(server.url)
    first, second = "I would like to book a table for", "four people at eight tonight."
    try:
        pcm1, rate = said(joe, first)
        pcm2, _ = said(joe, second)
        second_sent: list[float] = []
        client.mic.play(pcm1, rate)
        client.mic.play(silence(0.9, rate), rate)
        client.mic.play(pcm2, rate, on_sent=lambda start, end: second_sent.append(start))
        client.mic.play(silence(1.0, rate), rate)
        await client.wait_for_event("turn_metrics", timeout=60, since=0)
        *_, transcript = texts(client, "transcript")
        for event in client.events:
            if event.data["type"] == "interrupted":
                assert event.data["heard"] == "", "the user heard a reply in the pause"
        # Whisper base may mishear a word of Piper's ("four" as "For", "tonight" as "to 9");
        # the point here is that no word is lost: nothing of either half is deleted.
        errors = word_errors([f"{first} {second}"], [transcript])
        assert errors.deletions <= 1, transcript
        assert "table" in transcript.lower() and "people" in transcript.lower(), transcript
        start = next(e for e in client.events if e.data["type"] == "agent_speech_start")
        assert second_sent and start.received_at > second_sent[0], "the agent cut in"
        user = [
            m["content"]
            for m in conversation_of(client, server).history.messages
            if m["role"] == "user"
        ]
        assert user == [transcript]
    finally:
        print(event_log(client))
        await client.close()


async def test_small_models_talking_over_the_agent_keeps_what_was_heard(
    small_runtime: Runtime, start_server: ServerFactory, joe: PiperSynthesizer
) -> None:
    server = await start_server(small_runtime.config, small_runtime)
    client = await connected(server.url)
    try:
        pcm, rate = said(joe, "Tell me a long story about a dragon who lived by the sea.")
        asked: list[float] = []
        client.mic.play(pcm, rate, on_sent=lambda start, end: asked.append(end))
        client.mic.play(silence(0.6, rate), rate)
        await client.wait_for_event("agent_speech_start", timeout=60, since=0)
        async with asyncio.timeout(20):
            while (onset := agent_onset_after(client, asked[0] - 1.0, asked[0])) is None:
                await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, onset + 1.2 - time.time()))  # 1.2 s of the reply heard
        stop, _ = said(joe, "Stop, I have another question.")
        spoke: list[float] = []
        client.mic.play(stop, rate, on_sent=lambda start, end: spoke.append(start))
        client.mic.play(silence(1.0, rate), rate)
        event = await client.wait_for_event("interrupted", timeout=30, since=0)
        assert event["false_interruption"] is False, event
        heard = event["heard"]
        await client.mic.wait_sent()
        await client.wait_for_event(
            lambda e: e["type"] == "turn_metrics" and e["turn"] == event["turn"] + 1,
            timeout=60,
            since=0,
        )
        # What the user heard: everything that reached the ear before the agent was
        # stopped (it is paused at the onset, well before the `interrupted` event).
        stopped_at = next(e.received_at for e in client.events if e.data is event)
        at_the_ear = await heard_words(small_runtime, client, onset - 0.1, stopped_at)
        history = conversation_of(client, server).history.messages
        assistant = [m["content"] for m in history if m["role"] == "assistant"]
        print(f"\nheard (server) {heard!r}; at the ear {at_the_ear!r}")
        assert heard and assistant[0] == heard
        # The server counts what it sent; the ear got the same words, give or take the one
        # in flight when the agent paused.
        said_words, ear_words = NORMALISE(heard)[0], NORMALISE(at_the_ear)[0]
        assert abs(len(said_words) - len(ear_words)) <= 2, (heard, at_the_ear)
        # Letters, not words: Whisper on a fragment cut mid-word hears "distant" as
        # "distance" and "In" as "and".
        ear_prefix = " ".join(ear_words[: len(said_words)])
        assert jiwer.cer(" ".join(said_words), ear_prefix) <= 0.35, (heard, at_the_ear)
        user = [m["content"] for m in history if m["role"] == "user"]
        assert len(user) == 2
        assert word_error_rate(["Stop, I have another question."], [user[1]]) <= 0.3, user
    finally:
        print(event_log(client))
        await client.close()


async def test_small_models_a_cough_over_the_agent_does_not_stop_it(
    small_runtime: Runtime, start_server: ServerFactory, joe: PiperSynthesizer
) -> None:
    server = await start_server(small_runtime.config, small_runtime)
    client = await connected(server.url)
    try:
        pcm, rate = said(joe, "Can you tell me about the history of Rome?")
        client.mic.play(pcm, rate)
        client.mic.play(silence(0.6, rate), rate)
        await client.wait_for_event("agent_speech_start", timeout=60, since=0)
        await asyncio.sleep(0.8)
        client.mic.play(cough(rate), rate)
        client.mic.play(silence(0.5, rate), rate)
        metrics = await client.wait_for_event("turn_metrics", timeout=60, since=0)
        assert metrics["interrupted"] is False, metrics
        stops = [
            e.data
            for e in client.events
            if e.data["type"] == "interrupted" and not e.data["false_interruption"]
        ]
        assert stops == [], stops
        reply = "".join(texts(client, "agent_text")).strip()
        assert conversation_of(client, server).history.messages[-1] == {
            "role": "assistant",
            "content": reply,
        }
    finally:
        print(event_log(client))
        await client.close()


async def test_small_models_whisper_finds_no_words_in_noise(small_runtime: Runtime) -> None:
    """The `no_speech_prob` filter on the real model: hiss and a cough are no words."""
    rng = np.random.default_rng(3)
    hiss = (rng.standard_normal(STT_RATE) * 300).astype(np.int16)
    assert (await small_runtime.transcriber.transcribe(hiss)).text == ""
    assert (await small_runtime.transcriber.transcribe(cough(STT_RATE))).text == ""


async def test_small_models_smart_turn_hears_a_finished_and_an_unfinished_sentence(
    small_runtime: Runtime, joe: PiperSynthesizer
) -> None:
    model = small_runtime.turn_model
    assert model is not None

    def probability(text: str) -> float:
        pcm, rate = said(joe, text)
        audio = np.concatenate([resample_pcm(pcm, rate, STT_RATE), silence(0.2, STT_RATE)])
        return model.probability(audio)

    done = probability("What is the capital of France?")
    filler = probability("The thing is, um,")
    assert done >= 0.5 > filler, (done, filler)

    # It hears prosody, not words: Piper often says "a table for" as if it ended a sentence.
    # Then the transcript holds the turn (agent/turntaking/endpoint.py): its dangling word,
    # or, when Whisper made a word up in the pause ("a table for it."), how unsure it is of
    # that word. Piper samples its voice (each synthesis differs, and Whisper's reading with
    # it), so: held by the endpoint's rule, most of the time. Here 18 of 20 were held; the
    # other two were "... for it." with "it" at 0.56 and 0.83, sure enough to end a
    # sentence ("I am looking for it."). At 9 in 10, two holds of three tries fail about one
    # run in 36 (a CI run did); five of eight, about one in 200.
    policy = EndpointPolicy(small_runtime.config.conversation.turn_threshold)

    async def held(text: str) -> bool:
        pcm, rate = said(joe, text)
        audio = resample_pcm(pcm, rate, STT_RATE)
        words = await small_runtime.transcriber.transcribe(audio)
        verdict = policy.judge(model.probability(np.concatenate([audio, silence(0.2, STT_RATE)])))
        return wait_after_pause(verdict, words.text, words.last_word_probability) is not Wait.NONE

    holds = [await held("I would like to book a table for") for _ in range(8)]
    assert sum(holds) >= 5, holds


async def test_small_models_smollm2_answers_in_english(small_runtime: Runtime) -> None:
    """The system prompt is tuned so that the 135M model stays in the user's language."""
    questions = [
        "What is the capital of France?",
        "What's the weather going to be like tomorrow in Paris?",
        "How do I make a French omelette?",
        "Do you speak German?",
        "Tell me about Madrid.",
        "What is the best cheese from Italy?",
    ]
    foreign = set(
        [
            "le",
            "la",
            "les",
            "est",
            "une",
            "des",
            "du",
            "et",
            "je",
            "vous",
            "il",
            "pas",
            "pour",
            "dans",
            "avec",
            "el",
            "los",
            "las",
            "es",
            "un",
            "una",
            "por",
            "para",
            "con",
            "que",
            "ist",
            "ich",
            "und",
            "der",
            "die",
            "das",
            "nicht",
            "mit",
        ]
    )
    system = small_runtime.config.conversation.full_system_prompt
    for question in questions:
        pieces: list[str] = []
        await small_runtime.chat.generate(
            [{"role": "system", "content": system}, {"role": "user", "content": question}],
            pieces.append,
            60,
        )
        reply = "".join(pieces).lower()
        words = reply.replace(",", " ").replace(".", " ").split()
        assert sum(w in foreign for w in words) < 2, (question, reply)
