"""A seeded mutator of POST /offer bodies, and the oracle that says what each body deserves.

Mutations start from real offers (Chrome's, captured from the web page, and aiortc's) and
range from junk bytes to one changed SDP token. Some of them leave a perfectly valid offer
(deleting an `a=extmap` line harms nothing), so each case is judged by `expected_statuses`,
which restates the documented contract (README, HTTP API) on its own: a body over the size
cap gets 413; a body that is not a JSON offer, or whose SDP breaks the contract, gets 400;
only an offer that keeps the contract may get 200 (or 400 when aiortc itself refuses it).
It uses aiortc's SDP parser, because "parses" means what the server's peer can read, but
none of signaling.offer: a validator loosened by mistake shows up as a 200 for junk.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp

MAX_OFFER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Case:
    kind: str
    body: bytes
    chunked: bool = False
    """Sent without Content-Length: the size cap must hold while the body is read."""


# -- the oracle -------------------------------------------------------------------------


def offer_sdp(body: bytes) -> str | None:
    """The SDP of a body that is a well-formed JSON offer, else None."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(payload, dict):
        return None
    sdp, type_ = payload.get("sdp"), payload.get("type")
    if not isinstance(sdp, str) or type_ != "offer":
        return None
    return sdp


def keeps_contract(sdp: str) -> bool:
    """One audio section that sends Opus, nothing but audio and data, a mid of its own for
    every section (JSEP) and BUNDLE groups of those mids only, ICE credentials and a DTLS
    fingerprint, in an SDP that starts with v=0 and that aiortc can parse."""
    if not sdp.strip().startswith("v=0"):
        return False
    try:
        description = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception:  # whatever the parser's internals raise: it cannot read it
        return False
    kinds = [m.kind for m in description.media]
    if kinds.count("audio") != 1 or any(k not in ("audio", "application") for k in kinds):
        return False
    mids = [m.rtp.muxId for m in description.media]
    if "" in mids or len(set(mids)) != len(mids):
        return False
    if any(set(g.items) - set(mids) for g in description.group if g.semantic == "BUNDLE"):
        return False
    audio = next(m for m in description.media if m.kind == "audio")
    return (
        audio.direction in (None, "sendrecv", "sendonly")
        and any(c.mimeType.lower() == "audio/opus" for c in audio.rtp.codecs)
        and audio.ice is not None
        and bool(audio.ice.usernameFragment)
        and bool(audio.ice.password)
        and audio.dtls is not None
        and bool(audio.dtls.fingerprints)
    )


def expected_statuses(case: Case) -> frozenset[int]:
    if len(case.body) > MAX_OFFER_BYTES:
        return frozenset({413})
    sdp = offer_sdp(case.body)
    if sdp is None or not keeps_contract(sdp):
        return frozenset({400})
    return frozenset({200, 400})


# -- helpers over SDP lines ---------------------------------------------------------------


def lines_of(sdp: str) -> list[str]:
    return [line for line in sdp.split("\r\n") if line]


