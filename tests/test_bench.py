"""The bench: corpus, sample/wall-time mapping, reports, the CLI, and a short run of the
real client against the app with the tiny synthetic models."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.audio import OUTPUT_RATE
from agent.config import AppConfig, ConversationConfig, ModelConfig, ServerConfig
from benchmarks import cli, corpus, report
from benchmarks.ear import Timeline
from benchmarks.harness import ONE_ADDRESS_FLAGS, free_port
from benchmarks.peer import ReceivedAudio
from tests.conftest import ServerFactory
from tests.test_transport import RecordingPipeline

TOKEN = "0123456789abcdef0123456789abcdef"
EVENT_TO_EAR_MAX_MS = 1_000
"""agent_speech_start to the first sound at the ear: the receive jitter buffer (80 ms), a
quiet first frame or two of the voice, and a loaded machine's scheduling."""


def bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-agent")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(scope="module")
def default_corpus() -> list[corpus.Utterance]:
    return corpus.default_corpus()


def test_default_corpus_is_varied(default_corpus: list[corpus.Utterance]) -> None:
    assert len(default_corpus) >= 20
    for u in default_corpus:
        assert 1.0 <= u.duration_s <= 6.0, (u.name, u.duration_s)
        assert 0 <= u.speech_start < u.speech_end <= u.pcm.size
        # The trailing silence is cut from the end of speech, not counted as speech.
        assert u.duration_s - u.speech_end_s == pytest.approx(corpus.TAIL_S, abs=0.03)
    questions = [u for u in default_corpus if u.text.rstrip().endswith("?")]
    assert 5 <= len(questions) <= len(default_corpus) - 5
    assert sum(u.has_pause for u in default_corpus) >= 3


def test_corpus_round_trips_through_a_directory(
    tmp_path: Path, default_corpus: list[corpus.Utterance]
) -> None:
    for u in default_corpus[:3]:
        corpus.write_wav(tmp_path / f"{u.name}.wav", u.pcm, u.rate)
    loaded = corpus.load_directory(tmp_path)
    assert [u.name for u in loaded] == [u.name for u in default_corpus[:3]]
    assert loaded[0].speech_end == default_corpus[0].speech_end
    with pytest.raises(ValueError, match=r"no \.wav"):
        corpus.load_directory(tmp_path / "empty")


def test_timeline_maps_samples_to_arrival() -> None:
    received = ReceivedAudio()
    frame = OUTPUT_RATE // 50
    for k in range(10):
        received.append(np.full(frame, k, dtype=np.int16), 100.0 + 0.02 * k)
    timeline = Timeline(received, since=100.05)
    assert timeline.pcm[0] == 2  # from the frame playing at `since`
    # A frame is heard from the moment it is pulled; samples follow at the output rate.
    assert timeline.wall(0) == pytest.approx(100.04)
    assert timeline.wall(480) == pytest.approx(100.05)
    assert timeline.wall(frame) == pytest.approx(100.06)
    assert timeline.index_at(100.05) == 480
    assert timeline.index_at(100.06) == frame
    assert timeline.index_at(200.0) == timeline.pcm.size


def fake_turn(m2e: float, kind: str = "turn", **extra: Any) -> dict[str, Any]:
    server = {
        "turn": 1,
        "endpoint_ms": 320.0,
        "stt_done_ms": 400.0,
        "llm_first_token_ms": 450.0,
        "first_chunk_ms": 500.0,
        "tts_first_audio_ms": 520.0,
        "first_frame_sent_ms": 530.0,
    }
    turn = {
        "sessions": 1,
        "session": 0,
        "kind": kind,
        "index": 0,
        "utterance": "01",
        "has_pause": False,
        "status": "ok",
        "mouth_to_ear_ms": m2e,
        "server": server,
        "server_turns": 1,
        "uplink_ms": 90.0,
        "downlink_ms": m2e - 530.0 - 90.0,
        "transport_ms": m2e - 530.0,
        "event_downlink_ms": 70.0,
        "barge_in_stop_ms": None,
        "interrupted": None,
    }
    return turn | extra


