"""One share of a large corpus normalised in its own interpreter (see `text._in_processes`):
`python -m stt_flywheel.scoring.normalise_worker NORMALISER` reads a JSON list of strings on
stdin and writes the normalised list on stdout."""

from __future__ import annotations

import sys

import orjson

from stt_flywheel.scoring.text import get_normalizer


def main() -> None:
    fn = get_normalizer(sys.argv[1])._factory()
    texts = orjson.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(orjson.dumps([fn(t) for t in texts]))


if __name__ == "__main__":
    main()
