"""linear-eval's options: one typed description for flags and the svm_*.yaml files."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from xmkd.errors import ConfigError
from xmkd.pipelines import linear_eval as le

SVM_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "eval").glob("svm_*.yaml"))


def test_flags_and_options_are_the_same_set_with_the_same_defaults() -> None:
    parser = argparse.ArgumentParser()
    le.add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    assert defaults == dataclasses.asdict(le.LinearEvalOptions())


@pytest.mark.parametrize("config", SVM_CONFIGS, ids=lambda p: p.stem)
def test_every_svm_config_is_a_typed_config(config: Path) -> None:
    args = le._defaults()
    args.config = str(config)
    args = le.apply_config(args, vars(le._defaults()))
    assert args.dataset in ("synthetic", "ucf101", "hmdb51", "esc50")


def test_a_bad_key_or_value_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "svm_bad.yaml"
    bad.write_text("dataset: ucf101\ntrain_clip: 25\n")
    args = le._defaults()
    args.config = str(bad)
    with pytest.raises(ConfigError, match=r"'train_clip': unknown option in .*svm_bad.yaml"):
        le.apply_config(args, vars(le._defaults()))
    bad.write_text("c_grid: 0.1\n")
    with pytest.raises(ConfigError, match=r"'c_grid': in .*svm_bad.yaml: expected list\[float\] \| None"):
        le.apply_config(args, vars(le._defaults()))
    bad.write_text("dataset: ucf\n")
    with pytest.raises(ConfigError, match="'dataset': must be one of"):
        le.apply_config(args, vars(le._defaults()))
    bad.write_text("dataset: ucf101\nc_grid: [0.1, 1\n")
    with pytest.raises(ConfigError, match=r"'config': .*svm_bad\.yaml:\d+: not valid YAML"):
        le.apply_config(args, vars(le._defaults()))


def test_a_missing_encoder_is_named_by_the_option_given(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    le.add_arguments(parser)
    args = parser.parse_args(["--ckpt", str(tmp_path / "enc.pt"), "--out", str(tmp_path / "out")])
    with pytest.raises(
        ConfigError, match=rf"config key 'ckpt': {tmp_path / 'enc.pt'}: exported encoder not found"
    ):
        le.run(args)
    assert not (tmp_path / "out").exists()


def test_missing_videos_are_named_or_left_out_of_every_fold(tmp_path: Path, capsys) -> None:
    from xmkd.data.readers.trimmed import ClipRecord

    def rec(name: str) -> ClipRecord:
        return ClipRecord(path=str(tmp_path / f"{name}.avi"), label=0, video_id=name)

    for name in ("a", "b", "d"):
        (tmp_path / f"{name}.avi").write_bytes(b"x")
    per_fold = {1: ([rec("a"), rec("c")], [rec("b")]), 2: ([rec("b")], [rec("a"), rec("d"), rec("c")])}
    assert le.drop_missing_videos(per_fold, "error") == (per_fold, 0)
    kept, dropped = le.drop_missing_videos(per_fold, "skip")
    assert dropped == 1 and {
        k: ([r.video_id for r in tr], [r.video_id for r in te]) for k, (tr, te) in kept.items()
    } == {
        1: (["a"], ["b"]),
        2: (["b"], ["a", "d"]),
    }
    assert (
        f"1 of 4 listed videos are missing on disk and left out of every fold; first: {tmp_path / 'c.avi'}"
        in (capsys.readouterr().out)
    )
    with pytest.raises(ConfigError, match="'missing': none of the 1 listed videos is on disk"):
        le.drop_missing_videos({1: ([rec("z")], [])}, "skip")