def small_result() -> dict[str, Any]:
    turns = [fake_turn(700.0 + 10 * i) for i in range(20)]
    turns.append(fake_turn(900.0, kind="barge_in", barge_in_stop_ms=250.0, interrupted=True))
    return {
        "meta": {
            "started": "2026-01-01T00:00:00+00:00",
            "command": "voice-agent bench",
            "url": "http://x",
            "flags": {},
            "server": {"models": {"profile": "tiny", "synthetic": True, "warning": "synthetic"}},
            "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 4, "gpus": [], "os": "Linux"},
            "corpus": [{"name": "01", "has_pause": False}],
        },
        "runs": [{"sessions": 1, "turns": turns}, {"sessions": 2, "turns": turns}],
        "floor": [
            {"utterance": "01", "endpoint_ms": 330.0, "stt_ms": 50.0, "llm_first_token_ms": 10.0,
             "llm_first_chunk_ms": 60.0, "tts_ms": 20.0, "floor_ms": 460.0, "transcript": "x",
             "first_chunk": "y", "status": "ok"},
        ],
    }  # fmt: skip


def test_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    result = small_result()
    written = report.write_all(result, tmp_path)
    assert {p.name for p in written} == {
        "results.json", "summary.md", "cdf.png", "stages.png", "sessions.png"
    }  # fmt: skip
    for path in written:
        assert path.stat().st_size > 0
    data = json.loads((tmp_path / "results.json").read_text())
    m2e = data["summary"]["by_sessions"]["1"]["metrics"]["mouth_to_ear_ms"]
    assert m2e["n"] == 20 and m2e["p50"] == pytest.approx(795.0) and m2e["max"] == 890.0
    overhead = data["summary"]["by_sessions"]["1"]["metrics"]["overhead_ms"]
    assert overhead["p50"] == pytest.approx(795.0 - 460.0)
    assert data["summary"]["by_sessions"]["1"]["barge_in_stop_ms"]["p50"] == 250.0
    text = (tmp_path / "summary.md").read_text()
    for needle in ("p50", "p90", "p99", "max", "profile **tiny**", "overhead", "barge-in stop"):
        assert needle in text


def test_bench_command_documents_every_option() -> None:
    parser = bench_parser()
    args = parser.parse_args(["bench", "--sessions", "1,2,4"])
    assert args.sessions == [1, 2, 4] and args.func is cli.run_bench
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--sessions", "0"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bench = sub.choices["bench"]
    assert bench.formatter_class is argparse.ArgumentDefaultsHelpFormatter
    for action in bench._actions:
        assert action.help, f"{action.option_strings} has no help"


def bench_args(url: str, utterances: Path, out: Path, *extra: str) -> argparse.Namespace:
    return bench_parser().parse_args(
        ["bench", "--url", url, "--utterances", str(utterances), "--out", str(out),
         "--no-progress", *extra]
    )  # fmt: skip


def corpus_directory(tmp_path: Path, count: int) -> Path:
    utterances = tmp_path / "utterances"
    utterances.mkdir()
    for u in corpus.default_corpus()[:count]:
        corpus.write_wav(utterances / f"{u.name}.wav", u.pcm, u.rate)
    return utterances


