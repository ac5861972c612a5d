"""``xmkd data synth-av`` (``xmkd.data.tools.synth_av``)."""

from __future__ import annotations

import argparse
import json

from xmkd.data.io.video_io import probe
from xmkd.data.tools import synth_av


def test_cli_tool(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synth_av.add_arguments(parser)
    argv = "--classes 2 --clips-per-class 1 --duration 1 --size 32 --fps 8 --workers 1 --sample-rate 22050 --allow-empty-splits"
    args = parser.parse_args(["--out", str(tmp_path / "cli"), *argv.split()])
    assert synth_av.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clips"] == 2 and out["classes"] == 2
    clip = next((tmp_path / "cli" / "videos").rglob("*.mp4"))
    assert probe(clip).audio_sample_rate == 22050
