"""Clip features from raw videos: sliding-window extraction with frozen clip encoders
(:mod:`xmkd.features.extract`), feeding the untrimmed-video feature readers."""

from xmkd.features.extract import (
    ClipEncoder,
    extract_features_folder,
    feature_times,
    load_encoder,
    num_feature_steps,
    train_mae_encoder,
    window_frame_indices,
)

__all__ = [
    "ClipEncoder",
    "extract_features_folder",
    "feature_times",
    "load_encoder",
    "num_feature_steps",
    "train_mae_encoder",
    "window_frame_indices",
]
