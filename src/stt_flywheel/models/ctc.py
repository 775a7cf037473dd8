"""CTC family: a Conformer encoder (`ParakeetForCTC`) on log-mel features, character vocabulary.

The character tokenizer is `Wav2Vec2CTCTokenizer` built from a vocabulary in this module, so a model
is created entirely offline. The tokenizer's pad token is the CTC blank.
"""

from __future__ import annotations

import json
import string
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoTokenizer,
    ParakeetCTCConfig,
    ParakeetFeatureExtractor,
    ParakeetForCTC,
    Wav2Vec2CTCTokenizer,
)

from stt_flywheel.models.base import Scored, SpeechModel, resolve_device
from stt_flywheel.models.confidence import PieceWord, read_temperature
from stt_flywheel.scoring.text import normalize

__all__ = ["CHARACTERS", "CTCProcessor", "CTCSpeechModel", "build_ctc_model"]

CHARACTERS = list(string.ascii_lowercase) + list(string.digits) + ["'"]


class CTCProcessor:
    """Feature extractor + character tokenizer, saved side by side in the model directory."""

    def __init__(self, feature_extractor: Any, tokenizer: Any) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    def save_pretrained(self, out_dir: str) -> None:
        self.feature_extractor.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)

    @classmethod
    def from_pretrained(cls, model_dir: str) -> CTCProcessor:
        return cls(AutoFeatureExtractor.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir))

    def features(self, audios: Sequence[np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
        return self.feature_extractor(
            list(audios),
            sampling_rate=16_000,
            return_tensors="pt",
            return_attention_mask=True,
            padding="longest",
            device=device,
        )

    def labels(self, texts: Sequence[str]) -> torch.Tensor:
        ids = [self.tokenizer(normalize(t)).input_ids for t in texts]
        width = max((len(x) for x in ids), default=0)
        out = torch.full((len(ids), max(width, 1)), -100, dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out


def build_ctc_processor() -> CTCProcessor:
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token="<unk>",
            pad_token="<pad>",
            word_delimiter_token="|",
            do_lower_case=False,
        )
    return CTCProcessor(ParakeetFeatureExtractor(feature_size=80), tokenizer)


def build_ctc_model(
    hidden_size: int = 144,
    num_layers: int = 4,
    num_heads: int = 4,
    conv_channels: int = 64,
    subsampling_factor: int = 4,
    seed: int = 0,
) -> CTCSpeechModel:
    """A small Conformer-CTC initialised from scratch (no download)."""
    processor = build_ctc_processor()
    torch.manual_seed(seed)
    encoder = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": hidden_size * 4,
        "subsampling_factor": subsampling_factor,
        "subsampling_conv_channels": conv_channels,
        "num_mel_bins": 80,
        "conv_kernel_size": 15,
        "dropout": 0.1,
        "layerdrop": 0.0,
        "max_position_embeddings": 3000,
    }
    config = ParakeetCTCConfig(
        vocab_size=len(processor.tokenizer),
        pad_token_id=processor.tokenizer.pad_token_id,
        encoder_config=encoder,
    )
    return CTCSpeechModel(ParakeetForCTC(config), processor)


class CTCSpeechModel(SpeechModel):
    family = "ctc"
    feature_time_axis = 1

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto") -> CTCSpeechModel:
        model = ParakeetForCTC.from_pretrained(str(model_dir))
        speech = cls(model, CTCProcessor.from_pretrained(str(model_dir)), device=resolve_device(device))
        speech.temperature = read_temperature(model_dir)
        return speech

    @property
    def frame_s(self) -> float:
        """Seconds of audio per output frame: the feature hop times the encoder's subsampling."""
        hop = self.processor.feature_extractor.hop_length / self.processor.feature_extractor.sampling_rate
        return float(hop * self.model.config.encoder_config.subsampling_factor)

    def _transcribe_batch(self, audios: Sequence[np.ndarray]) -> list[str]:
        inputs = self.processor.features(audios, self.feature_device)
        ids = self.model.generate(
            input_features=inputs["input_features"].to(self.device),
            attention_mask=inputs["attention_mask"].to(self.device),
        )
        return [t.strip() for t in self.processor.tokenizer.batch_decode(ids.cpu())]

    def _score_batch(self, audios: Sequence[np.ndarray], temperatures: Sequence[float]) -> list[Scored]:
        inputs = self.processor.features(audios, self.feature_device)
        out = self.model.generate(
            input_features=inputs["input_features"].to(self.device),
            attention_mask=inputs["attention_mask"].to(self.device),
            return_dict_in_generate=True,
        )
        ids = out.sequences.cpu()  # each frame's most probable token, the blank past the audio
        decoded = self.processor.tokenizer.batch_decode(ids, output_word_offsets=True)
        logits = out.logits.float().cpu()
        # the log posterior of each frame's chosen token at each temperature: (batch, frames, temperatures)
        chosen = torch.stack(
            [torch.log_softmax(logits / t, dim=-1).gather(-1, ids[..., None])[..., 0] for t in temperatures],
            dim=-1,
        )
        frame = self.frame_s
        return [
            (
                text.strip(),
                [
                    PieceWord(
                        w["word"],
                        round(float(w["start_offset"] * frame), 3),
                        round(float(w["end_offset"] * frame), 3),
                        chosen[b, w["start_offset"] : w["end_offset"]].mean(dim=0).numpy(),
                    )
                    for w in offsets
                ],
            )
            for b, (text, offsets) in enumerate(zip(decoded.text, decoded.word_offsets, strict=True))
        ]

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        audios = [np.asarray(e["audio"], dtype=np.float32) for e in examples]
        batch = {k: v.cpu() for k, v in self.processor.features(audios, self.feature_device).items()}
        batch["labels"] = self.processor.labels([e["text"] for e in examples])
        return batch
