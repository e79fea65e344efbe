"""Fifty connect, talk, close cycles through the real app, models and aiortc client: after
warm-up, memory stays flat and threads, file descriptors and tasks come back to baseline.
`python -m benchmarks.soak --cycles 300` is the long version, with committed results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import AppConfig, ConversationConfig, ModelConfig
from benchmarks.corpus import synthesize_utterance
from benchmarks.harness import one_address_config, served
from benchmarks.soak import SENTENCE, SoakSettings, run_soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

MAX_RSS_GROWTH_MB = 10.0


async def test_fifty_cycles_leak_nothing(tiny_models: Path, tmp_path: Path) -> None:
    from agent.app.runtime import Runtime

    config = one_address_config(
        AppConfig(
            models=ModelConfig(models_dir=tiny_models, profile="tiny", offline=True),
            # A reply of a second or so: a full turn plays it all.
            conversation=ConversationConfig(max_reply_tokens=3),
        )
    )
    utterance = synthesize_utterance("soak", SENTENCE, "en-us", 170)
    # Two cycles side by side: sessions overlap, and the test takes half the time.
    settings = SoakSettings(cycles=50, warmup=10, concurrency=2)
    runtime = await Runtime.load(config)
    try:
        async with served(config, runtime) as server:
            result = await run_soak(server.url, server.sessions, utterance, settings)
            assert len(server.sessions) == 0
    finally:
        runtime.close()

    data = result.as_dict()
    (tmp_path / "soak.json").write_text(json.dumps(data, indent=2) + "\n")
    print(
        f"\nsoak: {settings.cycles} cycles, outcomes {data['outcomes']}, cycle s "
        f"{data['cycle_seconds']}; RSS start {result.start.rss_mb} MB, after warm-up "
        f"{result.baseline.rss_mb} MB, end {result.end.rss_mb} MB (growth "
        f"{result.rss_growth_mb} MB, slope {data['rss_slope_mb_per_100_cycles']} MB/100); "
        f"threads/fds/tasks baseline {result.baseline.threads}/{result.baseline.fds}/"
        f"{result.baseline.tasks}, end {result.end.threads}/{result.end.fds}/{result.end.tasks} "
        f"({data['thread_growth']}); written to {tmp_path / 'soak.json'}"
    )
    failed = [c for c in result.cycles if c.outcome not in ("reply_heard", "turn_done")]
    assert not failed, failed
    assert all(c.transcript for c in result.cycles)
    assert {c.outcome for c in result.cycles} == {"reply_heard", "turn_done"}
    assert all(c.sessions_left == 0 for c in result.cycles)
    assert result.rss_growth_mb <= MAX_RSS_GROWTH_MB
    growth = result.thread_growth()
    assert growth["unexplained"] == [] and growth["native"] <= 0, growth
    assert result.end.threads - len(growth["pool_workers_started"]) <= result.baseline.threads
    assert result.end.fds <= result.baseline.fds
    assert (result.end.tasks or 0) <= (result.baseline.tasks or 0)
    assert result.peer_connections_alive == 0
