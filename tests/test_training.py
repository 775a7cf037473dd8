"""Fine-tuning: checkpoints and resume, speed perturbation, refusals, Whisper, WiSE-FT."""

from pathlib import Path

import numpy as np
import pytest

from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.models import family_of, load_model
from stt_flywheel.models.ctc import build_ctc_model
from stt_flywheel.models.seq2seq import build_whisper_model
from stt_flywheel.models.training import TrainingDiverged, TrainSettings, fine_tune


def _examples(utts: list[Utterance]) -> list[dict]:
    return [{"audio": load_audio(u.audio).samples, "text": u.text} for u in utts]


def test_ctc_fine_tune_checkpoints_and_resumes(tmp_path: Path, general_utts: list[Utterance]) -> None:
    examples = _examples(general_utts[:8])
    settings = TrainSettings(max_steps=4, save_steps=2, batch_size=4, warmup_steps=0, logging_steps=1)
    model = build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8)
    first = fine_tune(model, examples, tmp_path / "run", settings)
    assert first.resumed_from is None
    assert first.steps == 4
    assert first.device == "cpu"
    assert not first.bf16
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4").is_dir()
    model = build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8)
    more = fine_tune(
        model, examples, tmp_path / "run", TrainSettings(**{**settings.__dict__, "max_steps": 6})
    )
    assert more.resumed_from is not None
    assert more.resumed_from.endswith("checkpoint-4")
    assert more.steps == 6
    reloaded = load_model(tmp_path / "run" / "model", device="cpu")
    assert len(reloaded.transcribe([examples[0]["audio"]])) == 1


def test_speed_perturbation_retimes_audio() -> None:
    from stt_flywheel.models.training import _Examples

    audio = np.zeros(16_000, dtype=np.float32)
    faster = _Examples([{"audio": audio, "text": "x"}], speeds=(1.25,))[0]
    assert len(faster["audio"]) == 12_800
    assert faster["text"] == "x"
    assert _Examples([{"audio": audio, "text": "x"}])[0]["audio"] is audio


def test_fine_tune_rejects_empty_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training examples"):
        fine_tune(build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8), [], tmp_path)


def test_fine_tune_refuses_to_save_non_finite_weights(tmp_path: Path) -> None:
    # Audio with a NaN in it gives a NaN loss, NaN gradients and NaN weights after one step.
    audio = np.sin(np.linspace(0, 400, 16000)).astype(np.float32)
    audio[100] = np.nan
    model = build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8)
    settings = TrainSettings(max_steps=2, batch_size=2, warmup_steps=0, logging_steps=1, save_steps=100)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        fine_tune(model, [{"audio": audio, "text": "a b c"}] * 2, tmp_path / "run", settings)
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.slow
def test_seq2seq_whisper_learns_and_round_trips(tmp_path: Path, general_utts: list[Utterance]) -> None:
    """The production family: a tiny Whisper built offline fine-tunes, saves and reloads."""
    examples = _examples(general_utts[:4])
    model = build_whisper_model()
    batch = model.collate(examples[:2])
    assert batch["input_features"].shape[1:] == (80, 3000)
    assert (batch["labels"][:, 0] != model.model.config.decoder_start_token_id).all()
    settings = TrainSettings(
        max_steps=40, batch_size=4, learning_rate=3e-3, warmup_steps=0, logging_steps=5, save_steps=40
    )
    result = fine_tune(model, examples, tmp_path / "run", settings, eval_examples=examples)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert losses[-1] < losses[0] * 0.5
    assert result.eval_loss is not None
    assert result.eval_loss < losses[0]
    reloaded = load_model(tmp_path / "run" / "model", device="cpu")
    assert reloaded.family == "seq2seq"
    assert family_of(tmp_path / "run" / "model") == "seq2seq"
    texts = reloaded.transcribe([e["audio"] for e in examples])
    assert len(texts) == 4
    assert all(isinstance(t, str) for t in texts)


