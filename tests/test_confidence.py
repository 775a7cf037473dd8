"""Word confidence (`models.confidence`): each family's words, times and confidences, the same in
any batch; confidence lower where the model is wrong; the temperature fitted on held-out words
lowering the calibration error of a model built to be over-confident."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.models import SpeechModel
from stt_flywheel.models.confidence import (
    TEMPERATURES,
    Transcript,
    calibrate,
    calibration_summary,
    correct_words,
    expected_calibration_error,
    fit_temperature,
    read_temperature,
    reliability,
    write_temperature,
)


def _audios(utts: list[Utterance]) -> list[np.ndarray]:
    return [load_audio(u.audio).samples for u in utts]


def _check_words(transcript: Transcript, seconds: float) -> None:
    assert " ".join(w.word for w in transcript.words) == transcript.text
    for w in transcript.words:
        assert 0 < w.confidence <= 1
        if w.start is not None:
            assert w.end is not None and 0 <= w.start < w.end <= seconds + 0.05
    starts = [w.start for w in transcript.words if w.start is not None]
    assert starts == sorted(starts)
    if transcript.words:
        assert transcript.confidence == min(w.confidence for w in transcript.words)
    else:
        assert transcript.confidence is None


def test_ctc_words_times_and_confidence_equal_at_batch_1_and_16(
    base_model: SpeechModel, general_utts: list[Utterance], new_utts: list[Utterance]
) -> None:
    utts = general_utts[:8] + new_utts[:8]
    audios = _audios(utts)
    batched = base_model.transcribe_scored(audios, batch_size=16)
    alone = base_model.transcribe_scored(audios, batch_size=1)
    assert [t.text for t in batched] == base_model.transcribe(audios, batch_size=16)
    assert sum(len(t.words) for t in batched) > 40
    for a, b, audio in zip(batched, alone, audios, strict=True):
        _check_words(a, len(audio) / 16_000)
        assert [(w.word, w.start, w.end) for w in a.words] == [(w.word, w.start, w.end) for w in b.words]
        assert [w.confidence for w in a.words] == pytest.approx([w.confidence for w in b.words], abs=1e-4)
    # a piece of a long recording keeps its words' times in the whole recording
    long = np.concatenate([audios[0], np.zeros(8_000, np.float32), audios[1]])
    cut = base_model.transcribe_scored([long], max_piece_s=len(audios[0]) / 16_000 + 0.4)[0]
    _check_words(cut, len(long) / 16_000)
    assert cut.words[-1].start > len(audios[0]) / 16_000


def test_confidence_is_lower_where_the_model_is_wrong(
    base_model: SpeechModel, general_utts: list[Utterance], new_utts: list[Utterance]
) -> None:
    utts = general_utts + new_utts
    transcripts = base_model.transcribe_scored(_audios(utts))
    right = correct_words([[w.word for w in t.words] for t in transcripts], [u.text for u in utts])
    pairs = [
        (w.confidence, ok)
        for t, oks in zip(transcripts, right, strict=True)
        for w, ok in zip(t.words, oks, strict=True)
        if ok is not None
    ]
    wrong = [c for c, ok in pairs if not ok]
    good = [c for c, ok in pairs if ok]
    assert len(wrong) > 10 and len(good) > 10  # the new domain has errors, the general few
    assert np.mean(good) > np.mean(wrong) + 0.05


def test_correct_words_blames_each_word_by_its_own_tokens() -> None:
    assert correct_words([["The", "cat,", "sad", "on", "mat"]], ["the cat sat on the mat"]) == [
        [True, True, False, True, True]
    ]
    assert correct_words([["um", "two", "dogs"]], ["2 dogs"]) == [[None, True, True]]
    assert correct_words([[]], ["nothing heard"]) == [[]]


def test_whisper_words_are_its_tokens_between_spaces() -> None:
    from stt_flywheel.models.seq2seq import build_whisper_model

    model = build_whisper_model()
    tokenizer = model.processor.tokenizer
    text = tokenizer(" hello big world", add_special_tokens=False).input_ids
    eos = model.model.generation_config.eos_token_id
    stamp = tokenizer.convert_tokens_to_ids("<|1.00|>")
    tokens = torch.tensor([stamp, *text, eos, eos, eos])
    log_probs = torch.log(torch.linspace(0.5, 0.9, len(tokens)))[:, None]
    words = model._words(tokens, tokens.clone(), log_probs)
    assert [w.word for w in words] == ["hello", "big", "world"]
    first = np.exp(log_probs[1 : 1 + len(" hello")].mean().item())
    assert np.exp(words[0].log_confidence[0]) == pytest.approx(first)
    with pytest.raises(RuntimeError, match="the recorder did not"):
        model._words(tokens, torch.where(tokens == text[0], text[1], tokens), log_probs)


def test_whisper_confidence_equal_at_batch_1_and_16() -> None:
    from stt_flywheel.models.seq2seq import build_whisper_model

    model = build_whisper_model(seed=0, timestamps=False)
    rng = np.random.default_rng(4)
    audios = [rng.normal(0, 0.1, int(16_000 * s)).astype(np.float32) for s in (1.5, 4, 2.5, 7, 3)]
    batched = model.transcribe_scored(audios, batch_size=16, temperatures=(1.0, 2.0))
    alone = model.transcribe_scored(audios, batch_size=1, temperatures=(1.0, 2.0))
    assert [t.text for t in batched] == model.transcribe(audios, batch_size=16)
    assert all(t.words for t in batched)  # (this random model says one long word)
    for a, b in zip(batched, alone, strict=True):
        _check_words(a, 8.0)
        assert a.log_confidences is not None and b.log_confidences is not None
        assert a.log_confidences.shape == (len(a.words), 2)
        np.testing.assert_allclose(a.log_confidences, b.log_confidences, atol=1e-4)
        # a hotter softmax is less sure of the same choice
        assert (a.log_confidences[:, 1] < a.log_confidences[:, 0]).all()


def test_fitted_temperature_lowers_the_calibration_error_of_an_over_confident_model(
    base_model: SpeechModel, general_utts: list[Utterance], new_utts: list[Utterance], tmp_path
) -> None:
    """The committed model with its output layer's weights tripled: the same words, far surer of
    them. The temperature fitted on half the utterances brings the other half's expected
    calibration error down."""
    sure = copy.copy(base_model)
    sure.model = copy.deepcopy(base_model.model)
    head = sure.model.ctc_head if hasattr(sure.model, "ctc_head") else sure.model.lm_head
    with torch.no_grad():
        head.weight.mul_(3.0)
        if head.bias is not None:
            head.bias.mul_(3.0)
    utts = general_utts + new_utts
    transcripts = sure.transcribe_scored(_audios(utts), temperatures=TEMPERATURES)
    assert [t.text for t in transcripts] == base_model.transcribe(_audios(utts))
    right = correct_words([[w.word for w in t.words] for t in transcripts], [u.text for u in utts])

    def words(half: slice) -> tuple[np.ndarray, np.ndarray]:
        logs, oks = [], []
        for t, r in zip(transcripts[half], right[half], strict=True):
            for k, ok in enumerate(r):
                if ok is not None and t.log_confidences is not None:
                    logs.append(t.log_confidences[k])
                    oks.append(ok)
        return np.array(logs), np.array(oks, dtype=bool)

    fit_logs, fit_ok = words(slice(0, None, 2))
    test_logs, test_ok = words(slice(1, None, 2))
    temperature, losses = fit_temperature(fit_logs, fit_ok)
    assert temperature > 1.5 and losses[temperature] < losses[1.0]
    unit = TEMPERATURES.index(1.0)
    fitted = TEMPERATURES.index(temperature)
    before = expected_calibration_error(np.exp(test_logs[:, unit]), test_ok)
    after = expected_calibration_error(np.exp(test_logs[:, fitted]), test_ok)
    assert after < before * 0.7, (before, after)
    diagram = reliability(np.exp(test_logs[:, fitted]), test_ok)
    assert sum(b["words"] for b in diagram) == len(test_ok)
    # saved beside the model, read back when it is loaded
    assert read_temperature(tmp_path) == 1.0
    write_temperature(tmp_path, temperature, {"words": len(fit_ok)})
    assert read_temperature(tmp_path) == temperature


def test_a_whisper_served_answers_and_captures_its_words_and_confidence(tmp_path) -> None:
    """The other family through the serving app: the words asked for, the same words captured."""
    import base64

    from fastapi.testclient import TestClient

    from stt_flywheel.config import CaptureSettings
    from stt_flywheel.data.audio import encode_wav
    from stt_flywheel.data.error_store import ErrorStore
    from stt_flywheel.data.identity import Identity
    from stt_flywheel.deployment.serving import ServingSettings
    from stt_flywheel.deployment.serving.app import create_app
    from stt_flywheel.models.seq2seq import build_whisper_model

    model = build_whisper_model(seed=0, timestamps=False)
    settings = ServingSettings(
        storage_uri="unused",
        model_version="5",
        capture_uri=str(tmp_path / "store"),
        capture=CaptureSettings(flush_interval_s=600, spill_dir=tmp_path / "spill"),
        identity=Identity(b"w" * 32),
    )
    audio = np.random.default_rng(4).normal(0, 0.1, 16_000 * 3).astype(np.float32)
    body = {
        "instances": [{"b64": base64.b64encode(encode_wav(audio)).decode()}],
        "parameters": {"word_confidence": True},
    }
    with TestClient(create_app(settings, model=model)) as client:  # leaving it flushes the capture
        answer = client.post("/predict", json=body).json()["predictions"][0]
    assert answer["words"] and " ".join(w["word"] for w in answer["words"]) == answer["transcript"]
    assert all(w["start"] is None and 0 < w["confidence"] <= 1 for w in answer["words"])
    (row,) = ErrorStore(tmp_path / "store").predictions().to_pylist()
    assert row["prediction_id"] == answer["prediction_id"]
    assert [w["word"] for w in row["words"]] == [w["word"] for w in answer["words"]]
    assert row["confidence"] == pytest.approx(answer["confidence"], rel=1e-5)


def test_a_model_that_answers_no_word_records_no_calibration(tmp_path: Path) -> None:
    """A model that transcribed nothing (or answered long-form, without words) has no calibration
    error to state: the run records none, and its temperature stays 1."""

    class Silent:
        temperature = 1.0

        def transcribe_scored(self, audios: list, **_: object) -> list[Transcript]:
            return [Transcript("") for _ in audios]

    examples = [{"audio": np.zeros(1600, np.float32), "text": "take two tablets"}] * 3
    evidence = calibrate(Silent(), examples, tmp_path)
    assert evidence["words"] == 0 and evidence["temperature"] == 1.0
    assert calibration_summary(evidence) is None
    assert read_temperature(tmp_path) == 1.0
