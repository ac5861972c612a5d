"""xmkd: cross-modal knowledge distillation for video (XKD pretraining, Augmented-RGB detection)."""

__version__ = "0.1.0"
