"""Seq2seq family: Whisper (`AutoModelForSpeechSeq2Seq`), the production default.

A real deployment loads a pretrained checkpoint (e.g. `openai/whisper-small`) from its registry
URI. For tests, `build_whisper_model` makes a tiny Whisper from a config with a byte-level
tokenizer built offline — same special tokens, same generate path, no download.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    AutoModelForSpeechSeq2Seq,
    LogitsProcessor,
    LogitsProcessorList,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from stt_flywheel.errors import InputError
from stt_flywheel.models.base import Scored, SpeechModel, resolve_device
from stt_flywheel.models.confidence import PieceWord, read_temperature
from stt_flywheel.scoring.languages import language_code as known_language

__all__ = ["WHISPER_SHAPES", "Seq2SeqSpeechModel", "build_whisper_model"]

# Whisper's special tokens in its own order, every language's among them
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    *(f"<|{code}|>" for code in LANGUAGES),
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
]


# Whisper's timestamp tokens, 0.00 s to 30.00 s in steps of 20 ms, right after <|notimestamps|>:
# what its long-form generation predicts to know where in the audio a segment ends
TIMESTAMP_TOKENS = [f"<|{k * 0.02:.2f}|>" for k in range(1501)]


def build_whisper_tokenizer(timestamps: bool = True) -> WhisperTokenizer:
    """Byte-level tokenizer with no merges (one token per byte) plus Whisper's special tokens and,
    unless `timestamps` is False, its timestamp tokens (as the published tokenizers have them)."""
    tokens = [*sorted(ByteLevel.alphabet()), *SPECIAL_TOKENS, *(TIMESTAMP_TOKENS if timestamps else [])]
    vocab = {ch: i for i, ch in enumerate(tokens)}
    return WhisperTokenizer(
        vocab=vocab,
        merges=[],
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        language="english",
        task="transcribe",
        predict_timestamps=False,
    )


# Published Whisper shapes (d_model, layers, heads, vocabulary, decoder positions), for models built
# from a config with random weights: what the trainer benchmark measures without a download.
WHISPER_SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 384, "layers": 4, "heads": 6, "vocab_size": 51865, "max_target_positions": 448},
    "base": {"d_model": 512, "layers": 6, "heads": 8, "vocab_size": 51865, "max_target_positions": 448},
    "small": {"d_model": 768, "layers": 12, "heads": 12, "vocab_size": 51865, "max_target_positions": 448},
}


def build_whisper_model(
    d_model: int = 64,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    vocab_size: int | None = None,
    max_target_positions: int = 128,
    timestamps: bool = True,
) -> Seq2SeqSpeechModel:
    """A Whisper initialised from scratch. `vocab_size` above the byte tokenizer's size gives the
    embedding and output layer a production model's width (the extra ids are never produced by
    the tokenizer); `WHISPER_SHAPES` holds the published sizes. Without `timestamps` its tokenizer
    has no timestamp tokens, so it cannot generate long-form and long audio is cut into pieces."""
    tokenizer = build_whisper_tokenizer(timestamps)
    ids: dict[str, int] = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}  # type: ignore[misc]
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=d_model * 4,
        decoder_ffn_dim=d_model * 4,
        max_target_positions=max_target_positions,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config)
    # The keys Whisper's own generate() reads (set as attributes: they are not GenerationConfig fields).
    whisper_generation = {
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "lang_to_id": {f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        "language": "en",
        "task": "transcribe",
        "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "is_multilingual": True,
        "max_length": 64,
        "suppress_tokens": [],
        "begin_suppress_tokens": [],
        "forced_decoder_ids": None,
        "_from_model_config": False,  # else the Whisper-specific keys are dropped when the model is loaded
    }
    for key, value in whisper_generation.items():
        setattr(model.generation_config, key, value)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )
    return Seq2SeqSpeechModel(model, processor)


class Seq2SeqSpeechModel(SpeechModel):
    family = "seq2seq"
    feature_time_axis = 2
    max_new_tokens = 96
    # the decoder's key/value cache while generating: "dynamic" grows it token by token; "static"
    # allocates it once at its full length, which lets a compiled forward (CUDA graphs) be reused
    # for every token; the same transcripts either way (tested)
    generation_cache = "dynamic"

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto") -> Seq2SeqSpeechModel:
        model = AutoModelForSpeechSeq2Seq.from_pretrained(str(model_dir))
        speech = cls(model, WhisperProcessor.from_pretrained(str(model_dir)), device=resolve_device(device))
        speech.temperature = read_temperature(model_dir)
        return speech

    @property
    def window_s(self) -> float | None:
        return float(self.processor.feature_extractor.chunk_length)

    @property
    def long_form(self) -> bool:
        """Whether it can transcribe audio longer than its window itself: Whisper's sequential
        long-form generation, which needs the timestamp tokens right after <|notimestamps|>."""
        tokenizer = self.processor.tokenizer
        no_timestamps = getattr(self.model.generation_config, "no_timestamps_token_id", None)
        return no_timestamps is not None and tokenizer.convert_tokens_to_ids("<|0.00|>") == no_timestamps + 1

    def _features(self, audios: Sequence[np.ndarray]) -> torch.Tensor:
        out = self.processor.feature_extractor(
            list(audios), sampling_rate=16_000, return_tensors="pt", device=self.feature_device
        )
        return out["input_features"].cpu()

    @property
    def language(self) -> str:
        """The language it transcribes by default (a code: "en"), kept in its generation config."""
        return str(getattr(self.model.generation_config, "language", None) or "en")

    @property
    def task(self) -> str:
        return str(getattr(self.model.generation_config, "task", None) or "transcribe")

    def configure_language(self, language: str, task: str) -> None:
        self.model.generation_config.language = language_code(language)
        if task not in ("transcribe", "translate"):
            raise InputError(f"task must be transcribe or translate, not {task!r}")
        self.model.generation_config.task = task

    def _generation(self) -> Any:
        limit = min(self.max_new_tokens, self.model.config.max_target_positions - 8)
        generation = copy.deepcopy(self.model.generation_config)
        generation.max_new_tokens, generation.max_length = limit, None
        if self.generation_cache == "static":
            generation.cache_implementation = "static"
        return generation

    def _decode(self, ids: torch.Tensor) -> list[str]:
        # timestamp tokens are dropped by the tokenizer's decode, special tokens by skip_special_tokens
        return [t.strip() for t in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def _transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[str]:
        features = self._features(audios).to(self.device, dtype=self.model.dtype)
        ids = self.model.generate(
            features, generation_config=self._generation(), language=self.language, task=self.task
        )
        return self._decode(ids)

    def _score_batch(self, audios: Sequence[np.ndarray], temperatures: Sequence[float]) -> list[Scored]:
        features = self._features(audios).to(self.device, dtype=self.model.dtype)
        recorder = ChosenLogProbs(temperatures)
        ids = self.model.generate(
            features,
            generation_config=self._generation(),
            language=self.language,
            task=self.task,
            logits_processor=LogitsProcessorList([recorder]),
        ).cpu()
        chosen, log_probs = recorder.steps()
        texts = self._decode(ids)
        generated = ids[:, ids.shape[1] - chosen.shape[1] :]  # the tokens the steps chose, after the prompt
        return [(text, self._words(generated[b], chosen[b], log_probs[b])) for b, text in enumerate(texts)]

    def _words(self, tokens: torch.Tensor, chosen: torch.Tensor, log_probs: torch.Tensor) -> list[PieceWord]:
        """A generated row's words: a word begins at a token that begins with a space; the added
        tokens (special and timestamp ones, which the decoded text leaves out) are no part of one."""
        tokenizer = self.processor.tokenizer
        special = set(tokenizer.added_tokens_decoder)
        eos = self.model.generation_config.eos_token_id
        groups: list[tuple[list[str], list[torch.Tensor]]] = []
        for token, best, lp in zip(tokens.tolist(), chosen.tolist(), log_probs, strict=True):
            if token == eos:
                break
            if token != best:  # the recorder saw other scores than the ones decoding chose by
                raise RuntimeError("word confidence: a generation step chose a token the recorder did not")
            piece = tokenizer.convert_ids_to_tokens(token)
            if token in special or _TIMESTAMP.fullmatch(piece):
                continue
            if not groups or piece.startswith(_SPACE):
                groups.append(([], []))
            groups[-1][0].append(piece)
            groups[-1][1].append(lp)
        out = []
        for pieces, lps in groups:
            word = tokenizer.convert_tokens_to_string(pieces).strip()
            if word:
                out.append(PieceWord(word, None, None, torch.stack(lps).mean(dim=0).numpy()))
        return out

    def _transcribe_long_batch(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Audio longer than the window, through Whisper's sequential long-form generation: a
        30-s window is decoded with timestamps, the next starts where its last complete segment
        ended (not where the window did), and so on to the end of each recording."""
        out = self.processor.feature_extractor(
            list(audios),
            sampling_rate=16_000,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
            device=self.feature_device,
        )
        ids = self.model.generate(
            out["input_features"].to(self.device, dtype=self.model.dtype),
            attention_mask=out["attention_mask"].to(self.device),
            generation_config=self._generation(),
            language=self.language,
            task=self.task,
            return_timestamps=True,
        )
        return self._decode(ids)

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = self._features([np.asarray(e["audio"], dtype=np.float32) for e in examples])
        # the text as the user wrote it: Whisper writes casing and punctuation, and a model trained
        # on normalised targets would unlearn them while every normalised-WER gate passes it
        # Each target starts with the prompt Whisper decodes from: <|startoftranscript|>, the
        # example's language (its `language` field, else the model's), the task, <|notimestamps|>.
        tokenizer = self.processor.tokenizer
        rows: list[list[int]] = []
        for e in examples:
            tokenizer.set_prefix_tokens(
                language=language_code(e.get("language") or self.language), task=self.task
            )
            rows.append(tokenizer(" " + " ".join(str(e["text"]).split())).input_ids)
        tokenizer.set_prefix_tokens(language=self.language, task=self.task)
        labels = torch.full((len(rows), max(map(len, rows))), -100, dtype=torch.long)
        for k, row in enumerate(rows):
            labels[k, : len(row)] = torch.tensor(row)
        # The model prepends the decoder start token itself when it shifts labels right.
        if (labels[:, 0] == self.model.config.decoder_start_token_id).all():
            labels = labels[:, 1:]
        return {"input_features": features, "labels": labels}