def join(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


def offer_body(sdp: str) -> bytes:
    return json.dumps({"sdp": sdp, "type": "offer"}).encode()


def opus_payload_type(sdp: str) -> str:
    for line in lines_of(sdp):
        if line.startswith("a=rtpmap:") and "opus/" in line.lower():
            return line[len("a=rtpmap:") :].split()[0]
    raise ValueError("the seed offer has no Opus")


JUNK_VALUES = [
    "", "-1", "0", "65536", "99999999999999999999999", "NaN", "1e309", "\x00", "\x7f", "é",
    "\u202e", "\ufeff", "x" * 2000, "::::", "%s%n%x", "<script>", "../../etc/passwd", "\t",
    " ", "a=b", "\\r\\n", "null",
]  # fmt: skip

JUNK_LINES = [
    "a=rtpmap:abc opus/48000/2", "a=rtpmap:111", "a=rtpmap:111 opus/abc/2",
    "a=rtpmap:0 PCMU/8000/2/4", "a=fmtp:111", "a=fmtp:abc x=1", "a=candidate:",
    "a=candidate:1 1 udp x 1.2.3.4 9 typ host", "a=candidate:1 1 udp 1 999.1.1.1 9 typ host",
    "a=candidate:1 1 udp 1 1.2.3.4 99999999 typ host", "a=candidate:1 x udp 1 1.2.3.4 9 typ",
    "a=ssrc:abc", "a=ssrc:99999999999 cname:x", "a=ssrc-group:FID x y", "a=setup:bogus",
    "a=mid:", "a=group:BUNDLE 0 1 2 3 99", "a=extmap:x", "a=extmap:99999 urn:x",
    "a=rtcp:abc", "a=rtcp:9 IN IP9 x", "a=rtcp-fb:*", "a=rtcp-fb:111", "c=IN IP4",
    "c=IN IP9 x", "b=AS:-1", "b=", "a=sctp-port:abc", "a=max-message-size:-5",
    "a=msid-semantic:", "a=msid:", "a=sctpmap:5000 webrtc-datachannel 99999999999",
    "m=audio", "m=", "m=audio x UDP/TLS/RTP/SAVPF 111", "m=application abc", "a=", "=", "x",
    "a=ice-options:", "a=fingerprint:sha-256", "a=fingerprint:md5 00", "a=fingerprint: ",
    "a=ice-ufrag:", "a=ice-pwd:", "o=- x x IN IP4", "s=", "t=x y", "a=end-of-candidates",
    "a=recvonly", "a=inactive", "a=ptime:-20", "a=maxptime:0", "a=rid:x send",
    "a=simulcast:send x", "a=identity:x", "a=" + "y" * 3000,
]  # fmt: skip

ODD_CANDIDATES = [
    "a=candidate:1 1 udp 2122260223 0.0.0.0 9 typ host",
    "a=candidate:1 1 udp 2122260223 255.255.255.255 1 typ host",
    "a=candidate:1 1 udp 2122260223 127.0.0.1 0 typ host",
    "a=candidate:1 1 udp 4294967295 127.0.0.1 65535 typ host",
    "a=candidate:1 1 udp 1 ::1 9 typ host",
    "a=candidate:1 1 udp 1 fe80::1 9 typ host",
    "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active",
    "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype bogus",
    "a=candidate:1 1 udp 1 203.0.113.7 3478 typ srflx raddr 0.0.0.0 rport 0",
    "a=candidate:1 1 udp 1 203.0.113.7 3478 typ relay raddr 10.0.0.1 rport 9",
    "a=candidate:1 1 udp 1 not-an-address.example 9 typ host",
    "a=candidate:1 2 udp 1 127.0.0.1 9 typ host",
    "a=candidate:1 1 udp 1 127.0.0.1 9 typ prflx",
    "a=candidate:1 1 udp 1 127.0.0.1 9 typ host generation 0 network-id 1 network-cost 999",
]  # fmt: skip


# -- mutations --------------------------------------------------------------------------
# Each takes the random source and a seed offer's SDP and returns one case.

Mutation = Callable[[random.Random, str], Case]


def random_bytes(rng: random.Random, sdp: str) -> Case:
    return Case("random_bytes", rng.randbytes(rng.randint(0, 4096)))


def json_shape(rng: random.Random, sdp: str) -> Case:
    wrong_type = rng.choice(["answer", "pranswer", "rollback", "OFFER", "", "offer "])
    shapes: list[object] = [
        [sdp, "offer"], 5, "offer", None, True, {}, {"sdp": sdp}, {"type": "offer"},
        {"sdp": 5, "type": "offer"}, {"sdp": None, "type": "offer"},
        {"sdp": [sdp], "type": "offer"}, {"sdp": {"v": 0}, "type": "offer"},
        {"sdp": sdp, "type": 1}, {"sdp": sdp, "type": wrong_type},
        {"SDP": sdp, "TYPE": "offer"}, {"offer": {"sdp": sdp, "type": "offer"}},
    ]  # fmt: skip
    return Case("json_shape", json.dumps(rng.choice(shapes)).encode())


def json_truncated(rng: random.Random, sdp: str) -> Case:
    body = offer_body(sdp)
    return Case("json_truncated", body[: rng.randrange(len(body))])


def json_deep(rng: random.Random, sdp: str) -> Case:
    """Deep nesting: a recursive parser that is not guarded fails with RecursionError."""
    depth = rng.randint(1_000, 30_000)
    inner = "[" * depth + "]" * depth
    template = rng.choice(['{{"sdp": {0}, "type": "offer"}}', "{0}", '{{"type": {0}}}'])
    return Case("json_deep", template.format(inner).encode())


def bad_utf8(rng: random.Random, sdp: str) -> Case:
    body = offer_body(sdp)
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xf8\x88\x80\x80"])
    at = rng.randrange(len(body) + 1)
    return Case("bad_utf8", body[:at] + bad + body[at:])


def oversized(rng: random.Random, sdp: str) -> Case:
    extra = MAX_OFFER_BYTES + rng.randint(1, 64 * 1024)
    if rng.random() < 0.5:
        padded = sdp + "a=x-padding:" + "p" * extra + "\r\n"
        body = offer_body(padded)
    else:
        body = offer_body(sdp) + b" " * extra  # valid JSON, but too long
    return Case("oversized", body, chunked=rng.random() < 0.5)


REQUIRED_PREFIXES = ("v=", "m=audio", "a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")


def drop_required(rng: random.Random, sdp: str) -> Case:
    prefix = rng.choice([*REQUIRED_PREFIXES, f"a=rtpmap:{opus_payload_type(sdp)} "])
    kept = [line for line in lines_of(sdp) if not line.startswith(prefix)]
    return Case("drop_required", offer_body(join(kept)))


def break_required(rng: random.Random, sdp: str) -> Case:
    lines = lines_of(sdp)
    pt = opus_payload_type(sdp)
    audio_at = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
    section_end = next(
        (i for i in range(audio_at + 1, len(lines)) if lines[i].startswith("m=")), len(lines)
    )
    choice = rng.randrange(8)
    if choice == 0:
        lines = [("a=ice-ufrag:" if x.startswith("a=ice-ufrag:") else x) for x in lines]
    elif choice == 1:
        lines = [("a=ice-pwd:" if x.startswith("a=ice-pwd:") else x) for x in lines]
    elif choice == 2:
        lines = [("a=fingerprint:" if x.startswith("a=fingerprint:") else x) for x in lines]
    elif choice == 3:
        lines = [
            x.replace("opus/", "opux/") if x.startswith(f"a=rtpmap:{pt} ") else x for x in lines
        ]
    elif choice == 4:
        lines[audio_at] = lines[audio_at].replace("m=audio", "m=video", 1)
    elif choice == 5:
        direction = rng.choice(["a=recvonly", "a=inactive"])
        section = [x for x in lines[audio_at:section_end] if x not in ("a=sendrecv", "a=sendonly")]
        lines = [*lines[:audio_at], *section, direction, *lines[section_end:]]
    elif choice == 6:
        lines = lines + lines[audio_at:section_end]  # a second audio section
    else:
        lines = [*lines, "m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0",
                 "a=rtpmap:96 VP8/90000"]  # fmt: skip
    return Case("break_required", offer_body(join(lines)))


def delete_lines(rng: random.Random, sdp: str) -> Case:
    lines = lines_of(sdp)
    for _ in range(rng.randint(1, 5)):
        if lines:
            del lines[rng.randrange(len(lines))]
    return Case("delete_lines", offer_body(join(lines)))


def duplicate_lines(rng: random.Random, sdp: str) -> Case:
    lines = lines_of(sdp)
    for _ in range(rng.randint(1, 5)):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
    return Case("duplicate_lines", offer_body(join(lines)))


def shuffle_lines(rng: random.Random, sdp: str) -> Case:
    lines = lines_of(sdp)
    for _ in range(rng.randint(1, 4)):
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return Case("shuffle_lines", offer_body(join(lines)))


def junk_values(rng: random.Random, sdp: str) -> Case:
    """One to three tokens replaced by junk; a line's first token keeps its `a=name:`."""
    lines = lines_of(sdp)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(lines))
        tokens = lines[at].split(" ")
        k = rng.randrange(len(tokens))
        if k == 0:
            cut = max(tokens[0].find(":"), tokens[0].find("=")) + 1
            tokens[0] = tokens[0][:cut] + rng.choice(JUNK_VALUES)
        else:
            tokens[k] = rng.choice(JUNK_VALUES)
        lines[at] = " ".join(tokens)
    return Case("junk_values", offer_body(join(lines)))