def test_wise_ft_interpolates_towards_the_start() -> None:
    import torch

    from stt_flywheel.models.training import interpolate_weights

    model = torch.nn.Linear(2, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(2.0)
    interpolate_weights(model, start, 0.25)
    assert torch.allclose(model.weight, start["weight"] + 0.5)
    interpolate_weights(model, start, 0.0)
    assert torch.allclose(model.weight, start["weight"])
    with pytest.raises(ValueError, match="wise_ft_alpha"):
        interpolate_weights(model, start, 1.5)


def test_wise_ft_reports_the_held_out_loss_of_the_weights_it_saved(
    tmp_path: Path, general_utts: list[Utterance]
) -> None:
    """α = 0 saves the starting weights: their held-out loss is the untrained model's, and the
    fine-tuned weights' loss (the curve's) is another number."""
    import torch

    examples = _examples(general_utts[:6])
    torch.manual_seed(0)
    model = build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8)
    settings = TrainSettings(max_steps=3, batch_size=3, warmup_steps=0, learning_rate=3e-3, wise_ft_alpha=0.0)
    untrained = build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8)
    untrained.model.load_state_dict(model.model.state_dict())
    result = fine_tune(model, examples, tmp_path / "run", settings, eval_examples=examples)
    assert result.eval_loss is not None and result.saved_eval_loss is not None
    assert result.saved_eval_loss != result.eval_loss
    assert result.metrics()["saved_eval_loss"] == result.saved_eval_loss
    saved = load_model(tmp_path / "run" / "model", device="cpu")
    for name, tensor in untrained.model.state_dict().items():
        if tensor.is_floating_point():  # counters (BatchNorm's batches seen) are not weights
            assert torch.equal(saved.model.state_dict()[name], tensor), name


def _tiny_ctc() -> object:
    return build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8)


@pytest.mark.parametrize("family", ["ctc", "seq2seq"])
def test_lora_trains_adapters_and_saves_merged_weights(
    tmp_path: Path, general_utts: list[Utterance], family: str
) -> None:
    """Only the adapters train; what is saved has the original architecture (no adapter keys),
    differs from the start only in the targeted layers, and reloads and transcribes."""
    import torch

    examples = _examples(general_utts[:4])
    model = _tiny_ctc() if family == "ctc" else build_whisper_model()
    start = {k: v.clone() for k, v in model.model.state_dict().items()}
    settings = TrainSettings(
        max_steps=6, batch_size=2, learning_rate=1e-2, warmup_steps=0, logging_steps=1,
        save_steps=100, method="lora", lora_rank=4, lora_alpha=8, lora_dropout=0.0,
    )  # fmt: skip
    result = fine_tune(model, examples, tmp_path / "run", settings)
    assert 0 < result.trainable_parameters < result.total_parameters / 4
    reloaded = load_model(tmp_path / "run" / "model", device="cpu")
    saved = reloaded.model.state_dict()
    assert set(saved) == set(start)
    assert not any("lora" in k for k in saved)
    # weights, not buffers: a BatchNorm's running statistics follow the data in any training
    weights = {name for name, _ in reloaded.model.named_parameters()}
    changed = {k for k in weights if not torch.equal(saved[k], start[k])}
    assert changed, "LoRA changed no weight"
    assert all(k.rsplit(".", 2)[-2] in settings.lora_target_modules for k in changed), changed
    assert len(reloaded.transcribe([examples[0]["audio"]])) == 1


def test_lora_refuses_targets_the_model_lacks(tmp_path: Path, general_utts: list[Utterance]) -> None:
    settings = TrainSettings(max_steps=1, batch_size=2, method="lora", lora_target_modules=("fc9",))
    with pytest.raises(ValueError, match="name no module of this model.*q_proj"):
        fine_tune(_tiny_ctc(), _examples(general_utts[:2]), tmp_path / "run", settings)


def test_unknown_training_method_is_refused(tmp_path: Path, general_utts: list[Utterance]) -> None:
    with pytest.raises(ValueError, match="full or lora"):
        fine_tune(_tiny_ctc(), _examples(general_utts[:2]), tmp_path, TrainSettings(method="adapter"))


