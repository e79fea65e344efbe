"""The remote language model backend against llama-cpp-python's own OpenAI-compatible server
(`llama_cpp.server`) on the real SmolLM2-135M GGUF, directly and through a real fault
proxy (tests/llm_proxy.py): streaming, the reply cap, closing the stream (the server sees
the disconnect), the per-conversation affinity key, trimming to the server's context, the
one bounded retry of a refusal, and each broken stream ending in a clear error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionChunk

from agent.cli import build_parser
from agent.config import AppConfig, config_from_args
from agent.dialogue.history import ChatHistory
from agent.models import ModelError
from agent.stages.llm.remote import AFFINITY_HEADERS, RemoteChatModel
from agent.stages.llm.wire import RemoteModelError, read_chunk, retry_after_s
from tests.llm_proxy import Fault, FaultPlan, LlmProxy
from tests.llm_server import DISCONNECTED, LlamaServer, free_port, wait_for_log

pytestmark = pytest.mark.timeout(120)


async def connect(url: str, **kwargs: object) -> RemoteChatModel:
    options: dict[str, object] = {
        "model": None,
        "api_key": None,
        "context_tokens": 2048,
        "max_reply_tokens": 24,
        "stage_timeout_s": 10.0,
    }
    options.update(kwargs)
    return await RemoteChatModel.connect(url, **options)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def chat(llama_server: LlamaServer) -> AsyncIterator[RemoteChatModel]:
    model = await connect(llama_server.url)
    yield model
    await model.aclose()


@pytest_asyncio.fixture
async def proxied(llm_proxy: LlmProxy) -> AsyncIterator[RemoteChatModel]:
    model = await connect(llm_proxy.url)
    yield model
    await model.aclose()


def question(text: str = "What is the capital of France?") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": text},
    ]


async def test_a_reply_streams_from_the_server(
    chat: RemoteChatModel, llama_server: LlamaServer
) -> None:
    deltas: list[str] = []
    generation = await chat.generate(question(), deltas.append)
    assert len(deltas) > 1 and "".join(deltas) == generation.text
    assert generation.text.strip()
    assert generation.first_token_at is not None
    assert generation.finish_reason in ("stop", "length")
    assert generation.completion_tokens >= len(deltas)
    # llama_cpp.server sends no usage in streams: the size is the estimate, and says so.
    assert generation.prompt_tokens_estimated
    assert generation.prompt_tokens == chat.estimate_tokens(question())
    assert chat.model == str(llama_server.model)
    health = chat.describe()
    assert health["backend"] == "remote" and health["url"] == llama_server.url
    assert health["prompt_tokens"] == "estimated"
    assert health["requests"] == 1 and health["failed_requests"] == 0


async def test_the_reply_cap_ends_the_reply(chat: RemoteChatModel) -> None:
    generation = await chat.generate(question("Tell me a long story."), lambda _: None, 3)
    assert generation.finish_reason == "length"
    assert generation.completion_tokens <= 3


async def test_enough_closes_the_stream_and_the_server_stops(
    chat: RemoteChatModel, llama_server: LlamaServer
) -> None:
    before = llama_server.log().count(DISCONNECTED)
    deltas: list[str] = []

    def on_delta(delta: str) -> bool:
        deltas.append(delta)
        return True

    generation = await chat.generate(question("Tell me a long story."), on_delta, 200)
    assert generation.finish_reason == "enough"
    assert deltas == [generation.text]
    await wait_for_log(llama_server, DISCONNECTED, before + 1)


async def test_cancelling_closes_the_stream_and_the_server_stops(
    proxied: RemoteChatModel, llm_proxy: LlmProxy, llama_server: LlamaServer
) -> None:
    before = llama_server.log().count(DISCONNECTED)
    first = asyncio.Event()
    task = asyncio.create_task(
        proxied.generate(question("Tell me a long story."), lambda _: first.set(), 200)
    )
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        while not llm_proxy.client_gone:
            await asyncio.sleep(0.02)
    await wait_for_log(llama_server, DISCONNECTED, before + 1)
    # The server is free for the next request.
    assert (await proxied.generate(question(), lambda _: None, 4)).text


async def test_each_conversation_sends_its_own_stable_affinity_key(
    proxied: RemoteChatModel, llm_proxy: LlmProxy
) -> None:
    first, second = ChatHistory("You are a test."), ChatHistory("You are a test.")
    for history in (first, second, first):
        history.add_user("Hello there.")
        await proxied.generate(history.for_prompt(), lambda _: None, 4, conversation=history)
        history.add_assistant("Hi.")
    sent = llm_proxy.chat_requests()[-3:]
    keys = [r.headers[AFFINITY_HEADERS[0]] for r in sent]
    assert keys[0] == keys[2] != keys[1]
    for request in sent:
        key = request.headers[AFFINITY_HEADERS[0]]
        assert all(request.headers[h] == key for h in AFFINITY_HEADERS)
        assert request.body is not None and request.body["user"] == key
        assert request.body["stream_options"] == {"include_usage": True}
    assert len(keys[0]) >= 16
    assert proxied.affinity_key(first) == keys[0]


async def test_a_long_history_is_trimmed_to_the_server_context(
    llama_server: LlamaServer,
) -> None:
    small = await connect(llama_server.url, context_tokens=400)
    try:
        history = ChatHistory("You are a test.")
        for n in range(8):
            history.add_user(f"Question number {n}: " + "tell me more about the sea. " * 3)
            history.add_assistant(f"Answer number {n}: " + "the sea is wide and deep. " * 3)
        history.add_user("And the last question?")
        messages = history.for_prompt()
        generation = await small.generate(messages, lambda _: None, 8, conversation=history)
        assert generation.dropped_messages > 0 and generation.dropped_messages % 2 == 0
        assert messages[0]["content"] == "You are a test."
        assert messages[-1]["content"] == "And the last question?"
        assert small.estimate_tokens(messages) <= (400 - 8) * 0.6
        assert generation.text
    finally:
        await small.aclose()


async def test_a_refusal_is_retried_once_after_its_retry_after(
    proxied: RemoteChatModel, llm_proxy: LlmProxy
) -> None:
    llm_proxy.plans.append(FaultPlan(Fault.REFUSE, status=503, retry_after="1"))
    generation = await proxied.generate(question(), lambda _: None, 4)
    assert generation.text
    assert 1.0 <= generation.queue_wait_s < 1.5
    assert [r.status for r in llm_proxy.chat_requests()] == [503, 200]


async def test_a_second_refusal_is_an_error(proxied: RemoteChatModel, llm_proxy: LlmProxy) -> None:
    llm_proxy.plans.append(FaultPlan(Fault.REFUSE, status=429, retry_after="0.2", times=2))
    with pytest.raises(RemoteModelError, match="answered 429 again, after one retry"):
        await proxied.generate(question(), lambda _: None, 4)
    assert len(llm_proxy.chat_requests()) == 2
    assert proxied.describe()["failed_requests"] == 1


async def test_a_long_retry_after_fails_at_once(
    proxied: RemoteChatModel, llm_proxy: LlmProxy
) -> None:
    llm_proxy.plans.append(FaultPlan(Fault.REFUSE, status=503, retry_after="60"))
    with pytest.raises(RemoteModelError, match="retry after 60 s, longer than a turn waits"):
        await proxied.generate(question(), lambda _: None, 4)
    assert len(llm_proxy.chat_requests()) == 1


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (FaultPlan(Fault.CLOSE_EARLY, after_events=2), "stream broke off"),
        (FaultPlan(Fault.END_EARLY, after_events=2), "ended the stream before the reply"),
        (FaultPlan(Fault.CORRUPT, after_events=1), "malformed chunk"),
        (
            FaultPlan(Fault.CORRUPT, after_events=1, payload=b'data: {"choices": "no"}'),
            "malformed chunk",
        ),
        (
            FaultPlan(Fault.CORRUPT, after_events=1, payload=b'data: {"error": {"message": "x"}}'),
            "failed mid-stream",
        ),
    ],
    ids=["close-early", "end-early", "not-json", "wrong-shape", "error-event"],
)
async def test_a_broken_stream_is_a_clear_error(
    proxied: RemoteChatModel, llm_proxy: LlmProxy, plan: FaultPlan, message: str
) -> None:
    llm_proxy.plans.append(plan)
    with pytest.raises(RemoteModelError, match=message):
        await proxied.generate(question("Tell me a long story."), lambda _: None, 40)
    assert proxied.describe()["last_error"]
    assert (await proxied.generate(question(), lambda _: None, 4)).text  # and the next is fine


async def test_an_unreachable_server_is_a_startup_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelError, match=r"cannot reach the LLM server at .*: start it"):
        await connect(url)


async def test_a_model_the_server_lacks_is_a_startup_error(llama_server: LlamaServer) -> None:
    with pytest.raises(ModelError, match="not --llm-model nonexistent"):
        await connect(llama_server.url, model="nonexistent")


async def test_warm_up_generates(chat: RemoteChatModel) -> None:
    assert await chat.warm_up() > 0


def test_usage_and_cached_tokens_are_read_where_servers_report_them() -> None:
    """The usage chunk vLLM and SGLang send last, and llama-server's `timings`."""
    vllm = ChatCompletionChunk.model_validate(
        {
            "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [],
            "usage": {
                "prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129,
                "prompt_tokens_details": {"cached_tokens": 96},
            },
        }
    )  # fmt: skip
    read = read_chunk(vllm)
    assert (read.text, read.prompt_tokens, read.cached_tokens, read.completion_tokens) == (
        "",
        120,
        96,
        9,
    )
    llama_cpp_server = ChatCompletionChunk.model_validate(
        {
            "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52},
            "timings": {"cache_n": 40, "prompt_n": 10},
        }
    )  # fmt: skip
    read = read_chunk(llama_cpp_server)
    assert (read.text, read.finish_reason, read.cached_tokens) == ("Hi", "stop", 40)


