"""The page in real headless Chromium (Debian's, driven by Playwright) against the running app.

The browser's microphone is a WAV file made with espeak-ng (Chromium's fake capture device
loops it). Screenshots land in test-artifacts/ at the repository root."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright import async_api  # the test extra: missing, this module fails, never skips

from agent.audio import resample_pcm
from agent.config import AppConfig, ModelConfig
from benchmarks.corpus import espeak, write_wav
from tests.conftest import RunningServer, ServerFactory
from tests.test_transport import RecordingPipeline

pytestmark = pytest.mark.browser


CHROMIUM = os.environ.get("VOICE_AGENT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]
FAKE_MIC_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

# Runs in the page before its own scripts (CDP, so the page's CSP does not apply): keeps
# the peer connections for getStats, records every state the page shows with its time, the
# click on the talk button, and when the agent's audio first has energy.
PROBE = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
  window.__states = [];
  window.__clickAt = null;
  window.__energy = 0;
  window.__firstEnergyAt = null;
  window.__audio = null;
  const record = () => {
    const state = document.body && document.body.dataset.state;
    const last = window.__states[window.__states.length - 1];
    if (state && (!last || last.state !== state)) {
      window.__states.push({ state, t: performance.now() });
    }
  };
  new MutationObserver(record).observe(document, {
    subtree: true, attributes: true, attributeFilter: ["data-state"],
  });
  document.addEventListener("click", (e) => {
    if (window.__clickAt === null && e.target.closest && e.target.closest("#talk")) {
      window.__clickAt = performance.now();
    }
  }, true);
  setInterval(async () => {
    const pc = window.__pcs[window.__pcs.length - 1];
    if (!pc || pc.connectionState === "closed") return;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") {
        window.__energy = r.totalAudioEnergy || 0;
        window.__audio = {
          received: r.totalSamplesReceived || 0,
          concealed: r.concealedSamples || 0,
          jitterMs: r.jitterBufferEmittedCount
            ? (1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount : null,
        };
        if (window.__energy > 0 && window.__firstEnergyAt === null) {
          window.__firstEnergyAt = performance.now();
        }
      }
    });
  }, 20);
})();
"""


