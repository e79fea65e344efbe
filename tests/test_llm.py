"""ChatModel through the real llama.cpp with the tiny synthetic GGUF: streaming, prefix
reuse between turns, cancellation at the next token, one generation at a time."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import ModelConfig
from agent.dialogue.history import ChatHistory
from agent.models.device import detect_device
from agent.models.loaders import load_llama
from agent.models.resolve import resolve_models
from agent.stages.chunker import SpeechChunker
from agent.stages.llm import Generation, llama_internals
from agent.stages.llm.cores import VOICE_WAIT_BUDGET_S, CoreSharing
from agent.stages.llm.llama import _SENTENCE_BOUNDARY, ChatModel


@pytest.fixture
def chat(tiny_models: Path) -> Iterator[ChatModel]:
    resolved = resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    llama = load_llama(resolved.llm, 2048, detect_device("cpu"))
    threads = (llama.n_threads, llama.n_threads_batch)
    model = ChatModel(llama, max_reply_tokens=40)
    yield model
    model.close()
    llama_internals.set_threads(llama, *threads)  # the loaded model is shared by later tests


async def test_second_turn_reuses_the_evaluated_prefix(chat: ChatModel) -> None:
    history = ChatHistory("You are a test.")
    history.add_user("Hello there, how are you today?")
    deltas: list[str] = []
    first = await chat.generate(history.for_prompt(), deltas.append)
    assert deltas and "".join(deltas) == first.text
    history.add_assistant(first.text)
    history.add_user("And what about tomorrow?")
    second = await chat.generate(history.for_prompt(), lambda _: None)
    assert second.prompt_tokens > first.prompt_tokens
    # Only the new turn (and the previous reply's tail) is evaluated, not the whole history.
    assert second.prompt_tokens_evaluated < second.prompt_tokens - first.prompt_tokens // 2


@pytest.mark.slow
async def test_a_reply_kept_in_the_models_words_leaves_only_the_new_turn_to_evaluate(
    small_models: Path,
) -> None:
    """With the real SmolLM2: the history keeps a reply as the model wrote it, up to the end
    of its last spoken chunk (as ReplyTurn does), so the next prompt shares the context's
    tokens up to there; the chunks as said (cleaned, joined) used to differ from them, and
    the whole previous reply was evaluated again (about 40 tokens, 200 ms on one core)."""
    resolved = resolve_models(ModelConfig(models_dir=small_models, profile="small", offline=True))
    llama = load_llama(resolved.llm, 2048, detect_device("cpu"))
    chat = ChatModel(llama, max_reply_tokens=60, temperature=0.0)  # the same reply twice
    evaluated: dict[str, int] = {}
    try:
        for kept_as in ("written", "said"):
            history = ChatHistory("You are a helpful assistant.")
            history.add_user("List five fruits, one per line, with their colours.")
            chunker = SpeechChunker()
            spans: list[tuple[str, int]] = []
            first = await chat.generate(
                history.for_prompt(), lambda d, c=chunker, s=spans: s.extend(c.push_spans(d))
            )
            spans.extend(chunker.flush_spans())
            assert spans, first.text
            if kept_as == "written":
                history.add_assistant(first.text[: spans[-1][1]].rstrip())
            else:
                history.add_assistant(" ".join(chunk for chunk, _ in spans))
            history.add_user("And which one is the warmest?")
            second = await chat.generate(history.for_prompt(), lambda _: None, max_tokens=4)
            evaluated[kept_as] = second.prompt_tokens_evaluated
    finally:
        chat.close()
    system = [{"role": "system", "content": "You are a helpful assistant."}]
    user = {"role": "user", "content": "And which one is the warmest?"}
    user_turn = len(chat.render([*system, user])) - len(chat.render(system))
    # The new user message with its framing, the reply's end-of-message marker, and its last
    # sampled token (llama.cpp never evaluates it when the reply is cut by length).
    assert evaluated["written"] <= user_turn + 6, evaluated
    # Cleaned for speech, the list's numbers and line breaks are gone: the reply's tokens
    # from its first line on are evaluated again.
    assert evaluated["said"] >= evaluated["written"] + 5, evaluated


@pytest.mark.slow
async def test_a_reply_asked_again_beside_the_conversation_leaves_its_context_saved(
    small_models: Path,
) -> None:
    """With the real SmolLM2: a reply asked for again without the earlier turns (the copy
    guard) runs as an AsideContext, so the conversation's next turn evaluates its new words,
    not its whole history again (the bench's turns after a retry took 5 s: 900 tokens)."""
    from agent.dialogue.turn import AsideContext

    resolved = resolve_models(ModelConfig(models_dir=small_models, profile="small", offline=True))
    chat = ChatModel(load_llama(resolved.llm, 2048, detect_device("cpu")), max_reply_tokens=24)
    evaluated: dict[str, int] = {}
    try:
        for aside in (True, False):
            history = ChatHistory(f"You are a helpful assistant. ({aside})")
            for question in ("What is the capital of France?", "How far away is the moon?"):
                history.add_user(question)
                reply = await chat.generate(
                    history.for_prompt(), lambda _: None, conversation=history
                )
                history.add_assistant(reply.text)
            history.add_user("Can you recommend a good book?")
            retry = [history.messages[0], history.messages[-1]]
            owner = AsideContext() if aside else history
            again = await chat.generate(retry, lambda _: None, conversation=owner)
            history.add_assistant(again.text)
            history.add_user("Why is the sky blue?")
            after = await chat.generate(history.for_prompt(), lambda _: None, conversation=history)
            evaluated["aside" if aside else "in place"] = after.prompt_tokens_evaluated
            whole = after.prompt_tokens
    finally:
        chat.close()
    # The retried reply and the new question (a saved context covers up to the first try).
    assert evaluated["aside"] < whole // 2, (evaluated, whole)
    assert evaluated["in place"] > whole * 3 // 4, (evaluated, whole)


async def test_decodes_take_every_core_only_while_the_other_models_are_idle(
    chat: ChatModel,
) -> None:
    """llama.cpp's threads spin-wait for each other: on every core beside another busy
    model a prompt took 315 ms against 207 ms on one core (112 ms on both, alone). The
    choice is made before every decode, so a model that starts mid-reply is felt for one
    token at most."""
    import os

    llama = chat._llama
    own_threads = llama.n_threads
    every_core = max(own_threads, os.cpu_count() or 1)
    idle = True
    seen: list[tuple[int, int]] = []

    def on_delta(_: str) -> None:
        seen.append((llama.n_threads, llama.n_threads_batch))

    chat.share_cores(lambda: idle)
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    await chat.generate(messages, on_delta, max_tokens=3)
    assert (llama.n_threads, llama.n_threads_batch) == (every_core, every_core)
    assert seen and all(threads == (every_core, every_core) for threads in seen), seen
    idle = False
    await chat.generate(messages, lambda _: None, max_tokens=2)
    assert (llama.n_threads_batch, llama.n_threads) == (own_threads, own_threads)


async def test_the_llm_waits_while_the_voice_speaks(chat: ChatModel) -> None:
    """The voice has every core for its chunk: no token is decoded while it speaks."""
    voice_until = time.monotonic() + 0.3
    first_token: list[float] = []

    def on_delta(_: str) -> None:
        first_token.append(time.monotonic())

    chat.share_cores(lambda: False, lambda: time.monotonic() < voice_until)
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    await chat.generate(messages, on_delta, max_tokens=2)
    assert first_token and first_token[0] >= voice_until


async def test_a_cancel_ends_the_wait_for_the_voice(chat: ChatModel) -> None:
    chat.share_cores(lambda: False, lambda: True)  # a voice that never finishes
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    task = asyncio.create_task(chat.generate(messages, lambda _: None, max_tokens=2))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < VOICE_WAIT_BUDGET_S / 2


async def test_a_voice_that_never_finishes_holds_a_reply_back_a_bounded_time(
    chat: ChatModel,
) -> None:
    """Several sessions' voices back to back would starve the LLM a token at a time: one
    generation waits for the voice `VOICE_WAIT_BUDGET_S` in all, then writes beside it."""
    chat.share_cores(lambda: False, lambda: True)
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    started = time.monotonic()
    reply = await chat.generate(messages, lambda _: None, max_tokens=8)
    took = time.monotonic() - started
    assert reply.completion_tokens >= 2
    assert VOICE_WAIT_BUDGET_S <= took < VOICE_WAIT_BUDGET_S + 2.0


async def test_a_turn_waiting_for_the_model_ends_the_wait_for_the_voice(
    chat: ChatModel,
) -> None:
    """Holding the model while the voice speaks would delay the next turn's first token:
    with a turn queued, the running generation writes on beside the voice."""
    chat.share_cores(lambda: False, lambda: True)  # a voice that never finishes
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    started = time.monotonic()
    first = asyncio.create_task(chat.generate(messages, lambda _: None, max_tokens=8))
    await asyncio.sleep(0.05)  # the first turn holds the model and waits for the voice
    second = await chat.generate(messages, lambda _: None, max_tokens=2)
    await first
    assert second.queue_wait_s < VOICE_WAIT_BUDGET_S / 2, second.queue_wait_s
    assert time.monotonic() - started < VOICE_WAIT_BUDGET_S * 1.5


def test_a_wait_for_the_voice_ends_with_the_voice_the_budget_or_a_stop() -> None:
    speaking_until = time.monotonic() + 0.1
    sharing = CoreSharing(1, 2, voice_busy=lambda: time.monotonic() < speaking_until)
    assert 0.09 <= sharing.wait_for_voice(threading.Event(), 5.0) < 1.0
    forever = CoreSharing(1, 2, voice_busy=lambda: True)
    assert 0.2 <= forever.wait_for_voice(threading.Event(), 0.2) < 0.7
    assert forever.wait_for_voice(threading.Event(), 0.0) == 0.0
    stopped = threading.Event()
    stopped.set()
    assert forever.wait_for_voice(stopped, 5.0) < 0.1


def test_the_llm_waits_only_for_a_voice_the_listener_waits_for() -> None:
    """The runtime's pools tell the LLM and the voice what runs (agent/app/runtime.py): an
    urgent chunk (the listener hears silence until it is ready) takes every core and makes
    the LLM wait only while nothing else runs; a later chunk, spoken on its own thread, or
    another session's turn on its way to the model, leaves it one thread and the LLM
    writing."""
    from agent.app.runtime import Executors

    executors = Executors.create()
    urgent_done, later_done, recognized = threading.Event(), threading.Event(), threading.Event()
    try:
        assert executors.models_idle() and not executors.only_an_urgent_voice_busy()
        urgent = executors.tts_urgent.submit(urgent_done.wait)
        assert executors.only_an_urgent_voice_busy() and executors.idle_but_the_urgent_voice()
        later = executors.tts.submit(later_done.wait)
        assert not executors.only_an_urgent_voice_busy()
        assert not executors.idle_but_the_urgent_voice()
        later_done.set()
        later.result(timeout=5)
        _until(executors.only_an_urgent_voice_busy)
        assert executors.only_an_urgent_voice_busy()
        recognizing = executors.stt.submit(recognized.wait)
        assert not executors.only_an_urgent_voice_busy()
        urgent_done.set()
        recognized.set()
        for future in (urgent, recognizing):
            future.result(timeout=5)
        _until(executors.models_idle)  # a pool counts a call done in its done callback
        assert executors.models_idle()
    finally:
        for event in (urgent_done, later_done, recognized):
            event.set()
        executors.shutdown()


def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)


