"""Scoring: versioned text normalisers, sclite-exact alignment, corpus WER/CER and paired statistics.

Pure: no I/O beyond reading transcript files, no models."""
