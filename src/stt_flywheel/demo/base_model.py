"""Train the demo's tiny base model from scratch on synthetic general-domain speech.

This is the exact procedure behind the committed model in `assets/base_model`; its model card
(`assets/base_model/MODEL_CARD.json`) records the command, the data and the measured WERs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stt_flywheel.data.audio import load_audio
from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, synthesize_set
from stt_flywheel.models.ctc import build_ctc_model
from stt_flywheel.models.training import TrainSettings, fine_tune
from stt_flywheel.scoring.corpus import score_corpus
from stt_flywheel.storage.files import atomic_write_json

__all__ = ["train_base_model"]

# Seeds disjoint from the demo world's, so the base model never saw a demo utterance.
BASE_TRAIN_SEED = 9001
BASE_EVAL_SEED = 9002
BASE_SETTINGS = TrainSettings(
    max_steps=2400, learning_rate=1.5e-3, warmup_steps=200, batch_size=16, save_steps=400
)


def train_base_model(
    out_dir: Path,
    scratch_dir: Path,
    utterances: int = 1500,
    settings: TrainSettings = BASE_SETTINGS,
    command: str = "",
) -> dict[str, Any]:
    started = time.perf_counter()
    train = synthesize_set("base", GENERAL, utterances, BASE_TRAIN_SEED, scratch_dir / "train")
    evals = {
        "general": synthesize_set(
            "base-eval-gen", GENERAL, 100, BASE_EVAL_SEED, scratch_dir / "eval-general"
        ),
        "new_domain": synthesize_set(
            "base-eval-new", NEW_DOMAIN, 100, BASE_EVAL_SEED, scratch_dir / "eval-new"
        ),
    }
    model = build_ctc_model()
    examples = [{"audio": load_audio(u.audio).samples, "text": u.text} for u in train]
    result = fine_tune(model, examples, scratch_dir / "run", settings)
    card: dict[str, Any] = {
        "family": "ctc",
        "architecture": "ParakeetForCTC",
        "parameters": model.num_parameters,
        "train_utterances": utterances,
        "train_seed": BASE_TRAIN_SEED,
        "settings": settings.__dict__,
        "train_loss": result.train_loss,
        "train_runtime_s": round(result.runtime_s, 1),
        "command": command,
    }
    for name, utts in evals.items():
        hyps = model.transcribe([load_audio(u.audio).samples for u in utts])
        score, _ = score_corpus([u.text for u in utts], hyps)
        card[f"{name}_wer"] = round(score.wer, 4)
        card[f"{name}_cer"] = round(score.cer, 4)
    model.save(out_dir)
    card["total_runtime_s"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out_dir / "MODEL_CARD.json", card)
    return card
