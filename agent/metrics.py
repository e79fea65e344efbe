"""Prometheus metrics of one server: a registry of its own (no process-global state), the
per-stage latency histograms and the session, turn, interruption and error counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from agent.events import TurnMetrics

LATENCY_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
# Fine below 50 ms: one audio frame is 20 ms, and load tests read p99 from these buckets.
LOOP_LAG_BUCKETS_S = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Counter("voice_agent_sessions", "Sessions created.", registry=self.registry)
        self.turns = Counter("voice_agent_turns", "User turns answered.", registry=self.registry)
        self.interruptions = Counter(
            "voice_agent_interruptions", "Agent turns cut by the user.", registry=self.registry
        )
        self.errors = Counter(
            "voice_agent_errors", "Turns that failed in a model stage.", registry=self.registry
        )
        self.stage_seconds = Histogram(
            "voice_agent_stage_seconds",
            "Time from the end of the user's speech to each stage of a turn.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.llm_queue_wait_seconds = Histogram(
            "voice_agent_llm_queue_wait_seconds",
            "Time a turn waited for the shared LLM.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.prompt_tokens_evaluated = Histogram(
            "voice_agent_prompt_tokens_evaluated",
            "Prompt tokens evaluated per turn (not reused from the cached prefix).",
            buckets=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            registry=self.registry,
        )
        self.false_interruptions = Counter(
            "voice_agent_false_interruptions",
            "Sounds over the agent that paused it but were not the user taking the turn "
            "(noise, a backchannel, its own echo): it resumed.",
            registry=self.registry,
        )
        self.endpoints = Counter(
            "voice_agent_endpoints",
            "Ends of user turns, by what decided them (semantic, silence, ceiling, forced).",
            ["kind"],
            registry=self.registry,
        )
        self.turn_model_seconds = Histogram(
            "voice_agent_turn_model_seconds",
            "Time of one end-of-turn model (Smart Turn) call, queue included.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.speculation = Counter(
            "voice_agent_speculation",
            "Replies prepared in a pause: used (ready when the turn ended), late (still being "
            "prepared), wasted (the user went on speaking).",
            ["outcome"],
            registry=self.registry,
        )
        self.speculation_wasted_seconds = Counter(
            "voice_agent_speculation_wasted_seconds",
            "Worker time spent on replies prepared in a pause and then discarded.",
            registry=self.registry,
        )
        self.loop_lag_seconds = Histogram(
            "voice_agent_event_loop_lag_seconds",
            "How much later than asked the event loop woke a task sleeping a fixed interval.",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=self.registry,
        )

    def observe_turn(self, metrics: TurnMetrics) -> None:
        for stage in TurnMetrics.STAGES:
            value = getattr(metrics, stage)
            if value is not None:
                self.stage_seconds.labels(stage=stage.removesuffix("_ms")).observe(value / 1000)
        if metrics.llm_queue_wait_ms is not None:
            self.llm_queue_wait_seconds.observe(metrics.llm_queue_wait_ms / 1000)
        if metrics.prompt_tokens_evaluated is not None:
            self.prompt_tokens_evaluated.observe(metrics.prompt_tokens_evaluated)

    def render(self) -> bytes:
        return generate_latest(self.registry)
