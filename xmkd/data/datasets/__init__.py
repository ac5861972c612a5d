"""Datasets and LightningDataModules: trimmed clips (``trimmed``), untrimmed feature sequences
(``untrimmed``), clip arrays for MAE-only encoders (``clip_arrays``), sharded streaming (``shards``);
their transforms (per clip and per batch), samplers and the bad-input policy."""