def byte_flips(rng: random.Random, sdp: str) -> Case:
    chars = list(sdp)
    for _ in range(rng.randint(1, 20)):
        chars[rng.randrange(len(chars))] = chr(
            rng.choice([rng.randint(0, 127), rng.randint(128, 0xFFFF)])
        )
    # json.dumps escapes a lone surrogate (U+D800 to U+DFFF) as \udxxx, as a hostile client
    # would send one: UTF-8 cannot carry it raw.
    return Case("byte_flips", offer_body("".join(chars)))


def truncate_sdp(rng: random.Random, sdp: str) -> Case:
    return Case("truncate_sdp", offer_body(sdp[: rng.randrange(len(sdp))]))


def line_endings(rng: random.Random, sdp: str) -> Case:
    lines = lines_of(sdp)
    style = rng.randrange(5)
    if style == 0:
        text = "\n".join(lines) + "\n"
    elif style == 1:
        text = "\r".join(lines) + "\r"
    elif style == 2:
        text = "".join(
            line + rng.choice(["\r\n", "\n", "\r", "\n\r", "\r\n\r\n"]) for line in lines
        )
    elif style == 3:
        text = "".join(
            rng.choice(["", " ", "\t"]) + line + rng.choice(["", " ", "\t"]) + "\r\n"
            for line in lines
        )
    else:
        text = "\r\n".join(lines)  # no final line ending
    return Case("line_endings", offer_body(text))


