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


def test_long_audio_is_cut_at_quiet_moments_into_pieces_that_make_the_whole() -> None:
    import numpy as np

    from stt_flywheel.models.base import split_long_audio

    rng = np.random.default_rng(0)
    speech = rng.normal(0, 0.3, 16_000 * 45).astype(np.float32)
    speech[16_000 * 27 : 16_000 * 27 + 4_000] = 0.0  # a quarter-second pause at 27 s
    pieces = split_long_audio(speech, 16_000 * 30)
    assert len(pieces) == 2
    assert np.array_equal(np.concatenate(pieces), speech)
    assert 16_000 * 27 < len(pieces[0]) < 16_000 * 27 + 4_000  # cut inside the pause, not at 30 s
    assert all(len(p) <= 16_000 * 30 for p in pieces)
    # no pause at all: still pieces within the limit, still the whole
    noise = rng.normal(0, 0.3, 16_000 * 95).astype(np.float32)
    pieces = split_long_audio(noise, 16_000 * 30)
    assert len(pieces) == 4
    assert np.array_equal(np.concatenate(pieces), noise)
    assert all(len(p) <= 16_000 * 30 for p in pieces)
    assert split_long_audio(noise[:100], 16_000 * 30)[0] is not None
    assert len(split_long_audio(np.zeros(0, dtype=np.float32), 16_000)) == 1


def test_whisper_without_timestamps_transcribes_45_seconds_in_window_sized_pieces(monkeypatch) -> None:
    """A 45-second recording reaches a Whisper that cannot generate long-form (no timestamp
    tokens) as pieces within its 30-second window, all of them: before, the feature extractor
    silently kept the first 30 seconds."""
    import numpy as np

    from stt_flywheel.models.base import split_long_audio
    from stt_flywheel.models.seq2seq import Seq2SeqSpeechModel, build_whisper_model

    model = build_whisper_model(timestamps=False)
    assert model.window_s == 30.0 and not model.long_form
    seen: list[int] = []
    real = Seq2SeqSpeechModel._transcribe_batch

    def spy(self, audios):  # the real decoder, with the lengths it was given written down
        seen.extend(len(a) for a in audios)
        return real(self, audios)

    monkeypatch.setattr(Seq2SeqSpeechModel, "_transcribe_batch", spy)
    audio = np.random.default_rng(1).normal(0, 0.1, 16_000 * 45).astype(np.float32)
    short = audio[: 16_000 * 3]
    texts = model.transcribe([audio, short])
    assert len(texts) == 2
    pieces = split_long_audio(audio, 16_000 * 30)
    assert sorted(seen) == sorted([len(short), *(len(p) for p in pieces)])
    assert sum(seen) == len(audio) + len(short)
    assert max(seen) <= 16_000 * 30


def test_whisper_transcribes_long_audio_by_long_form_generation_the_same_in_any_batch(monkeypatch) -> None:
    """A Whisper with timestamp tokens hears 45- and 70-second recordings whole, through its
    sequential long-form generation (in batches of their own: short audio is decoded without
    timestamps), and every text is the one it gives for that recording alone. Serving's piece
    length still bounds what one call holds."""
    import numpy as np

    from stt_flywheel.models.seq2seq import Seq2SeqSpeechModel, build_whisper_model

    model = build_whisper_model()
    assert model.long_form
    seen: dict[str, list[int]] = {"short": [], "long": []}
    real_short, real_long = Seq2SeqSpeechModel._transcribe_batch, Seq2SeqSpeechModel._transcribe_long_batch

    def short(self, audios):
        seen["short"].extend(len(a) for a in audios)
        return real_short(self, audios)

    def long(self, audios):
        seen["long"].extend(len(a) for a in audios)
        return real_long(self, audios)

    monkeypatch.setattr(Seq2SeqSpeechModel, "_transcribe_batch", short)
    monkeypatch.setattr(Seq2SeqSpeechModel, "_transcribe_long_batch", long)
    rng = np.random.default_rng(2)
    audios = [rng.normal(0, 0.1, 16_000 * s).astype(np.float32) for s in (45, 3, 70, 5)]
    texts = model.transcribe(audios, batch_size=16)
    assert sorted(seen["long"]) == [16_000 * 45, 16_000 * 70]
    assert sorted(seen["short"]) == [16_000 * 3, 16_000 * 5]
    assert texts[0] and texts[2]  # (this random model says nothing for the short ones)
    assert texts == [model.transcribe([a], batch_size=1)[0] for a in audios]
    # the whole 70 s is decoded, window after window: at least three 30-s windows
    from transformers.generation.utils import GenerationMixin

    windows: list[int] = []
    inner = GenerationMixin.generate

    def counted(self, *args, **kwargs):
        windows.append(1)
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", counted)
    assert model.transcribe([audios[2]]) == [texts[2]]
    assert len(windows) >= 3
    monkeypatch.setattr(GenerationMixin, "generate", inner)
    # a recording longer than serving's pieces is cut first; pieces past the window go long-form
    seen["long"].clear()
    model.transcribe([audios[2]], max_piece_s=40)
    assert len(seen["long"]) == 2 and all(16_000 * 30 < n <= 16_000 * 40 for n in seen["long"])


def test_whisper_generates_the_same_with_a_static_cache(monkeypatch) -> None:
    """The static key/value cache (what a compiled decoder on a GPU needs) changes no transcript,
    at batch 1 or 16, short audio and long-form."""
    import numpy as np
    import transformers.cache_utils

    from stt_flywheel.models.seq2seq import build_whisper_model

    made: list[int] = []
    real = transformers.cache_utils.StaticCache.__init__

    def counted(self, *args, **kwargs):
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(transformers.cache_utils.StaticCache, "__init__", counted)

    rng = np.random.default_rng(4)
    audios = [rng.normal(0, 0.1, int(16_000 * s)).astype(np.float32) for s in (1.5, 4, 2.5, 7, 3, 35)]
    for timestamps in (False, True):
        model = build_whisper_model(timestamps=timestamps)
        dynamic = model.transcribe(audios, batch_size=16)
        assert not made
        model.generation_cache = "static"
        assert model.transcribe(audios, batch_size=16) == dynamic
        assert made  # generate built static caches: the setting reached it
        assert model.transcribe(audios, batch_size=1) == dynamic
        made.clear()
    assert any(dynamic)