async def test_cancel_stops_generation_at_the_next_token(chat: ChatModel) -> None:
    deltas: list[str] = []
    first_delta = asyncio.Event()

    def on_delta(delta: str) -> None:
        deltas.append(delta)
        first_delta.set()

    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Talk."}]
    task = asyncio.create_task(chat.generate(messages, on_delta, max_tokens=2000))
    await first_delta.wait()
    task.cancel()
    seen_at_cancel = len(deltas)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deltas) - seen_at_cancel <= 3, "generation ran on after the cancel"
    # The model is free again for the next turn.
    again = await chat.generate(messages, lambda _: None, max_tokens=4)
    assert again.queue_wait_s < 1.0


async def test_concurrent_turns_take_the_model_in_turn(chat: ChatModel) -> None:
    """One generation at a time: a reply gives the model to a waiting turn only once it has
    written a whole sentence (the tiny model's random words may hold some)."""
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi."}]
    deltas: list[tuple[str, str]] = []

    def recorder(name: str) -> Callable[[str], None]:
        return lambda piece: deltas.append((name, piece))

    a, b = await asyncio.gather(
        chat.generate(list(messages), recorder("a"), max_tokens=16),
        chat.generate(list(messages), recorder("b"), max_tokens=16),
    )
    order = [name for name, _ in deltas]
    assert set(order) == {"a", "b"}, order
    written = {"a": "", "b": ""}
    for (name, piece), (after, _) in zip(deltas, [*deltas[1:], ("", "")], strict=True):
        written[name] += piece
        if after and after != name and len(written[name]) < len((a, b)[name == "b"].text):
            assert _SENTENCE_BOUNDARY.search(written[name]), (name, written[name])
    assert (written["a"], written["b"]) == (a.text, b.text)


