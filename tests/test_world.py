from pathlib import Path

from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, make_sentences, synthesize_set


def test_new_domain_words_are_unknown_to_the_general_domain() -> None:
    """The demo's premise: the base model (trained on GENERAL) never heard a drug name."""
    drugs = set(NEW_DOMAIN.slots["drug"]) | set(NEW_DOMAIN.slots["effect"])
    assert not drugs & GENERAL.vocabulary


def test_sentences_are_deterministic_per_seed() -> None:
    assert make_sentences(GENERAL, 20, seed=3) == make_sentences(GENERAL, 20, seed=3)
    assert make_sentences(GENERAL, 20, seed=3) != make_sentences(GENERAL, 20, seed=4)


def test_synthesis_is_reproducible(tmp_path: Path) -> None:
    a = synthesize_set("x", NEW_DOMAIN, 3, 5, tmp_path / "a")
    b = synthesize_set("x", NEW_DOMAIN, 3, 5, tmp_path / "b")
    assert [u.audio_sha256 for u in a] == [u.audio_sha256 for u in b]
    assert [u.text for u in a] == [u.text for u in b]
    assert all(u.domain == "pharmacy" for u in a)
    assert all(u.speaker for u in a)  # every utterance is said by a named voice
    assert all(Path(u.audio).exists() for u in a)
