"""The conversation's language, named once (`--language`) and translated here for each
model: Whisper wants its own code (mostly ISO 639-1), MMS-TTS wants ISO 639-3 (its hub
repositories are `facebook/mms-tts-<iso 639-3>`), the LLM wants a sentence in English
telling it which language to answer in.

Whisper covers the languages in the table below; MMS covers over a thousand. A three-letter
code outside the table is accepted for MMS, with Whisper left to detect the language.
"""

from __future__ import annotations

from dataclasses import dataclass

# Whisper code, ISO 639-3 code (what MMS names its models by), English name.
_TABLE = """
af afr Afrikaans|am amh Amharic|ar ara Arabic|as asm Assamese|az aze Azerbaijani
ba bak Bashkir|be bel Belarusian|bg bul Bulgarian|bn ben Bengali|bo bod Tibetan
br bre Breton|bs bos Bosnian|ca cat Catalan|cs ces Czech|cy cym Welsh|da dan Danish
de deu German|el ell Greek|en eng English|es spa Spanish|et est Estonian|eu eus Basque
fa fas Persian|fi fin Finnish|fo fao Faroese|fr fra French|gl glg Galician
gu guj Gujarati|ha hau Hausa|haw haw Hawaiian|he heb Hebrew|hi hin Hindi|hr hrv Croatian
ht hat Haitian Creole|hu hun Hungarian|hy hye Armenian|id ind Indonesian|is isl Icelandic
it ita Italian|ja jpn Japanese|jw jav Javanese|ka kat Georgian|kk kaz Kazakh|km khm Khmer
kn kan Kannada|ko kor Korean|la lat Latin|lb ltz Luxembourgish|ln lin Lingala|lo lao Lao
lt lit Lithuanian|lv lav Latvian|mg mlg Malagasy|mi mri Maori|mk mkd Macedonian
ml mal Malayalam|mn mon Mongolian|mr mar Marathi|ms msa Malay|mt mlt Maltese
my mya Burmese|ne nep Nepali|nl nld Dutch|nn nno Norwegian Nynorsk|no nor Norwegian
oc oci Occitan|pa pan Punjabi|pl pol Polish|ps pus Pashto|pt por Portuguese
ro ron Romanian|ru rus Russian|sa san Sanskrit|sd snd Sindhi|si sin Sinhala|sk slk Slovak
sl slv Slovenian|sn sna Shona|so som Somali|sq sqi Albanian|sr srp Serbian|su sun Sundanese
sv swe Swedish|sw swh Swahili|ta tam Tamil|te tel Telugu|tg tgk Tajik|th tha Thai
tk tuk Turkmen|tl tgl Tagalog|tr tur Turkish|tt tat Tatar|uk ukr Ukrainian|ur urd Urdu
uz uzb Uzbek|vi vie Vietnamese|yi yid Yiddish|yo yor Yoruba|zh cmn Chinese
yue yue Cantonese
"""


@dataclass(frozen=True)
class Language:
    whisper: str | None
    """Whisper's code; `None` for a language Whisper does not know (it then detects)."""
    iso3: str
    """ISO 639-3, as in `facebook/mms-tts-<iso3>`."""
    name: str
    """In English, for the LLM's instruction."""

    @property
    def is_english(self) -> bool:
        return self.iso3 == "eng"

    @property
    def reply_name(self) -> str:
        """How the LLM's instructions name this language."""
        return self.name or "the user's language"

    def reply_instruction(self) -> str:
        """The sentence added to a system prompt that does not name the language itself, so
        that replies come in this language."""
        if self.name:
            return f" Always answer in {self.name}, whatever language the user speaks."
        return " Always answer in the language the user speaks."


def _parse(table: str) -> dict[str, Language]:
    languages: dict[str, Language] = {}
    for item in table.replace("\n", "|").split("|"):
        if not item.strip():
            continue
        whisper, iso3, name = item.split(maxsplit=2)
        languages[whisper] = Language(whisper, iso3, name)
    return languages


WHISPER_LANGUAGES = _parse(_TABLE)
_BY_ISO3 = {language.iso3: language for language in WHISPER_LANGUAGES.values()}

ENGLISH = WHISPER_LANGUAGES["en"]


def parse_language(code: str) -> Language:
    """A Whisper code (`fr`), an ISO 639-3 code (`fra`) or an English name (`French`).

    Raises ValueError naming what is accepted."""
    text = code.strip()
    key = text.lower()
    if key in WHISPER_LANGUAGES:
        return WHISPER_LANGUAGES[key]
    if key in _BY_ISO3:
        return _BY_ISO3[key]
    for language in WHISPER_LANGUAGES.values():
        if language.name.lower() == key:
            return language
    if len(key) == 3 and key.isascii() and key.isalpha():
        # MMS speaks it; Whisper will have to detect it.
        return Language(None, key, "")
    raise ValueError(
        f"unknown language {code!r}: give a Whisper language code such as en, fr, de, es "
        f"(one of {len(WHISPER_LANGUAGES)}), or an ISO 639-3 code such as fra for MMS-TTS"
    )


__all__ = ["ENGLISH", "WHISPER_LANGUAGES", "Language", "parse_language"]
