"""Speakable chunks from streamed LLM text: early first clause, whole sentences, no markup."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.stages.chunker import SpeechChunker, clean_for_speech, ends_sentence


def chunk_all(deltas: list[str], **kwargs: int) -> list[str]:
    chunker = SpeechChunker(**kwargs)
    chunks: list[str] = []
    for delta in deltas:
        chunks.extend(chunker.push(delta))
    return chunks + chunker.flush()


def tokens(text: str) -> list[str]:
    """Split roughly as an LLM tokenizer would: words with their leading space, punctuation."""
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


def no_space(text: str) -> str:
    """The text without whitespace, and without periods: the chunker gives a line that has
    no mark of its own one."""
    return "".join(text.split()).replace(".", "")


MARKDOWN_REPLY = (
    "**Sure!** Here's a *quick* overview:\n\n"
    "# Fruit\n"
    "- Apples 🍎 are __crisp__, e.g. Honeycrisp.\n"
    "* Pears cost $3.5 per kg.\n"
    "1. Ask Dr. Smith about `pip install`.\n"
    "2. See [the docs, please](https://example.com/a.b?x=1).\n"
    "```python\nprint(1)\n```\n"
    "That's all 👍🏽! Anything ~~else~~ | more?"
)

TEXTS = [
    "Hello, can you hear me? Yes, I can hear you well. Great!",
    "Sure. The meeting with Mr. Jones is at 3.30 p.m. tomorrow, i.e. Friday. Bring the U.S. "
    "forms... and the notes. Thanks!",
    "One two three four five six seven eight nine ten eleven. Twelve thirteen!",
    "Well... maybe not. I see... That works. Visit https://example.com/path.html today.",
    MARKDOWN_REPLY,
    "I think—honestly—it's fine. Paris is the capital of France; it's lovely: truly.",
]


def test_a_line_of_its_own_is_a_sentence() -> None:
    """A list's items end no sentence with a mark; said as sentences, they count against the
    reply's cap (a list used to run to the token ceiling in one breath)."""
    text = "Here are some ideas:\n\n1. Pasta with tomato sauce\n2. Grilled chicken,\n- Soup\n"
    chunks = chunk_all(tokens(text))
    assert chunks == [
        "Here are some ideas:",
        "Pasta with tomato sauce.",
        "Grilled chicken,",
        "Soup.",
    ]
    assert [ends_sentence(c) for c in chunks] == [False, True, False, True]
    assert chunk_all(tokens("Ends with no line break")) == ["Ends with no line break"]


def test_first_chunk_cut_at_a_comma() -> None:
    chunks = chunk_all(tokens("Well, the weather today is sunny, and warm. It will rain later."))
    assert chunks == ["Well, the weather today is sunny,", "and warm.", "It will rain later."]


def test_first_chunk_is_emitted_as_soon_as_the_comma_is_decided() -> None:
    chunker = SpeechChunker()
    assert chunker.push("The weather today") == []
    assert chunker.push(",") == []  # "1,000" or ", " ? not known yet
    assert chunker.push(" and") == ["The weather today,"]


def test_first_chunk_forced_at_max_words() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve. Next one."
    chunks = chunk_all(tokens(text), first_max_words=8)
    assert chunks == [
        "one two three four five six seven eight",
        "nine ten eleven twelve.",
        "Next one.",
    ]


def test_first_chunk_cut_at_max_words_ends_as_a_phrase() -> None:
    """The cap falls before the words that lead into the next phrase, never after them."""
    assert (
        chunk_all(tokens("It is a bit earlier than usual in Tokyo. Yes."), first_max_words=6)[0]
        == "It is a bit earlier"
    )
    assert chunk_all(tokens("Go to the store for the milk and eggs, please."), first_max_words=6)[
        :2
    ] == ["Go to the store", "for the milk and eggs, please."]
    # Never below the minimum: "I can" is too short a phrase to start on.
    assert chunk_all(tokens("I can and the of with a plan today."), first_max_words=6)[0] == (
        "I can and"
    )


def test_the_default_first_chunk_is_six_words_at_most() -> None:
    text = "The moon is approximately 384,400 kilometers away from Earth."
    assert chunk_all(tokens(text))[0] == "The moon is approximately 384,400 kilometers"


def test_short_first_sentence_waits_for_min_words() -> None:
    assert chunk_all(tokens("Yes. I can help with that. Sure thing."))[0] == (
        "Yes. I can help with that."
    )


def test_later_chunks_are_whole_sentences() -> None:
    text = "Hi there, friend. This one, with a comma; and a semicolon, stays whole! Right? Yes."
    assert chunk_all(tokens(text)) == [
        "Hi there, friend.",
        "This one, with a comma; and a semicolon, stays whole!",
        "Right?",
        "Yes.",
    ]