def inject_lines(rng: random.Random, sdp: str) -> Case:
    lines = lines_of(sdp)
    for _ in range(rng.randint(1, 5)):
        lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(JUNK_LINES))
    return Case("inject_lines", offer_body(join(lines)))


def odd_candidates(rng: random.Random, sdp: str) -> Case:
    """Well-formed but odd remote candidates (never mDNS `.local` names: resolving one waits
    out aioice's 1 s timeout, which is the cost of a valid browser offer, not of junk)."""
    lines = [line for line in lines_of(sdp) if not line.startswith("a=candidate:")]
    audio_at = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
    picks = [rng.choice(ODD_CANDIDATES) for _ in range(rng.randint(1, 40))]
    lines[audio_at + 1 : audio_at + 1] = picks
    return Case("odd_candidates", offer_body(join(lines)))


def splice(rng: random.Random, sdp: str, other: str) -> Case:
    """The session part and media sections of two different offers, mixed."""

    def sections(text: str) -> list[list[str]]:
        out: list[list[str]] = [[]]
        for line in lines_of(text):
            if line.startswith("m="):
                out.append([])
            out[-1].append(line)
        return out

    a, b = sections(sdp), sections(other)
    media = a[1:] + b[1:]
    rng.shuffle(media)
    chosen = media[: rng.randint(1, len(media))]
    head = rng.choice([a[0], b[0]])
    return Case("splice", offer_body(join([line for part in [head, *chosen] for line in part])))


MUTATIONS: list[Mutation] = [
    random_bytes, json_shape, json_truncated, json_deep, bad_utf8, oversized, drop_required,
    break_required, delete_lines, duplicate_lines, shuffle_lines, junk_values, byte_flips,
    truncate_sdp, line_endings, inject_lines, odd_candidates,
]  # fmt: skip
"""Every mutation but `splice`, which needs two seeds."""

# Mutations that must never leave a valid offer: a 200 for one of them is a bug even if
# the oracle were wrong.
ALWAYS_INVALID = frozenset(
    {"random_bytes", "json_shape", "json_truncated", "json_deep", "bad_utf8", "oversized",
     "drop_required", "break_required"}
)  # fmt: skip


def generate(seeds: list[str], per_kind: int, seed: int = 0) -> list[Case]:
    """`per_kind` cases of every mutation (and of splice), over the seeds in turn."""
    rng = random.Random(seed)
    cases = []
    for mutation in MUTATIONS:
        for i in range(per_kind):
            cases.append(mutation(rng, seeds[i % len(seeds)]))
    for i in range(per_kind):
        cases.append(splice(rng, seeds[i % len(seeds)], seeds[(i + 1) % len(seeds)]))
    rng.shuffle(cases)
    return cases
