"""Model families behind one interface: load from a directory, transcribe, collate for training, save.

`load_model` picks the family from the saved config, so a model directory is self-describing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stt_flywheel.errors import InputNotFound
from stt_flywheel.models.base import SpeechModel, resolve_device, saved_model_dir
from stt_flywheel.storage.objectstore import is_remote
from stt_flywheel.storage.trees import fetch_tree

__all__ = [
    "SpeechModel",
    "family_of",
    "load_model",
    "model_window_s",
    "resolve_device",
    "saved_model_dir",
    "target_length_check",
]


def family_of(model_dir: str | Path) -> str:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "ctc"


def model_window_s(model_dir: str | Path) -> float | None:
    """The longest audio a saved model hears at once: a Whisper's feature window (30 s), None for
    models with no window (CTC). Read from the processor's config alone, local or `gs://`."""
    import orjson

    from stt_flywheel.storage.objectstore import join_uri, read_uri

    try:
        if not orjson.loads(read_uri(join_uri(model_dir, "config.json"))).get("is_encoder_decoder"):
            return None
    except (OSError, ValueError, KeyError):
        return None
    # transformers 5 saves the feature extractor inside processor_config.json; older saves beside it
    for name, key in (("processor_config.json", "feature_extractor"), ("preprocessor_config.json", None)):
        try:
            settings = orjson.loads(read_uri(join_uri(model_dir, name)))
        except (OSError, ValueError, KeyError):
            continue
        chunk = (settings.get(key) or {} if key else settings).get("chunk_length")
        if isinstance(chunk, int | float):
            return float(chunk)
    return None


def target_length_check(model_dir: str | Path) -> Callable[[str], str | None] | None:
    """For a Whisper: a check that says why a transcript is too long to be one training target
    (its labels past the decoder's `max_target_positions`), None when it fits; None for models
    without such a limit (CTC). A target's tokens never outnumber its UTF-8 bytes plus the five
    special ones, so the tokenizer is loaded only for a transcript long enough to need it."""
    import orjson

    from stt_flywheel.storage.objectstore import join_uri, read_uri

    try:
        config = orjson.loads(read_uri(join_uri(model_dir, "config.json")))
    except (OSError, ValueError):
        return None
    limit = config.get("max_target_positions")
    if not config.get("is_encoder_decoder") or not isinstance(limit, int):
        return None
    tokenizer: Any = None

    def check(text: str) -> str | None:
        nonlocal tokenizer
        if len(text.encode()) + 5 <= limit:
            return None
        if tokenizer is None:
            from transformers import WhisperTokenizer

            local = fetch_tree(model_dir, "config.json") if is_remote(model_dir) else Path(model_dir)
            tokenizer = WhisperTokenizer.from_pretrained(str(local))
        # the labels: the prompt without its first token (the decoder's start), the text, the end
        tokens = len(tokenizer(" " + text).input_ids) - 1
        return f"{tokens} label tokens > the model's {limit}" if tokens > limit else None

    return check


def load_model(model_dir: str | Path, device: str = "auto") -> SpeechModel:
    """Load a saved model (model + processor) as the right adapter, from a directory or a `gs://` prefix."""
    model_dir = fetch_tree(model_dir, "config.json") if is_remote(model_dir) else Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise InputNotFound(f"not a saved model directory (no config.json): {model_dir}")
    if family_of(model_dir) == "seq2seq":
        from stt_flywheel.models.seq2seq import Seq2SeqSpeechModel

        return Seq2SeqSpeechModel.load(model_dir, device=device)
    from stt_flywheel.models.ctc import CTCSpeechModel

    return CTCSpeechModel.load(model_dir, device=device)
