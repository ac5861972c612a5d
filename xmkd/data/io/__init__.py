"""Reading media: clips, whole videos and audio from video files (``video_io``), the in-memory cache
of decoded videos (``decode_cache``), and optical flow stored as quantised ``.npz`` (``flow``)."""