@pytest.mark.slow
async def test_bench_against_the_tiny_app_with_a_token(
    start_server: ServerFactory, tiny_models: Path, tmp_path: Path
) -> None:
    """The real client, corpus, floor and report against the app serving the tiny models
    behind a token: the client's mouth-to-ear is positive and covers the server's whole
    share, and the barge-in interrupts the agent."""
    from agent.app.runtime import Runtime

    conversation = ConversationConfig(max_reply_tokens=24)
    config = AppConfig(
        server=ServerConfig(token=TOKEN),
        models=ModelConfig(models_dir=tiny_models, profile="tiny", offline=True),
        conversation=conversation,
    )
    runtime = await Runtime.load(config)
    utterances = corpus_directory(tmp_path, 3)
    out = tmp_path / "out"
    try:
        server = await start_server(config, runtime)
        args = bench_args(
            server.url, utterances, out,
            "--turns", "3", "--warmup", "1", "--barge-in", "1", "--gap", "0.3",
            "--turn-timeout", "30", "--models", str(tiny_models), "--profile", "tiny",
            "--max-reply-tokens", "24", "--token", TOKEN,
        )  # fmt: skip
        assert await cli.bench(args) == 0
    finally:
        runtime.close()

    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["server"]["models"]["profile"] == "tiny"
    assert TOKEN not in (out / "results.json").read_text(), "the secret went into the results"
    assert data["meta"]["flags"]["token"] == "(given)"
    turns = [t for t in data["runs"][0]["turns"] if t["kind"] == "turn"]
    assert len(turns) == 3
    ok = [t for t in turns if t["status"] == "ok"]
    assert len(ok) >= 2, [t["status"] for t in turns]
    for t in ok:
        server = t["server"]
        m2e = t["mouth_to_ear_ms"]
        assert m2e > 0
        # Everything the server does after its endpoint decision lies inside the client's
        # window: the decision comes endpoint_ms of VAD silence after the server's end of
        # speech, and that is after the client's. The server's full stage sum is measured
        # from its own end of speech (the last voiced Silero window), which can fall before
        # the client's energy-based end on a quiet final consonant, so the two are not
        # compared directly.
        after_decision = server["first_frame_sent_ms"] - server["endpoint_ms"]
        assert m2e >= after_decision, (m2e, server)
        # The reply is prepared in the pause (speculation) and played only after the
        # decision: recognition may end before the endpoint, the first frame never does.
        assert server["stt_done_ms"] <= server["first_frame_sent_ms"]
        assert server["endpoint_ms"] <= server["first_frame_sent_ms"]
        assert t["transport_ms"] == pytest.approx(m2e - server["first_frame_sent_ms"])
        # The onset found at the ear is this reply's first sound: it follows the client's
        # receipt of agent_speech_start (sent with the reply's first frame; the audio also
        # crosses the receive jitter buffer) and is not a later word of the reply.
        assert 0 < t["event_downlink_ms"] < EVENT_TO_EAR_MAX_MS, t
        # The words behind the figures: what the server heard, what the agent wrote.
        assert t["heard_user"] and t["reply"], t
    # Both directions of the transport take time (single turns may be off by the few ms
    # between the client's and the server's ideas of where speech ended).
    assert np.median([t["uplink_ms"] for t in ok]) > 0
    assert np.median([t["downlink_ms"] for t in ok]) > 0
    assert data["floor"] and any(f["floor_ms"] for f in data["floor"])
    assert data["summary"]["by_sessions"]["1"]["metrics"]["mouth_to_ear_ms"]["n"] == len(ok)
    (barge,) = [t for t in data["runs"][0]["turns"] if t["kind"] == "barge_in"]
    assert barge["status"] == "ok", barge
    assert barge["interrupted"] is True
    # The agent fell silent after the user began talking over it, and before its reply
    # could have played out (a 24-token reply of the tiny voice lasts seconds).
    assert 0 < barge["barge_in_stop_ms"] < 5_000, barge
    assert 0 < barge["barge_in_detect_ms"] <= barge["barge_in_stop_ms"] + 500, barge
    for name in ("summary.md", "cdf.png", "stages.png", "sessions.png"):
        assert (out / name).stat().st_size > 0


