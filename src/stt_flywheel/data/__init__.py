"""Data: audio decoding, utterance manifests, the error store and the fine-tuning datasets built from it."""