def _chromium_or_fail() -> str:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (README's test command)")
    return CHROMIUM


def fake_mic_wav(tmp_path: Path, text: str, *, lead_s: float = 1.0, tail_s: float = 3.0) -> Path:
    """1 s of silence, espeak-ng saying `text`, then silence: 48 kHz mono 16-bit."""
    pcm, rate = espeak(text)
    rate_out = 48_000
    speech = resample_pcm(pcm, rate, rate_out)
    audio = np.concatenate(
        [
            np.zeros(int(lead_s * rate_out), np.int16),
            speech.astype(np.int16),
            np.zeros(int(tail_s * rate_out), np.int16),
        ]
    )
    path = tmp_path / "mic.wav"
    write_wav(path, audio, rate_out)
    return path


class PageProbe:
    """A page with its console errors collected."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    async def value(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    async def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            result = await self.page.evaluate(expression)
            if result:
                return result
            if time.monotonic() > deadline:
                states = await self.page.evaluate("window.__states.map(s => s.state)")
                log = await self.page.inner_text("#log")
                status = await self.page.inner_text("#connection-text")
                error = await self.page.inner_text("#error")
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; states {states}, "
                    f"connection {status!r}, error {error!r}, log {log!r}, "
                    f"console {self.errors}"
                )
            await asyncio.sleep(0.05)


@asynccontextmanager
async def browser_page(
    url: str, *, mic_wav: Path | None, fake_ui: bool = True
) -> AsyncIterator[PageProbe]:
    args = list(BASE_ARGS)
    if mic_wav is not None:
        args += [
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_wav}",
        ]
    # Without the fake permission UI, the permission prompt is answered "no".
    args.append("--use-fake-ui-for-media-stream" if fake_ui else "--deny-permission-prompts")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=_chromium_or_fail(), headless=True, args=args
        )
        try:
            context = await browser.new_context(viewport=DESKTOP)
            await context.add_init_script(PROBE)
            page = await context.new_page()
            probe = PageProbe(page)
            response = await page.goto(url)
            assert response is not None and response.ok
            csp = response.headers.get("content-security-policy", "")
            assert "default-src 'self'" in csp
            # Not page.wait_for_function: its polling evaluates strings, which the CSP forbids.
            await probe.wait_for(
                "document.getElementById('models').textContent !== 'Checking the server…'",
                10,
                "the server info",
            )
            yield probe
            await context.close()
        finally:
            await browser.close()


async def screenshots(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.set_viewport_size(DESKTOP)
    await asyncio.sleep(0.2)
    await page.screenshot(path=str(ARTIFACTS / f"{name}-desktop.png"))
    await page.set_viewport_size(PHONE)
    await asyncio.sleep(0.2)
    await page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)


async def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def subsequence(items: list[str], wanted: list[str]) -> bool:
    it = iter(items)
    return all(any(x == w for x in it) for w in wanted)


# -- a whole conversation turn with the tiny synthetic models ---------------------------


@asynccontextmanager
async def tiny_runtime(tiny_models: Path) -> AsyncIterator[Any]:
    from agent.app.runtime import Runtime

    config = AppConfig(models=ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    # A short reply, so the turn finishes before the looping microphone speaks again.
    config = replace(config, conversation=replace(config.conversation, max_reply_tokens=24))
    runtime = await Runtime.load(config)
    try:
        yield runtime
    finally:
        runtime.close()


async def test_a_spoken_turn_gets_a_streamed_spoken_reply(
    start_server: ServerFactory, tiny_models: Path, tmp_path: Path
) -> None:
    wav = fake_mic_wav(
        # Long trailing silence: the looping microphone must not cut the reply short.
        tmp_path,
        "what is the weather like today",
        tail_s=10.0,
    )
    async with tiny_runtime(tiny_models) as runtime:
        server = await start_server(runtime.config, runtime)
        try:
            async with browser_page(server.url, mic_wav=wav) as probe:
                page = probe.page
                assert await page.is_visible("#synthetic"), "synthetic-model warning not shown"
                await page.click("#talk")
                await probe.wait_for(
                    "document.body.dataset.connection === 'connected'", 20, "the connection"
                )
                await probe.wait_for(
                    "document.querySelector('.bubble.user:not(.pending) .text')?.textContent",
                    30,
                    "the user's transcript bubble",
                )
                first_text = await probe.wait_for(
                    "document.querySelector('.bubble.agent .text')?.textContent",
                    30,
                    "the agent's text",
                )
                await probe.wait_for(
                    "window.__firstEnergyAt !== null && "
                    "window.__states.some(s => s.state === 'speaking')",
                    30,
                    "agent audio in the browser",
                )
                await probe.wait_for(
                    "document.querySelector('.bubble.agent .latency summary')?.textContent",
                    30,
                    "the turn's latency",
                )
                # The agent's text grew after the first delta arrived (it streams).
                full_text = await probe.value(
                    "document.querySelector('.bubble.agent .text').textContent"
                )
                assert len(full_text) >= len(first_text) > 0
                await probe.wait_for(
                    "(() => { const s = window.__states.map(x => x.state);"
                    " const i = s.indexOf('speaking');"
                    " return i >= 0 && s.indexOf('listening', i) > i; })()",
                    40,
                    "the agent to finish speaking",
                )
                states = [s["state"] for s in await probe.value("window.__states")]
                assert subsequence(
                    states, ["listening", "user speaking", "thinking", "speaking", "listening"]
                ), states
                energy_before = await probe.value("window.__energy")
                await asyncio.sleep(0.3)
                assert await probe.value("window.__energy") >= energy_before > 0

                timing = await probe.value(
                    "({click: window.__clickAt, audio: window.__firstEnergyAt,"
                    " speaking: window.__states.find(s => s.state === 'speaking').t})"
                )
                latency = await probe.value(
                    "document.querySelector('.bubble.agent .latency summary').textContent"
                )
                connect_to_audio_ms = timing["audio"] - timing["click"]
                print(
                    f"\nconnect click -> first agent audio energy in the browser: "
                    f"{connect_to_audio_ms:.0f} ms (agent_speech_start shown at "
                    f"{timing['speaking'] - timing['click']:.0f} ms); server: {latency}; "
                    f"states {states}"
                )
                (ARTIFACTS).mkdir(exist_ok=True)
                (ARTIFACTS / "web-timing.txt").write_text(
                    f"connect click -> first agent audio energy: {connect_to_audio_ms:.0f} ms\n"
                    f"server per-turn: {latency}\nstates: {states}\n"
                )
                await page.click(".bubble.agent .latency summary")  # the stages, for the shot
                assert await page.is_visible(".bubble.agent .latency .stages")
                await screenshots(page, "web")
                await page.click("#talk")  # hang up
                await wait_until(lambda: len(server.sessions) == 0, 10, "the session to close")
                assert probe.errors == []
        finally:
            await server.sessions.close_all("test over")


# -- connection lifecycle without models ------------------------------------------------


async def connected_page(
    start_server: ServerFactory, tmp_path: Path, **server_fields: Any
) -> tuple[RunningServer, RecordingPipeline, Path]:
    pipeline = RecordingPipeline()
    server = await start_server(pipeline=pipeline, **server_fields)
    wav = fake_mic_wav(tmp_path, "Testing, one two three.")
    return server, pipeline, wav


async def test_hang_up_removes_the_session(start_server: ServerFactory, tmp_path: Path) -> None:
    server, pipeline, wav = await connected_page(start_server, tmp_path)
    async with browser_page(server.url, mic_wav=wav) as probe:
        page = probe.page
        deletes: list[tuple[str, int]] = []

        async def on_response(response: Any) -> None:
            if response.request.method == "DELETE":
                deletes.append((response.url, response.status))

        page.on("response", on_response)
        await page.focus("#talk")
        await page.keyboard.press("Enter")  # the keyboard works as well as a click
        await probe.wait_for("document.body.dataset.connection === 'connected'", 20, "connected")
        assert await page.get_attribute("#talk", "aria-pressed") == "true"
        assert await page.inner_text("#state-text") == "Listening"
        assert len(server.sessions) == 1
        # The footer's count follows the connection (it was read at load, before it).
        await probe.wait_for(
            "document.getElementById('models').textContent.includes('1 of 8 sessions in use')",
            5,
            "the footer to count this session",
        )
        (session_id,) = pipeline.sessions
        # The microphone reaches the server and moves the level meter.
        await wait_until(lambda: pipeline.sinks[session_id].stream_samples > 16_000, 10, "audio")
        await probe.wait_for(
            "Number(document.getElementById('meter').getAttribute('aria-valuenow')) > 0",
            10,
            "the level meter",
        )
        await page.keyboard.press("Space")  # hang up
        await wait_until(lambda: len(server.sessions) == 0, 10, "the server to drop the session")
        await probe.wait_for("document.body.dataset.connection === 'idle'", 5, "idle")
        await wait_until(lambda: bool(deletes), 5, "the DELETE response")
        assert deletes == [(f"{server.url}/sessions/{session_id}", 204)]
        assert pipeline.sinks[session_id].closed
        assert await page.get_attribute("#talk", "aria-pressed") == "false"
        assert await page.inner_text("#connection-text") == "Not connected"
        assert await probe.value("window.__pcs.every(pc => pc.connectionState === 'closed')")
        assert await page.is_hidden("#error")
        await probe.wait_for(
            "document.getElementById('models').textContent.includes('0 of 8 sessions in use')",
            5,
            "the footer to drop this session",
        )
        assert await page.is_hidden("#fallback")
        assert probe.errors == []


class FallbackPipeline(RecordingPipeline):
    """Reports what a first start without the hub serves: the small profile, and why."""

    def describe(self) -> dict[str, Any]:
        from agent.models.device import detect_device
        from agent.models.resolve import ProfileFallback, ResolvedModels, models_health

        resolved = ResolvedModels(
            "small",
            stt=Path("/m/whisper-base"),
            llm=Path("/m/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"),
            voice=Path("/m/piper-en_US-joe-medium/en_US-joe-medium.onnx"),
            fallback=ProfileFallback(
                "cpu",
                "the model hub (https://huggingface.co) cannot be reached",
                "voice-agent models pull --profile cpu --models /m",
            ),
        )
        return models_health(resolved, detect_device("cpu"))


async def test_page_shows_the_small_model_fallback(start_server: ServerFactory) -> None:
    server = await start_server(pipeline=FallbackPipeline())
    async with browser_page(server.url, mic_wav=None) as probe:
        page = probe.page
        assert await page.is_visible("#fallback")
        banner = await page.inner_text("#fallback")
        assert "Small models, low quality" in banner
        assert "the cpu models could not be used" in banner
        assert "cannot be reached" in banner
        assert await page.inner_text("#fallback-command") == (
            "voice-agent models pull --profile cpu --models /m"
        )
        assert await page.is_hidden("#synthetic")
        assert "models: small" in await page.inner_text("#models")
        await screenshots(page, "web-fallback")
        assert probe.errors == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [("denied", "Microphone access was denied"), ("absent", "No microphone was found")],
)
async def test_denied_or_missing_microphone_says_so(
    start_server: ServerFactory, tmp_path: Path, case: str, expected: str
) -> None:
    server = await start_server(pipeline=RecordingPipeline())
    wav = fake_mic_wav(tmp_path, "Hello.") if case == "denied" else None
    async with browser_page(server.url, mic_wav=wav, fake_ui=case != "denied") as probe:
        page = probe.page
        await page.click("#talk")
        await probe.wait_for("!document.getElementById('error').hidden", 10, "the error")
        message = await page.inner_text("#error")
        assert expected in message, message
        assert await page.get_attribute("#talk", "aria-pressed") == "false"
        assert await page.inner_text("#state-text") == "Ready"
        assert len(server.sessions) == 0
        assert await probe.value("window.__pcs.length") == 0
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"web-mic-{case}.png"))
        assert probe.errors == []


async def test_full_server_is_retried_after_retry_after(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server, _, wav = await connected_page(start_server, tmp_path, max_sessions=0)
    async with browser_page(server.url, mic_wav=wav) as probe:
        page = probe.page
        offers: list[int] = []
        page.on("response", lambda r: offers.append(r.status) if r.url.endswith("/offer") else None)
        await page.click("#talk")
        await probe.wait_for("!document.getElementById('error').hidden", 10, "the error")
        assert "The server is full" in await page.inner_text("#error")
        assert "Server full, retrying in" in await page.inner_text("#connection-text")
        # /health answers 503 "full" (not "draining"): the status line says so.
        assert await page.inner_text("#models") == "The server is full: try again shortly."
        await wait_until(lambda: len(offers) >= 2, 12, "a second offer after Retry-After")
        assert offers[:2] == [503, 503]
        await page.click("#talk")  # give up
        await probe.wait_for("document.body.dataset.connection === 'idle'", 5, "idle")
        count = len(offers)
        await asyncio.sleep(1.5)
        assert len(offers) == count, "kept retrying after hang-up"
        # 503 makes the browser log the failed fetch; nothing else may appear.
        assert [e for e in probe.errors if "503" not in e] == []


async def test_page_reconnects_when_the_server_drops_the_session(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server, pipeline, wav = await connected_page(start_server, tmp_path)
    async with browser_page(server.url, mic_wav=wav) as probe:
        page = probe.page
        await page.click("#talk")
        await probe.wait_for("document.body.dataset.connection === 'connected'", 20, "connected")
        (first,) = pipeline.sessions
        assert await server.sessions.close(first, "restarting")
        await probe.wait_for(
            "document.body.dataset.connection === 'reconnecting'", 5, "the page to notice"
        )
        assert "restarting" in await page.inner_text("#error")
        await probe.wait_for("document.body.dataset.connection === 'connected'", 20, "reconnected")
        await wait_until(lambda: len(server.sessions) == 1, 5, "the new session")
        assert set(pipeline.sessions) - {first}, "no second session"
        assert await page.is_hidden("#error")
        assert await page.get_attribute("#talk", "aria-pressed") == "true"
        await page.click("#talk")
        await wait_until(lambda: len(server.sessions) == 0, 10, "the session to close")
        assert probe.errors == []
