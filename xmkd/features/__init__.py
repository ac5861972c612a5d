"""Clip features from raw videos, feeding the untrimmed-video feature readers: sliding-window
extraction (:mod:`xmkd.features.extract`) with frozen clip encoders (:mod:`xmkd.features.encoders`),
and its command line (:mod:`xmkd.features.cli`)."""

from xmkd.features.encoders import ClipEncoder, load_encoder
from xmkd.features.extract import (
    extract_features_folder,
    feature_times,
    num_feature_steps,
    window_frame_indices,
)

__all__ = [
    "ClipEncoder",
    "extract_features_folder",
    "feature_times",
    "load_encoder",
    "num_feature_steps",
    "window_frame_indices",
]
