"""Transcript records as the tests feed them to the error store."""

from datetime import UTC, datetime

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def record(i: int, *, wrong: bool = True, corrected: bool = True, when: datetime = T0) -> dict:
    """Record `r<i>`: wrong and corrected by default, at T0."""
    return {
        "id": f"r{i}",
        "audio_uri": f"/audio/{i}.wav",
        "hypothesis": "take two ibuprofin" if wrong else "take two ibuprofen",
        "corrected_text": ("take two ibuprofen" if corrected else None) if wrong else None,
        "flagged": wrong and not corrected,
        "timestamp": when.isoformat(),
    }