@pytest.mark.parametrize("family", ["ctc", "seq2seq"])
def test_gradient_checkpointing_gives_the_same_step(
    tmp_path: Path, general_utts: list[Utterance], family: str
) -> None:
    """Recomputing activations changes memory, not arithmetic: two steps with and without it land
    on the same weights (to float tolerance), and the saved model has checkpointing off. (Not the
    same buffers: the recomputed forward updates a BatchNorm's running statistics a second time.)"""
    import torch

    examples = _examples(general_utts[:2])
    weights = []
    for on in (False, True):
        model = _tiny_ctc() if family == "ctc" else build_whisper_model()
        model.model.config.dropout = 0.0
        settings = TrainSettings(
            max_steps=2, batch_size=2, warmup_steps=0, logging_steps=1, save_steps=100,
            gradient_checkpointing=on,
        )  # fmt: skip
        fine_tune(model, examples, tmp_path / f"run-{on}", settings)
        assert not model.model.is_activation_checkpointing
        weights.append(dict(model.model.named_parameters()))
    for name, tensor in weights[0].items():
        assert torch.allclose(tensor, weights[1][name], atol=1e-5), name


@pytest.mark.parametrize("time_axis", [1, 2])
def test_spec_augment_masks_bands_of_time_and_frequency(time_axis: int) -> None:
    import torch

    from stt_flywheel.models.training import spec_augment

    shape = (3, 200, 80) if time_axis == 1 else (3, 80, 200)
    features = torch.ones(shape)
    masked = spec_augment(
        features, time_axis, torch.Generator().manual_seed(1), max_time_share=0.1, max_freq_bins=10
    )
    assert torch.equal(features, torch.ones(shape)), "the input is left as it was"
    for b in range(3):
        view = masked[b] if time_axis == 1 else masked[b].T  # (time, freq)
        zero_frames = int((view == 0).all(dim=1).sum())
        zero_bins = int((view == 0).all(dim=0).sum())
        assert 0 < zero_frames <= 2 * 20
        assert 0 < zero_bins <= 2 * 10
        # everything else untouched
        assert bool(((view == 0) | (view == 1)).all())


def test_spec_augment_reaches_training_batches_only(tmp_path: Path, general_utts: list[Utterance]) -> None:
    from stt_flywheel.models.training import _AugmentingCollator

    model = _tiny_ctc()
    examples = _examples(general_utts[:2])
    plain = model.collate(examples)
    augmented = _AugmentingCollator(model, seed=0)(examples)
    assert augmented["input_features"].shape == plain["input_features"].shape
    assert (augmented["input_features"] == 0).sum() > (plain["input_features"] == 0).sum()
    assert augmented["labels"].equal(plain["labels"])
    settings = TrainSettings(max_steps=2, batch_size=2, warmup_steps=0, save_steps=100, spec_augment=True)
    result = fine_tune(model, examples, tmp_path / "run", settings, eval_examples=examples)
    assert result.eval_loss is not None


@pytest.mark.slow
def test_whisper_keeps_the_formatting_it_is_taught_and_the_gate_sees_one_that_drops_it(
    tmp_path: Path, general_utts: list[Utterance]
) -> None:
    """Seq2seq targets are the text as written. A production Whisper taught cased, punctuated text
    writes it; a candidate taught the same words lower-cased without punctuation matches it on
    normalised WER, and the formatting gate rejects it."""
    from stt_flywheel.config import ValidationPolicy
    from stt_flywheel.evaluation.validation import validate_candidate
    from stt_flywheel.scoring.text import normalize

    utts = general_utts[:3]
    audio = [load_audio(u.audio).samples for u in utts]
    written = [normalize(u.text).capitalize().replace(" ", ", ", 1) + "." for u in utts]
    settings = TrainSettings(
        max_steps=150, batch_size=3, learning_rate=3e-3, warmup_steps=0, logging_steps=50, save_steps=10**6
    )
    models = {}
    for name, texts in (("production", written), ("candidate", [normalize(t) for t in written])):
        model = build_whisper_model(seed=1)
        fine_tune(
            model,
            [{"audio": a, "text": t} for a, t in zip(audio, texts, strict=True)],
            tmp_path / name,
            settings,
        )
        models[name] = model
    assert models["production"].transcribe(audio) == written  # casing and punctuation learnt
    policy = ValidationPolicy(
        normalizer="whisper-en/1", min_wer_improvement=None, max_p_value=None, bootstrap_resamples=100
    )
    heldout = [{"id": u.id, "audio": a, "text": t} for u, a, t in zip(utts, audio, written, strict=True)]
    result = validate_candidate(models["candidate"], models["production"], heldout, policy)
    m = result.metrics
    assert m.wer == m.production_wer == 0.0  # the same words: normalised WER cannot tell them apart
    assert m.formatting_error_rate > m.production_formatting_error_rate + 0.2  # 2 of 6 words
    gate = next(g for g in result.verdict.gates if g.name == "max_formatting_error_increase")
    assert not gate.passed
    assert "formatting errors" in gate.reason


