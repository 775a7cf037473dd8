"""The synthetic world the demo and the tests live in.

Two domains of English commands spoken by espeak-ng voices: a *general* domain (home and errands)
that the committed base model was trained on, and a *new* domain (a pharmacy assistant) full of drug
names the base model never heard. Sentences are drawn from templates with a seeded RNG, so the same
seed always gives the same world.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stt_flywheel.data.audio import audio_hash, decode_audio, encode_wav
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.demo.synth import VOICES, Voice, synthesize

__all__ = ["GENERAL", "NEW_DOMAIN", "Domain", "make_sentences", "random_voice", "synthesize_set"]


@dataclass(frozen=True)
class Domain:
    name: str
    templates: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]

    def sentence(self, rng: random.Random) -> str:
        template = rng.choice(self.templates)
        words = []
        for token in template.split():
            if token.startswith("{") and token.endswith("}"):
                words.append(rng.choice(self.slots[token[1:-1]]))
            else:
                words.append(token)
        return " ".join(words)

    @property
    def vocabulary(self) -> set[str]:
        words = {w for t in self.templates for w in t.split() if not w.startswith("{")}
        for values in self.slots.values():
            for v in values:
                words.update(v.split())
        return words


GENERAL = Domain(
    name="general",
    templates=(
        "please {verb} the {thing} in the {room}",
        "can you {verb} the {thing}",
        "{verb} the {room} {thing} {time}",
        "remind me to call {person} {time}",
        "what is the weather {time}",
        "set a timer for {number} minutes",
        "add {number} {food} to the shopping list",
        "play some {music} music in the {room}",
        "turn the {room} lights {onoff}",
        "send a message to {person} saying i am {status}",
        "how long does it take to drive to the {place}",
        "is the {place} open {time}",
    ),
    slots={
        "verb": ("open", "close", "clean", "check", "move", "fix", "lock", "find"),
        "thing": ("window", "door", "table", "lamp", "fridge", "oven", "curtains", "heater", "garage"),
        "room": ("kitchen", "bedroom", "garden", "office", "hallway", "bathroom", "living room"),
        "time": ("today", "tomorrow", "tonight", "this morning", "next week", "on monday", "at noon"),
        "person": ("mother", "david", "sarah", "the doctor", "my brother", "anna", "the office"),
        "number": ("two", "three", "five", "ten", "twelve", "twenty", "forty"),
        "food": ("apples", "eggs", "bread", "onions", "lemons", "bananas", "carrots", "potatoes"),
        "music": ("jazz", "rock", "piano", "quiet", "happy", "classical"),
        "onoff": ("on", "off", "down", "up"),
        "status": ("late", "on my way", "at home", "running late", "outside"),
        "place": ("airport", "station", "library", "market", "beach", "museum", "school"),
    },
)

NEW_DOMAIN = Domain(
    name="pharmacy",
    templates=(
        "refill my {drug} prescription",
        "is {drug} safe with {drug}",
        "take two {drug} tablets",
        "order {drug} and {drug}",
        "how much {drug} can i take",
        "{drug} causes {effect}",
        "switch from {drug} to {drug}",
        "check the {drug} dose",
    ),
    slots={
        "drug": (
            "ibuprofen",
            "amoxicillin",
            "metformin",
            "lisinopril",
            "atorvastatin",
            "omeprazole",
            "gabapentin",
            "prednisone",
            "warfarin",
            "cetirizine",
            "levothyroxine",
            "azithromycin",
        ),
        "effect": ("nausea", "dizziness", "insomnia", "migraine", "drowsiness", "heartburn"),
    },
)


def make_sentences(domain: Domain, count: int, seed: int) -> list[str]:
    rng = random.Random(f"{domain.name}:{seed}")
    return [domain.sentence(rng) for _ in range(count)]


def random_voice(
    rng: random.Random, voices: tuple[str, ...] = VOICES, speed: tuple[int, int] = (135, 185)
) -> Voice:
    return Voice(name=rng.choice(voices), speed=rng.randint(*speed), pitch=rng.randint(25, 75))


def _render(args: tuple[str, str, Voice, Path, str]) -> Utterance:
    utt_id, text, voice, out_dir, domain = args
    wav = encode_wav(synthesize(text, voice))
    samples = decode_audio(wav).samples  # hash what a reader of the file will see
    path = out_dir / f"{utt_id}.wav"
    path.write_bytes(wav)
    return Utterance(
        id=utt_id,
        audio=str(path),
        text=text,
        speaker=voice.name,  # a speaker is a voice; speed and pitch vary from utterance to utterance
        domain=domain,
        duration_s=round(len(samples) / 16_000, 3),
        audio_sha256=audio_hash(samples),
    )


def synthesize_set(
    prefix: str,
    domain: Domain,
    count: int,
    seed: int,
    out_dir: Path,
    *,
    voices: tuple[str, ...] = VOICES,
    speed: tuple[int, int] = (135, 185),
    workers: int = 4,
) -> list[Utterance]:
    """Synthesise `count` utterances of `domain` into `out_dir`; deterministic for a seed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"voices:{prefix}:{seed}")
    jobs: Iterator[tuple[str, str, Voice, Path, str]] = (
        (f"{prefix}-{i:05d}", text, random_voice(rng, voices, speed), out_dir, domain.name)
        for i, text in enumerate(make_sentences(domain, count, seed))
    )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_render, jobs))
