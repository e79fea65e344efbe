"""The page in headless Chromium with the real `small` models: Piper's voice is the fake
microphone, and the page shows the user's words and the agent's spoken reply. The browser's
own receive statistics say the reply played without concealment at the page's jitter
buffer target."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agent.app.runtime import Runtime
from agent.audio import resample_pcm
from agent.config import AppConfig, ConversationConfig, ModelConfig
from agent.models.device import detect_device
from agent.models.loaders import load_piper
from agent.stages.tts.piper import PiperSynthesizer
from benchmarks.corpus import write_wav
from benchmarks.wer import word_error_rate
from tests.conftest import ServerFactory
from tests.test_web import ARTIFACTS, browser_page, screenshots, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

QUESTION = "What is the capital of France?"


def piper_mic_wav(small_models: Path, tmp_path: Path, text: str) -> Path:
    """1 s of silence, Piper joe saying `text`, then 12 s of silence (the fake microphone
    loops its file): 48 kHz mono 16-bit."""
    voice = small_models / "piper-en_US-joe-medium" / "en_US-joe-medium.onnx"
    tts = PiperSynthesizer(load_piper(voice, detect_device("cpu")))
    speech = resample_pcm(tts.synthesize(text), tts.sample_rate, 48_000)
    audio = np.concatenate([np.zeros(48_000, np.int16), speech, np.zeros(12 * 48_000, np.int16)])
    path = tmp_path / "question.wav"
    write_wav(path, audio, 48_000)
    return path


@contextlib.asynccontextmanager
async def small_runtime(small_models: Path) -> AsyncIterator[Runtime]:
    config = AppConfig(
        models=ModelConfig(models_dir=small_models, profile="small", offline=True),
        conversation=ConversationConfig(max_reply_sentences=2),
    )
    runtime = await Runtime.load(config)
    try:
        yield runtime
    finally:
        await runtime.aclose()


async def test_small_models_the_page_shows_spoken_words_and_plays_the_reply(
    start_server: ServerFactory, small_models: Path, tmp_path: Path
) -> None:
    wav = piper_mic_wav(small_models, tmp_path, QUESTION)
    async with small_runtime(small_models) as runtime:
        server = await start_server(runtime.config, runtime)
        try:
            async with browser_page(server.url, mic_wav=wav) as probe:
                page = probe.page
                assert not await page.is_visible("#synthetic"), "real models, no warning"
                await page.click("#talk")
                said = await probe.wait_for(
                    "document.querySelector('.bubble.user:not(.pending) .text')?.textContent",
                    40,
                    "the user's words",
                )
                assert word_error_rate([QUESTION], [said]) <= 0.2, said
                await probe.wait_for(
                    "window.__states.some(s => s.state === 'speaking')", 60, "the agent's voice"
                )
                before = await probe.value("window.__audio")
                await probe.wait_for(
                    "(() => { const s = window.__states.map(x => x.state);"
                    " const i = s.indexOf('speaking');"
                    " return i >= 0 && s.indexOf('listening', i) > i; })()",
                    60,
                    "the agent to finish its reply",
                )
                reply = await probe.value(
                    "document.querySelector('.bubble.agent .text').textContent"
                )
                assert reply.strip(), "no reply text on the page"
                audio = await probe.value("window.__audio")
                assert before and audio and audio["received"] > before["received"], audio
                # Concealment while the reply played (not while the call was set up).
                concealed = (audio["concealed"] - before["concealed"]) / (
                    audio["received"] - before["received"]
                )
                report = (
                    f"you said: {said!r}; the agent: {reply!r}; browser jitter buffer "
                    f"{audio['jitterMs']} ms on average, {concealed:.2%} of samples concealed"
                )
                print("\n" + report)
                ARTIFACTS.mkdir(exist_ok=True)
                (ARTIFACTS / "web-small.txt").write_text(report + "\n")
                assert concealed < 0.02, audio
                await screenshots(page, "web-small")
                await page.click("#talk")  # hang up
                await wait_until(lambda: len(server.sessions) == 0, 10, "the session to close")
                assert probe.errors == []
        finally:
            await server.sessions.close_all("test over")
