"""stt-flywheel: turn user corrections of a deployed speech-to-text model into a better model."""

__version__ = "0.1.0"
