"""LLM token deltas -> speakable chunks, with markdown, emoji and symbols removed.

The first chunk is cut as early as a clause boundary allows, so the voice starts soon; later
chunks are whole sentences, which a TTS voice phrases better. A first chunk with no clause
mark within `first_max_words` is cut there, but before the words that lead into the next
phrase ("It's a bit earlier | than usual", not "It's a bit earlier than | usual"): the voice
ends each chunk as a phrase, and a phrase does not end on "than", "with" or "the".

The chunks depend only on the text, never on how it was split into deltas: a cut is taken
only once the characters that decide it have arrived, and cut positions are searched in order
from the start of the pending text, stopping at the first one that cannot be decided yet.
Cleaning runs on each raw chunk; cuts fall only where cleaning a chunk on its own gives the
same result as cleaning the whole text (never inside a link's text or inline code).
"""

from __future__ import annotations

import re
import unicodedata

from agent.turntaking.endpoint import DANGLING_WORDS

CLAUSE_MARKS = ",;:"
SENTENCE_MARKS = ".!?…"
DASHES = "—–"
"""Em and en dash: a clause boundary with or without spaces around them."""
CLOSERS = "\"'”’»)]}*_~"
"""May follow sentence punctuation before the space: quotes, brackets, emphasis markers."""

ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "cf", "approx", "fig", "mt"}
)
"""Words whose period does not end a sentence. ("No." is left out on purpose: "I said no.")"""

_DOTTED_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]", re.IGNORECASE)
"""e.g, i.e, U.S, a.m (the final period is the candidate)."""
_WORD = re.compile(r"\S*[^\W_]\S*")
"""A whitespace-separated token with at least one letter or digit: markup alone is no word."""
_NOT_IN_WORD = re.compile(r"[^\w']|_")

_CODE_FENCE = re.compile(r"(?:```|~~~)[\w+#.-]*")
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\s]*\)")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+")
_BLOCKQUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_BULLET = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+")
_RULE_LINE = re.compile(r"^[ \t]*(?:[-*_=|:][ \t]*){3,}$")
_WORD_UNDERSCORE = re.compile(r"(?<=[^\W_])_+(?=[^\W_])")
"""snake_case reads as two words; other underscores are emphasis markers."""
_STRAY_MARKUP = re.compile(r"[*_~|`]")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[,.;:!?])")
_WHITESPACE = re.compile(r"\s+")

_DROPPED_CATEGORIES = frozenset({"So", "Sk", "Cs", "Co", "Me"})
"""Other symbols (emoji, dingbats), modifier symbols (skin tones), surrogates, private use,
enclosing marks (keycaps)."""
_KEPT_SYMBOLS = frozenset("°")
"""Symbols a voice reads usefully ("25 degrees")."""
_INVISIBLE_JOINERS = frozenset({"\u200d", "\u20e3"})


def clean_for_speech(text: str) -> str:
    """Remove what a TTS voice would read aloud but a listener should not hear."""
    return _clean(text, at_line_start=True)


def _clean(text: str, *, at_line_start: bool) -> str:
    """`at_line_start` says whether `text` begins a line of the whole reply: only then do
    heading, bullet and rule patterns apply to its first line."""
    text = _CODE_FENCE.sub(" ", text)
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if index == 0 and not at_line_start:
            continue
        if _RULE_LINE.match(line):
            lines[index] = ""
            continue
        line = _HEADING.sub("", line)
        line = _BLOCKQUOTE.sub("", line)
        lines[index] = _BULLET.sub("", line)
    text = "\n".join(lines)
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _WORD_UNDERSCORE.sub(" ", text)
    text = _STRAY_MARKUP.sub("", text)
    text = "".join(" " if _is_dropped_symbol(ch) else ch for ch in text)
    text = _WHITESPACE.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCTUATION.sub("", text)


def _is_dropped_symbol(char: str) -> bool:
    if char in _KEPT_SYMBOLS:
        return False
    if char in _INVISIBLE_JOINERS or 0xFE00 <= ord(char) <= 0xFE0F or ord(char) >= 0xE0000:
        return True  # ZWJ, keycap, variation selectors, tag characters
    return unicodedata.category(char) in _DROPPED_CATEGORIES


def ends_sentence(chunk: str) -> bool:
    """Does this chunk end a sentence (not only a clause)? Chunks are cut after sentence
    marks, clause marks, dashes, line breaks or `first_max_words`; only the first kind ends
    a sentence, and a line without a mark of its own is given a period."""
    return chunk.rstrip(CLOSERS + " ")[-1:] in SENTENCE_MARKS