async def test_bench_without_the_token_is_refused_with_the_reason(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    config = AppConfig(server=ServerConfig(token=TOKEN))
    server = await start_server(config, RecordingPipeline())
    utterances = corpus_directory(tmp_path, 1)
    args = bench_args(server.url, utterances, tmp_path / "out", "--turns", "1", "--no-floor")
    with pytest.raises(ConnectionRefusedError, match="401"):
        await cli.bench(args)
    assert len(server.sessions) == 0


@pytest.mark.slow
async def test_bench_launch_starts_the_server_with_the_flags_it_logs(
    tiny_models: Path, tmp_path: Path
) -> None:
    """`bench --launch` runs `voice-agent serve` as a child with the one-address flags and
    the token, writes the command it ran at the top of server.log, and measures through it."""
    url = f"http://127.0.0.1:{free_port()}"
    utterances = corpus_directory(tmp_path, 1)
    out = tmp_path / "out"
    args = bench_args(
        url, utterances, out, "--launch", "--models", str(tiny_models), "--profile", "tiny",
        "--turns", "1", "--warmup", "0", "--barge-in", "0", "--no-floor", "--gap", "0.3",
        "--turn-timeout", "30", "--max-reply-tokens", "8", "--token", TOKEN,
    )  # fmt: skip
    assert await cli.bench(args) == 0
    command = (out / "server.log").read_text().splitlines()[0]
    for flags in (ONE_ADDRESS_FLAGS, ("--max-reply-tokens", "8"), ("--profile", "tiny")):
        assert " ".join(flags) in command, command
    assert command.startswith("# VOICE_AGENT_TOKEN=... ") and TOKEN not in command
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["server"]["models"]["profile"] == "tiny"
    assert [t["status"] for t in data["runs"][0]["turns"]] == ["ok"]


def test_the_recorded_command_hides_the_token() -> None:
    argv = ["bench", "--token", TOKEN, "--url", "http://x", f"--token={TOKEN}"]
    assert cli.without_secrets(argv) == [
        "bench", "--token", "...", "--url", "http://x", "--token=...",
    ]  # fmt: skip


def test_report_without_matplotlib_writes_json_and_markdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    written = report.write_all(small_result(), tmp_path)
    assert [p.name for p in written] == ["results.json", "summary.md"]
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["by_sessions"]
    assert "No plots: matplotlib is not installed" in (tmp_path / "summary.md").read_text()
    (notice,) = capsys.readouterr().err.strip().splitlines()
    assert "matplotlib" in notice and "pip install" in notice
    assert not list(tmp_path.glob("*.png"))


async def test_a_session_whose_microphone_stops_is_lost_not_hung(
    default_corpus: list[corpus.Utterance],
) -> None:
    """A client whose connection no longer pulls its microphone's frames (here: it never
    connected): the driver gives up on the session after the clip's time and the margin,
    and records it as lost, instead of waiting for ever (a 2-session bench hung so)."""
    from benchmarks.peer import AgentClient
    from benchmarks.runner import RunSettings, SessionDriver

    client = AgentClient("http://127.0.0.1:9")
    settings = RunSettings(url=client.base_url, turns=3, warmup=1, mic_stall_s=0.2)
    utterance = default_corpus[0]
    driver = SessionDriver(client, settings, 0, 1, lambda _: None)
    try:
        results = await asyncio.wait_for(driver.run([utterance]), timeout=utterance.duration_s + 5)
    finally:
        await client.close(hang_up=False)
    assert [r.status for r in results] == ["session_lost"]


def test_the_machine_line_names_the_cpu_generation() -> None:
    """VMs that all call themselves "AMD EPYC" ran Whisper at 2.5 times each other's speed:
    a result names the CPU's family, model and widest vector unit."""
    from benchmarks import machine

    described = machine.describe()
    assert described["cpu_generation"] is None or isinstance(described["cpu_generation"], str)
    line = machine.one_line(
        {**described, "cpu": "AMD EPYC", "cpu_generation": "family 26 model 2, AVX-512"}
    )
    assert line.startswith(f"AMD EPYC, family 26 model 2, AVX-512 ({described['cores']} cores)")