@pytest.mark.slow
def test_two_processes_train_data_parallel_and_one_saves(
    tmp_path: Path, general_utts: list[Utterance]
) -> None:
    """`training.processes: 2` on CPUs: torchrun starts two processes on the gloo backend, each
    trains on its share of every batch, the loss falls, and the model is saved once, by rank 0."""
    from datetime import UTC, datetime

    import orjson

    from stt_flywheel.config import DatasetSettings
    from stt_flywheel.data.dataset import build_dataset
    from stt_flywheel.data.error_store import ErrorStore
    from stt_flywheel.models.distributed import train_in_processes

    now = datetime(2026, 11, 1, tzinfo=UTC)
    store = ErrorStore(tmp_path / "store")
    rows = [
        {
            "id": f"r{i}",
            "audio_uri": u.audio,
            "hypothesis": "x",
            "corrected_text": u.text,
            "timestamp": now.isoformat(),
        }
        for i, u in enumerate(general_utts[:8])
    ]
    assert store.ingest(rows, now=now).accepted == 8
    settings = DatasetSettings(
        holdout_fraction=0.2, audio_roots=[str(Path(general_utts[0].audio).parent)], max_user_share=1.0
    )
    build_dataset(store, tmp_path / "ds", settings, watermark=now)
    start = tmp_path / "start"
    build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8).save(start)
    train = TrainSettings(
        max_steps=20,
        batch_size=2,
        learning_rate=3e-3,
        warmup_steps=0,
        logging_steps=1,
        save_steps=10,
        accelerator="cpu",
    )
    reported: list[tuple[int, int]] = []
    result = train_in_processes(
        str(start), tmp_path / "ds", tmp_path / "run", train, processes=2,
        progress=lambda step, max_steps, loss: reported.append((step, max_steps)), poll_s=0.2,
    )  # fmt: skip
    assert result.processes == 2
    assert reported and reported[-1] == (20, 20)  # the watcher saw rank 0's steps, the last one too
    assert [s for s, _ in reported] == sorted(s for s, _ in reported)
    assert result.steps == 20
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert sum(losses[-3:]) < sum(losses[:3])
    ranks = sorted(orjson.loads(p.read_bytes())["saved"] for p in (tmp_path / "run" / "ranks").glob("*.json"))
    assert ranks == [False, True]  # two processes trained, one saved
    reloaded = load_model(tmp_path / "run" / "model", device="cpu")
    assert reloaded.family == "ctc"


def test_whisper_language_from_config_and_per_record(tmp_path: Path, general_utts: list[Utterance]) -> None:
    """Each target's decoder prompt carries its record's language (else the configured one); the
    configured language is saved with the model, and transcription asks for it."""
    examples = _examples(general_utts[:2])
    examples[1]["language"] = "German"
    model = build_whisper_model()
    model.configure_language("fr", "transcribe")
    tok = model.processor.tokenizer
    labels = model.collate(examples)["labels"]
    first_tokens = tok.convert_ids_to_tokens([int(labels[0, 0]), int(labels[1, 0])])
    assert first_tokens == ["<|fr|>", "<|de|>"]
    assert tok.convert_ids_to_tokens([int(labels[0, 1]), int(labels[0, 2])]) == [
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        model.collate([{**examples[0], "language": "klingon"}])

    settings = TrainSettings(
        max_steps=1, batch_size=2, warmup_steps=0, save_steps=100, language="de", task="translate"
    )
    fine_tune(model, examples, tmp_path / "run", settings)
    reloaded = load_model(tmp_path / "run" / "model", device="cpu")
    assert (reloaded.language, reloaded.task) == ("de", "translate")
    asked: dict = {}
    generate = reloaded.model.generate

    def spy(*args, **kwargs):  # the real generate, with what it was asked for written down
        asked.update(language=kwargs.get("language"), task=kwargs.get("task"))
        return generate(*args, **kwargs)

    reloaded.model.generate = spy
    assert len(reloaded.transcribe([examples[0]["audio"]])) == 1
    assert asked == {"language": "de", "task": "translate"}