def _count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_words(text: str) -> int:
    """Words as the first chunk's cap counts them: between spaces, with a letter or digit
    ("state-of-the-art" is one)."""
    return _count_words(text)


FIRST_CHUNK_MIN_WORDS = 3
"""A first chunk is cut at a clause mark only after this many words ("Well," alone is no
phrase to start a voice on)."""
FIRST_CHUNK_MAX_WORDS = 6
"""A first chunk with no clause mark is cut after this many words. The listener waits in
silence while the LLM writes it and the voice speaks it: in the bench (real small set, 2
cores, benchmarks/results/small/) 6 words rather than 8 took the first chunk from p50 123 to
83 and 78 ms (two runs) after the LLM's first token. Fewer would start the voice sooner
still, on shorter phrases."""


class SpeechChunker:
    """Feeds on token deltas; returns cleaned, non-empty chunks as soon as they are decided."""

    def __init__(
        self,
        first_min_words: int = FIRST_CHUNK_MIN_WORDS,
        first_max_words: int = FIRST_CHUNK_MAX_WORDS,
        *,
        end_on_phrase: bool = True,
    ) -> None:
        """`end_on_phrase`: a first chunk cut at `first_max_words` ends before the words that
        lead into the next phrase (for the voice; not for the copy guard's window)."""
        if not 1 <= first_min_words <= first_max_words:
            raise ValueError("need 1 <= first_min_words <= first_max_words")
        self.first_min_words = first_min_words
        self.first_max_words = first_max_words
        self.end_on_phrase = end_on_phrase
        self._pending = ""
        self._pushed = 0
        self._at_text_start = True
        self._first = True

    def push(self, delta: str) -> list[str]:
        """Chunks completed by this delta (often none)."""
        return [chunk for chunk, _ in self.push_spans(delta)]

    def push_spans(self, delta: str) -> list[tuple[str, int]]:
        """As `push`, each chunk with the length of the raw text (all deltas since the
        stream began) up to its end: what the model wrote for the chunks spoken so far."""
        self._pending += delta
        self._pushed += len(delta)
        chunks: list[tuple[str, int]] = []
        while (cut := self._find_cut()) is not None:
            chunk = self._emit(self._pending[:cut], ends_line=self._pending[cut] == "\n")
            self._pending = self._pending[cut:]
            if chunk:
                chunks.append((chunk, self._pushed - len(self._pending)))
        return chunks

    def discard(self) -> None:
        """Forget the pending text (an unfinished sentence cut by the token ceiling)."""
        self._reset()

    def flush(self) -> list[str]:
        """What remains at the end of the stream; the chunker is then ready for a new one."""
        return [chunk for chunk, _ in self.flush_spans()]

    def flush_spans(self) -> list[tuple[str, int]]:
        """As `flush`, with raw ends as `push_spans` gives them."""
        chunk = self._emit(self._pending)
        end = self._pushed
        self._reset()
        return [(chunk, end)] if chunk else []

    def _reset(self) -> None:
        self._pending = ""
        self._pushed = 0
        self._at_text_start = True
        self._first = True

    def _emit(self, raw: str, *, ends_line: bool = False) -> str:
        chunk = _clean(raw, at_line_start=self._at_text_start)
        self._at_text_start = False
        if (
            chunk
            and ends_line
            and chunk.rstrip(CLOSERS)[-1:] not in (SENTENCE_MARKS + CLAUSE_MARKS + DASHES)
        ):
            # A line of its own (a list item, a heading) is said as a sentence, and counts
            # as one against the reply's cap: a list used to run to the token ceiling.
            chunk += "."
        if chunk:
            self._first = False
        return chunk

    def _find_cut(self) -> int | None:
        """Earliest decided cut in the pending text, or None while the earliest candidate
        still waits for characters (or there is none)."""
        text = self._pending
        in_code = in_link_text = False
        index = 0
        while index < len(text):
            char = text[index]
            if char == "`":
                run_end = _run_end(text, index, "`")
                if run_end == len(text):
                    return None  # one backtick toggles code, three are a fence: wait
                if run_end - index < 3:
                    in_code = not in_code
                index = run_end
                continue
            if char == "\n":
                if _count_words(text[:index]) > 0:
                    return index
                in_code = in_link_text = False
            elif in_code:
                pass
            elif char == "[":
                in_link_text = True
            elif char == "]":
                in_link_text = False
            elif not in_link_text:
                verdict = self._candidate(text, index)
                if isinstance(verdict, _Undecided):
                    return None
                if isinstance(verdict, int):
                    return verdict
                index = verdict.resume_at
                continue
            index += 1
        return None

    def _candidate(self, text: str, index: int) -> int | _Skip | _Undecided:
        """A cut position, a position to resume scanning at, or undecided."""
        char = text[index]
        if char in SENTENCE_MARKS:
            run_end = _run_end(text, index, SENTENCE_MARKS)
            if run_end == len(text):
                return _UNDECIDED
            return self._sentence_candidate(text, index, run_end)
        if self._first and (
            char in CLAUSE_MARKS or char in DASHES or _is_spaced_hyphen(text, index)
        ):
            run_end = _run_end(text, index, DASHES) if char in DASHES else index + 1
            if _count_words(text[:index]) < self.first_min_words or not _line_has_words(
                text, index
            ):
                return _Skip(run_end)
            if char in DASHES:
                return run_end if run_end < len(text) else _UNDECIDED
            return _space_after_closers(text, run_end, default=_Skip(run_end))
        if self._first and char.isspace() and _count_words(text[:index]) >= self.first_max_words:
            if not self.end_on_phrase:
                return index
            return _before_leading_words(text, index, self.first_min_words)
        return _Skip(index + 1)

    def _sentence_candidate(self, text: str, index: int, run_end: int) -> int | _Skip | _Undecided:
        marks = text[index:run_end]
        skip = _Skip(run_end)
        if self._first and _count_words(text[:run_end]) < self.first_min_words:
            return skip
        if marks == "." and _is_abbreviation_or_list_marker(text, index, self._at_text_start):
            return skip
        is_ellipsis = "!" not in marks and "?" not in marks and marks != "."
        cut = _space_after_closers(text, run_end, default=skip)
        if not is_ellipsis or self._first or not isinstance(cut, int):
            return cut
        # "Well... maybe" goes on; "I see... That works" is a new sentence.
        next_word = _skip_whitespace(text, cut)
        if next_word == len(text):
            return _UNDECIDED
        return cut if text[next_word].isupper() else skip