_SPACE = "\u0120"  # a space as byte-level tokens write it ("Ġ")
_TIMESTAMP = re.compile(r"<\|\d+\.\d+\|>")


class ChosenLogProbs(LogitsProcessor):
    """Records, at each generation step, the token greedy decoding chooses (the most probable
    after every other processor: a custom processor runs last) and its log probability at each
    temperature. It changes no score."""

    def __init__(self, temperatures: Sequence[float]) -> None:
        self.temperatures = tuple(temperatures)
        self._chosen: list[torch.Tensor] = []
        self._log_probs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        z = scores.float()
        self._chosen.append(z.argmax(dim=-1))
        self._log_probs.append(
            torch.stack([torch.log_softmax(z / t, dim=-1).amax(dim=-1) for t in self.temperatures], dim=-1)
        )
        return scores

    def steps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, steps) chosen tokens and (batch, steps, temperatures) their log probabilities."""
        if not self._chosen:
            return torch.zeros((0, 0), dtype=torch.long), torch.zeros((0, 0, len(self.temperatures)))
        return torch.stack(self._chosen, dim=1).cpu(), torch.stack(self._log_probs, dim=1).cpu()


def language_code(language: str) -> str:
    """A Whisper language as its code: "de", "de-AT", "German" and "german" are "de"; unknown is an error."""
    code = known_language(language)
    if code is None:
        raise InputError(f"unknown language {language!r} (Whisper's codes, e.g. en, de, fr, or names)")
    return code
