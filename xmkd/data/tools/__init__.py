"""The ``xmkd data`` tools that look at or convert a dataset: ``inspect`` (trimmed),
``inspect_untrimmed`` and ``shard`` (litdata shards)."""