@pytest.mark.slow
async def test_a_reply_gives_the_model_to_a_waiting_turn_between_sentences(
    small_models: Path,
) -> None:
    """With the real SmolLM2, greedy: a long reply gives the model to a turn that waits for
    it at its first sentence's end, the other turn's first words come before the rest of
    the long reply, and the long reply then goes on exactly as it would have alone (its
    context, the sentence written so far included, saved and restored: nothing stale)."""
    resolved = resolve_models(ModelConfig(models_dir=small_models, profile="small", offline=True))
    llama = load_llama(resolved.llm, 2048, detect_device("cpu"))
    chat = ChatModel(llama, max_reply_tokens=80, temperature=0.0)
    long_ask = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me about the ocean in four sentences."},
    ]
    short_ask = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello."},
    ]
    try:
        alone = await chat.generate(list(long_ask), lambda _: None, conversation=_Owner())
        assert len(list(_SENTENCE_BOUNDARY.finditer(alone.text))) >= 2, alone.text
        order: list[str] = []
        other: asyncio.Task[Generation] | None = None

        def on_long(piece: str) -> None:
            nonlocal other
            order.append("long")
            if other is None:
                other = asyncio.create_task(
                    chat.generate(
                        list(short_ask), lambda _: order.append("short"), conversation=_Owner()
                    )
                )

        shared = await chat.generate(list(long_ask), on_long, conversation=_Owner())
        assert other is not None
        short = await other
    finally:
        chat.close()
    assert shared.text == alone.text
    first_short = order.index("short")
    assert 0 < first_short < len(order) - order[::-1].index("long") - 1, order
    assert short.queue_wait_s < 2.0 and short.text