def test_retry_after_reads_seconds_dates_and_milliseconds() -> None:
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


def serve_config(*argv: str) -> AppConfig:
    return config_from_args(build_parser().parse_args(["serve", *argv]))


def test_llm_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve_config().models.llm_url is None  # the in-process model stays the default
    models = serve_config("--llm-url", "http://gpu-box:8000", "--llm-model", "m").models
    assert (models.llm_url, models.llm_model) == ("http://gpu-box:8000/v1", "m")
    custom = serve_config("--llm-url", "https://example.org/inference/v1/").models
    assert custom.llm_url == "https://example.org/inference/v1"
    for bad in ("ftp://host/v1", "gpu-box:8000", "http://host/v1?x=1"):
        with pytest.raises(ValueError, match="--llm-url"):
            serve_config("--llm-url", bad)
    with pytest.raises(ValueError, match="contradict"):
        serve_config("--llm-url", "http://h:1/v1", "--llm", "model.gguf")
    monkeypatch.setenv("VOICE_AGENT_LLM_URL", "http://from-env:9000/v1")
    monkeypatch.setenv("VOICE_AGENT_LLM_API_KEY", "sk-secret-from-the-environment")
    models = serve_config().models
    assert models.llm_url == "http://from-env:9000/v1"
    assert models.llm_api_key == "sk-secret-from-the-environment"
    assert "sk-secret" not in repr(models)


async def test_health_never_shows_credentials_of_the_url(llama_server: LlamaServer) -> None:
    url = llama_server.url.replace("http://", "http://user:password@")
    model = await connect(url)
    try:
        assert model.describe()["url"] == llama_server.url
    finally:
        await model.aclose()
