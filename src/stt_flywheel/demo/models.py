"""The demo's models: the must-pass utterances the production model is surest of, and a
deliberately worse copy of a model for `demo --bad-canary`."""

from __future__ import annotations

from pathlib import Path

from stt_flywheel.config import ConfigError, FlywheelConfig
from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.manifest import read_manifest
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.scoring.text import normalize

__all__ = ["degraded_model", "pick_must_pass"]


def pick_must_pass(config: FlywheelConfig, manifest: Path, limit: int = 8) -> list[str]:
    """Critical-suite utterances the production model transcribes exactly today and is surest of
    (the lowest loss of their references): they must stay right. One it gets right only just (the
    tiny demo model's "garage", a letter from "garge") would turn the gate into a coin toss."""
    from stt_flywheel.models import load_model

    utts = read_manifest(manifest)
    production = open_registry(config).resolve("default")
    if production is None:
        raise ConfigError("the must-pass utterances are chosen by the production model: register one first")
    model = load_model(production.uri, device="cpu")
    audios = [load_audio(u.audio).samples for u in utts]
    hyps = model.transcribe(audios)
    losses = model.reference_losses(audios, [u.text for u in utts])
    right = sorted(
        (loss, u.id)
        for u, h, loss in zip(utts, hyps, losses, strict=True)
        if normalize(h) == normalize(u.text)
    )
    return sorted(uid for _, uid in right[:limit])


def degraded_model(model_dir: str | Path, out_dir: Path, share: float, seed: int = 0) -> Path:
    """A copy of a model moved `share` of the way towards a random initialisation of its own
    architecture: the deliberately bad candidate of `demo --bad-canary` (at 0.02 the committed base
    model drops letters in about half of the general domain's sentences it got right)."""
    import torch

    from stt_flywheel.models import load_model

    model = load_model(str(model_dir), device="cpu")
    torch.manual_seed(seed)
    fresh = type(model.model)(model.model.config).state_dict()
    with torch.no_grad():
        for name, weight in model.model.state_dict().items():
            if weight.is_floating_point() and name in fresh:
                weight.mul_(1 - share).add_(fresh[name], alpha=share)
    model.save(out_dir)
    return out_dir