class _Owner:
    """A conversation, as the model's saved contexts know it (weakly referenced)."""


async def test_long_conversation_trims_rarely_and_keeps_its_prefix(tiny_models: Path) -> None:
    resolved = resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    chat = ChatModel(load_llama(resolved.llm, 512, detect_device("cpu")), max_reply_tokens=16)
    try:
        history = ChatHistory("You are a test.")
        full_evaluations = 0
        trims: list[int] = []
        for turn in range(40):
            history.add_user(f"Question number {turn}: what do you think about the weather?")
            generation = await chat.generate(history.for_prompt(), lambda _: None)
            history.drop_oldest(generation.dropped_messages)
            if generation.dropped_messages:
                trims.append(turn)
            history.add_assistant("I think the weather is quite nice today, thank you.")
            assert generation.prompt_tokens <= 512 - 16
            if generation.prompt_tokens_evaluated > generation.prompt_tokens // 2:
                full_evaluations += 1
        # Each trim cuts deep (to TRIM_TO of the context), so the prompt's beginning, and the
        # cached prefix with it, changes on a few turns only, not on every turn once full.
        turns_since_full = 40 - trims[0]
        assert len(trims) <= turns_since_full // 3, trims
        assert full_evaluations <= len(trims) + 1, (full_evaluations, trims)
        assert history.messages[0]["content"] == "You are a test."
        assert len(history.messages) < 2 * 40
    finally:
        chat.close()