class _Undecided:
    pass


_UNDECIDED = _Undecided()


class _Skip:
    __slots__ = ("resume_at",)

    def __init__(self, resume_at: int) -> None:
        self.resume_at = resume_at


def _run_end(text: str, start: int, members: str) -> int:
    end = start
    while end < len(text) and text[end] in members:
        end += 1
    return end


def _skip_whitespace(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end].isspace():
        end += 1
    return end


def _space_after_closers(text: str, start: int, *, default: _Skip) -> int | _Skip | _Undecided:
    """Cut after the closers that follow a mark, if whitespace comes next ("3.5", "1,000" and
    URLs have none); undecided while the text ends before that is known."""
    end = _run_end(text, start, CLOSERS)
    if end == len(text):
        return _UNDECIDED
    return end if text[end].isspace() else default


def _is_spaced_hyphen(text: str, index: int) -> bool:
    return (
        text[index] == "-"
        and index > 0
        and text[index - 1] == " "
        and (index + 1 >= len(text) or text[index + 1].isspace())
    )


def _before_leading_words(text: str, cut: int, min_words: int) -> int:
    """`cut`, moved back before the words that end the text there when they lead into the
    next phrase (`DANGLING_WORDS`: "with", "than", "the"), keeping at least `min_words`."""
    while True:
        head = text[:cut].rstrip()
        word_start = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t")) + 1
        bare = _NOT_IN_WORD.sub("", head[word_start:].lower())
        earlier = len(text[:word_start].rstrip())
        if bare not in DANGLING_WORDS or _count_words(text[:earlier]) < min_words:
            return cut
        cut = earlier


def _line_has_words(text: str, index: int) -> bool:
    """A dash after words on its line is a clause break; one that begins a line is a bullet."""
    return _count_words(text[text.rfind("\n", 0, index) + 1 : index]) > 0


def _is_abbreviation_or_list_marker(text: str, index: int, at_text_start: bool) -> bool:
    token_start = index
    while token_start > 0 and not text[token_start - 1].isspace():
        token_start -= 1
    token = text[token_start:index].lstrip("\"'“‘([{*_~")
    if token.lower() in ABBREVIATIONS or _DOTTED_ABBREVIATION.fullmatch(token):
        return True
    if len(token) == 1 and token.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    if token.isdigit():
        line_start = text.rfind("\n", 0, token_start)
        if line_start >= 0 or at_text_start:
            return not text[line_start + 1 : token_start].strip()  # "1. " opens a list item
    return False