def test_numbers_abbreviations_ellipses_and_urls_are_not_split() -> None:
    text = (
        "It costs 3.5 dollars today. Mr. Smith and Dr. Who arrived, e.g. at 5 p.m. yesterday. "
        "J. R. R. Tolkien wrote it... well, mostly. Then 1,000 people read example.com/a.b today."
    )
    assert chunk_all(tokens(text)) == [
        "It costs 3.5 dollars today.",
        "Mr. Smith and Dr. Who arrived, e.g. at 5 p.m. yesterday.",
        "J. R. R. Tolkien wrote it... well, mostly.",
        "Then 1,000 people read example.com/a.b today.",
    ]


def test_ellipsis_before_a_capital_ends_a_sentence() -> None:
    text = "That is fine, really. I see... That works."
    assert chunk_all(tokens(text)) == ["That is fine,", "really.", "I see...", "That works."]


def test_markdown_and_emoji_are_removed() -> None:
    assert chunk_all(tokens(MARKDOWN_REPLY)) == [
        "Sure! Here's a quick overview:",
        "Fruit.",
        "Apples are crisp, e.g. Honeycrisp.",
        "Pears cost $3.5 per kg.",
        "Ask Dr. Smith about pip install.",
        "See the docs, please.",
        "print(1).",
        "That's all!",
        "Anything else more?",
    ]


def test_clean_for_speech_cases() -> None:
    assert clean_for_speech("**bold** and *italic* and `code` and ~~gone~~") == (
        "bold and italic and code and gone"
    )
    assert clean_for_speech("## Heading\n> quoted\n+ item\n3) third") == (
        "Heading quoted item third"
    )
    assert clean_for_speech("![a cat](cat.png) [link text](http://x.y)") == "a cat link text"
    assert clean_for_speech("snake_case and _under_") == "snake case and under"
    assert clean_for_speech("Nice 👍🏽, family 👨‍👩‍👧, flag 🇫🇷, keycap 1️⃣ ❤️!") == (
        "Nice, family, flag, keycap 1!"
    )
    assert clean_for_speech("It is 25°C | 77 °F\n---\n| a | b |") == "It is 25°C 77 °F a b"
    assert clean_for_speech("```\n```") == ""


def test_markers_split_across_deltas() -> None:
    chunker = SpeechChunker()
    out = chunker.push("*")
    out += chunker.push("*Bold")
    out += chunker.push(" words here*")
    out += chunker.push("*, then ")
    out += chunker.push("`co")
    out += chunker.push("de`. Done.")
    out += chunker.flush()
    assert out == ["Bold words here,", "then code.", "Done."]


@pytest.mark.parametrize("text", TEXTS)
def test_char_by_char_equals_token_by_token_equals_one_push(text: str) -> None:
    one_push = chunk_all([text])
    assert chunk_all(list(text)) == one_push
    assert chunk_all(tokens(text)) == one_push
    assert all(chunk and chunk == chunk.strip() for chunk in one_push)


@pytest.mark.parametrize("text", TEXTS)
def test_chunks_concatenate_to_the_cleaned_text(text: str) -> None:
    assert no_space("".join(chunk_all(tokens(text)))) == no_space(clean_for_speech(text))


def test_flush_resets_for_the_next_stream() -> None:
    chunker = SpeechChunker()
    assert chunker.push("# Title\nfirst reply") == ["Title."]
    assert chunker.flush() == ["first reply"]
    assert chunker.push("# Again\n") == ["Again."]
    assert chunker.flush() == []


def test_empty_and_symbol_only_input_emit_nothing() -> None:
    assert chunk_all(["", " ", "\n\n"]) == []
    assert chunk_all(["🎉🎉 ", "**", "\n", "---"]) == []


def split_points(text: str) -> st.SearchStrategy[list[str]]:
    cuts = st.lists(st.integers(min_value=0, max_value=len(text)), max_size=40)
    return cuts.map(lambda points: _split_at(text, points))


def _split_at(text: str, points: list[int]) -> list[str]:
    bounds = [0, *sorted(points), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), text=st.sampled_from(TEXTS))
def test_any_delta_split_gives_the_same_chunks(data: st.DataObject, text: str) -> None:
    deltas = data.draw(split_points(text))
    assert chunk_all(deltas) == chunk_all([text])


MARKUP_ALPHABET = st.sampled_from(
    [*"ab Z1.,;:!?-—*_`[]()#>\n~|'\"…", "Mr.", "e.g.", "3.5", " 1. ", "👍🏽", "```", "- "]
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), parts=st.lists(MARKUP_ALPHABET, max_size=40))
def test_any_delta_split_of_any_text_gives_the_same_chunks(
    data: st.DataObject, parts: list[str]
) -> None:
    text = "".join(parts)
    deltas = data.draw(split_points(text))
    chunks = chunk_all(deltas)
    assert chunks == chunk_all([text])
    assert all(chunks)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(MARKUP_ALPHABET, max_size=40))
def test_chunks_of_any_text_concatenate_to_its_cleaned_text(parts: list[str]) -> None:
    text = "".join(parts)
    assert no_space("".join(chunk_all([text]))) == no_space(clean_for_speech(text))
