"""`stt-flywheel ui`: the served dashboard — what serves now and whether it is well, versions side
by side, runs and everything they touched, canaries, live quality by the hour, one utterance with
its audio, and the review queue. See `app`."""
