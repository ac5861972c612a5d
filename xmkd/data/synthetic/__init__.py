"""Synthetic datasets generated on first use: the audio-visual set of ``make pretrain-xkd`` (``av``),
the untrimmed feature worlds of ``make distill-detection`` (``motion``, ``untrimmed``) and the raw
untrimmed mp4 world of the raw chains (``raw_untrimmed``), with their shared media helpers."""
