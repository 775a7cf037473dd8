"""One share of a large corpus normalised in its own interpreter (see `text._in_processes`):
`python -m stt_flywheel.scoring.normalise_worker NORMALISER` reads a JSON list of strings on
stdin and writes the normalised list on stdout."""

from __future__ import annotations

import sys

import orjson

from stt_flywheel.errors import InputError
from stt_flywheel.scoring.text import get_normalizer


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stt_flywheel.scoring.normalise_worker NORMALISER < texts.json")
    try:
        batch = get_normalizer(sys.argv[1]).batch()
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    try:
        texts = orjson.loads(sys.stdin.buffer.read())
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"stdin is not JSON ({exc}): expected a list of strings") from None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SystemExit("expected a JSON list of strings on stdin")
    sys.stdout.buffer.write(orjson.dumps(batch(texts)))


if __name__ == "__main__":
    main()
