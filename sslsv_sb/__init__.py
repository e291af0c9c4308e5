"""Self-supervised speaker verification, native to SpeechBrain."""

__version__ = "0.1.0"