def greedy_chat(tiny_models: Path, n_ctx: int, saved_context_bytes: int = 2 * 1024**3) -> ChatModel:
    """A ChatModel over a Llama of its own: the loader shares one `Llama` per file and
    context length within the process, so a distinct `n_ctx` gives a distinct one."""
    resolved = resolve_models(ModelConfig(models_dir=tiny_models, profile="tiny", offline=True))
    llama = load_llama(resolved.llm, n_ctx, detect_device("cpu"))
    return ChatModel(
        llama, max_reply_tokens=12, temperature=0.0, saved_context_bytes=saved_context_bytes
    )


async def talk(
    chat: ChatModel, history: ChatHistory, text: str, conversation: object | None
) -> Generation:
    history.add_user(text)
    generation = await chat.generate(
        history.for_prompt(), lambda _: None, conversation=conversation
    )
    history.add_assistant(generation.text)
    return generation


QUESTIONS = [
    "Hello there, how are you today? I wanted to ask you about the weather this week.",
    "And what about tomorrow, will it rain in the afternoon or stay dry?",
    "Thanks. One more thing: should I bring a coat to the station tonight?",
]


async def test_conversations_taking_turns_keep_their_own_evaluated_prefix(
    tiny_models: Path,
) -> None:
    """Two sessions alternate on the one model: each turn evaluates only its new words, as
    if it had the model to itself, and (greedy decoding) replies exactly the same words."""
    alone = greedy_chat(tiny_models, n_ctx=1536)
    shared = greedy_chat(tiny_models, n_ctx=1792)
    try:
        solo_history = ChatHistory("You are a test.")
        solo = [await talk(alone, solo_history, q, solo_history) for q in QUESTIONS]

        a, b = ChatHistory("You are a test."), ChatHistory("You are another test, for B.")
        interleaved: list[Generation] = []
        for question in QUESTIONS:
            interleaved.append(await talk(shared, a, question, a))
            await talk(shared, b, "Tell me a long story about " + question, b)
        assert [g.text for g in interleaved] == [g.text for g in solo]
        assert [g.prompt_tokens for g in interleaved] == [g.prompt_tokens for g in solo]
        assert [g.prompt_tokens_evaluated for g in interleaved] == [
            g.prompt_tokens_evaluated for g in solo
        ]
        for later in interleaved[1:]:  # the history before the new question was kept
            assert later.prompt_tokens_evaluated < later.prompt_tokens * 0.6, later
    finally:
        alone.close()
        shared.close()


async def test_without_a_budget_for_saved_contexts_each_switch_evaluates_the_prompt(
    tiny_models: Path,
) -> None:
    """The control for the test above: nothing kept, every other turn starts over."""
    chat = greedy_chat(tiny_models, n_ctx=1280, saved_context_bytes=0)
    try:
        a, b = ChatHistory("You are a test."), ChatHistory("You are another test, for B.")
        for question in QUESTIONS[:2]:
            last_a = await talk(chat, a, question, a)
            await talk(chat, b, question, b)
        assert last_a.prompt_tokens_evaluated > last_a.prompt_tokens * 3 // 4
    finally:
        chat.close()


async def test_a_finished_conversation_frees_its_saved_context(tiny_models: Path) -> None:
    chat = greedy_chat(tiny_models, n_ctx=1024)
    try:
        a, b = ChatHistory("You are a test."), ChatHistory("You are another test.")
        await talk(chat, a, QUESTIONS[0], a)
        await talk(chat, b, QUESTIONS[0], b)  # a's context is saved now
        assert chat.saved_context_bytes > 0
        del a
        gc.collect()
        assert chat.saved_context_bytes == 0
    finally:
        chat.close()
