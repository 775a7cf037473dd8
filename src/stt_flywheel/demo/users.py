"""The demo's users: synthetic people who ask for transcripts and correct them."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from stt_flywheel.data.identity import KEY_FILE
from stt_flywheel.data.manifest import Utterance

__all__ = ["DEMO_KEY", "DEMO_USERS", "demo_identity_key", "demo_user"]


DEMO_USERS = 64
DEMO_KEY = hashlib.sha256(b"stt-flywheel demo: synthetic users").hexdigest()


def demo_user(utt: Utterance) -> str:
    """The app's id of the user who asked for this utterance: one of `DEMO_USERS`, by its id."""
    return f"demo-user-{int(hashlib.sha256(utt.id.encode()).hexdigest()[:8], 16) % DEMO_USERS:02d}"


def demo_identity_key(state_dir: Path) -> None:
    """The demo's users are synthetic: their pseudonyms, and with them the held-out split (by
    user), are the same in every demo run under this fixed key. A deployment's key is random
    (`data.identity`), made on first use."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(state_dir / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(DEMO_KEY + "\n")
