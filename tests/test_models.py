"""The model adapters: loading, transcription order, collation."""

from pathlib import Path

import numpy as np

from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.models import family_of, load_model
from stt_flywheel.models.ctc import build_ctc_model
from stt_flywheel.scoring.corpus import score_corpus


def test_base_model_knows_general_domain_not_new_domain(
    base_model_dir: Path, general_utts: list[Utterance], new_utts: list[Utterance]
) -> None:
    model = load_model(base_model_dir, device="cpu")
    assert model.family == "ctc"
    assert family_of(base_model_dir) == "ctc"
    general, _ = score_corpus(
        [u.text for u in general_utts], model.transcribe([load_audio(u.audio).samples for u in general_utts])
    )
    new, _ = score_corpus(
        [u.text for u in new_utts], model.transcribe([load_audio(u.audio).samples for u in new_utts])
    )
    assert general.wer < 0.2
    assert new.wer > general.wer + 0.3


def test_transcribe_keeps_caller_order(base_model_dir: Path, general_utts: list[Utterance]) -> None:
    model = load_model(base_model_dir, device="cpu")
    audios = [load_audio(u.audio).samples for u in general_utts[:6]]
    batched = model.transcribe(audios, batch_size=4)
    one_by_one = [model.transcribe([a])[0] for a in audios]
    assert batched == one_by_one


def test_ctc_collate_pads_dynamically() -> None:
    model = build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8)
    batch = model.collate(
        [
            {"audio": np.zeros(16_000, dtype=np.float32), "text": "ab"},
            {"audio": np.zeros(8_000, dtype=np.float32), "text": "abc d"},
        ]
    )
    assert batch["input_features"].shape[:2] == batch["attention_mask"].shape
    assert batch["attention_mask"].sum(-1).tolist()[0] > batch["attention_mask"].sum(-1).tolist()[1]
    assert (batch["labels"][0] == -100).sum() == 3  # "ab" padded to the width of "abc d"
