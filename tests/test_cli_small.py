"""Small things a new user meets first: `xmkd --help` and `--version`, synth-av sets that inspect would
reject, progress while the synthetic set renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import xmkd
from xmkd.cli import main
from xmkd.data.synthetic.av import SyntheticAVParams, empty_splits, make_synthetic_av
from xmkd.errors import ConfigError


def test_help_is_plain_text_and_lists_export(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out
    assert "xmkd export --ckpt CKPT --out DIR" in out and "Checkpoint tools: export" in out


def test_the_command_reports_bad_input_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """``xmkd``: the message that names the file, exit status 2, no traceback (XMKD_TRACEBACK=1: raised)."""
    from xmkd.cli import console_main

    missing = tmp_path / "missing.ckpt"
    monkeypatch.setattr("sys.argv", ["xmkd", "export", "--ckpt", str(missing), "--out", str(tmp_path / "o")])
    monkeypatch.delenv("XMKD_TRACEBACK", raising=False)
    assert console_main() == 2
    err = capsys.readouterr().err
    assert err.strip() == f"xmkd export: error: config key 'ckpt': {missing}: checkpoint not found"
    monkeypatch.setattr("sys.argv", ["xmkd", "data", "inspect", "ucf101", "--root", str(tmp_path / "nope"),
                                     "--splits", str(tmp_path)])  # fmt: skip
    assert console_main() == 2
    assert f"{tmp_path / 'nope'} is not a folder" in capsys.readouterr().err
    monkeypatch.setenv("XMKD_TRACEBACK", "1")
    monkeypatch.setattr("sys.argv", ["xmkd", "export", "--ckpt", str(missing), "--out", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="checkpoint not found"):
        console_main()


def test_a_refusal_reported_through_another_error_is_still_one_line(monkeypatch, capsys) -> None:
    """A config parser reports a class's ConfigError as its own error, raised from it; a plain bug
    keeps its traceback."""
    from xmkd import cli

    def parser_error(argv=None):
        try:
            raise ConfigError("encoder_path", "enc.pt: exported encoder weights not found")
        except ConfigError as e:
            raise ValueError("Does not validate against any of the Union subtypes") from e

    monkeypatch.delenv("XMKD_TRACEBACK", raising=False)
    monkeypatch.setattr("sys.argv", ["xmkd", "fit", "--config", "x.yaml"])
    monkeypatch.setattr(cli, "main", parser_error)
    assert cli.console_main() == 2
    assert capsys.readouterr().err.strip() == (
        "xmkd fit: error: config key 'encoder_path': enc.pt: exported encoder weights not found"
    )
    monkeypatch.setattr(cli, "main", lambda argv=None: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.console_main()


def test_a_bad_file_met_in_a_dataloader_worker_is_one_line(monkeypatch, capsys) -> None:
    """A worker's MediaError reaches the main process as a RuntimeError holding its traceback as text."""
    from torch.utils.data import DataLoader, Dataset

    from xmkd import cli
    from xmkd.errors import MediaError

    class Truncated(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            raise MediaError("/data/v_Archery_g01_c01.avi", "truncated: data ends at 1.00 s of 3.00 s")

    monkeypatch.delenv("XMKD_TRACEBACK", raising=False)
    monkeypatch.setattr("sys.argv", ["xmkd", "pipeline", "linear-eval"])
    monkeypatch.setattr(cli, "main", lambda argv=None: next(iter(DataLoader(Truncated(), num_workers=1))))
    assert cli.console_main() == 2
    assert capsys.readouterr().err.strip() == (
        "xmkd pipeline linear-eval: error: /data/v_Archery_g01_c01.avi: truncated: data ends at 1.00 s of 3.00 s"
    )


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"xmkd {xmkd.__version__}"


def test_empty_splits_are_named() -> None:
    # 3 clips per class in groups of 3: one scene group, which fold 1 tests whole: nothing to train on
    assert empty_splits(SyntheticAVParams(classes=4, clips_per_class=3)) == [
        "splits/trainlist01.txt", "splits/testlist02.txt", "splits/testlist03.txt",
    ]  # fmt: skip
    assert empty_splits(SyntheticAVParams(classes=2, clips_per_class=6, clips_per_group=1)) == []


def test_synth_av_refuses_a_set_whose_first_fold_is_empty(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    with pytest.raises(ConfigError, match=r"splits/trainlist01.txt.* would list no videos"):
        main(["data", "synth-av", "--out", str(out), "--classes", "4", "--clips-per-class", "3"])
    assert not (out / "videos").exists()  # refused before rendering anything


def test_synth_av_warns_about_empty_later_folds_and_shows_progress(tmp_path: Path, capsys) -> None:
    params = {
        "classes": 1,
        "clips_per_class": 2,
        "clips_per_group": 1,
        "duration": 0.5,
        "size": 32,
        "fps": 8.0,
    }
    with pytest.warns(UserWarning, match=r"splits/testlist03.txt would list no videos"):
        make_synthetic_av(tmp_path / "a", workers=1, **params)
    err = capsys.readouterr().err
    assert "synth-av: rendering 2 clips" in err and "synth-av: 2/2 clips" in err
    argv = ["data", "synth-av", "--out", str(tmp_path / "b"), "--classes", "1", "--clips-per-class", "2",
            "--clips-per-group", "1", "--duration", "0.5", "--size", "32", "--fps", "8", "--workers", "1"]  # fmt: skip
    with pytest.warns(UserWarning):
        assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train"] == [1, 1, 2] and summary["test"] == [1, 1, 0]


def test_either_option_spelling_works() -> None:
    from xmkd.cli import option_spelling

    argv = [
        "--runs_dir",
        "r",
        "--clips_per_class=3",
        "--model.init_args.lr_factor=0.5",
        "a_b",
        "--override",
        "x_y=1",
    ]
    assert option_spelling(argv, "-") == [
        "--runs-dir", "r", "--clips-per-class=3", "--model.init_args.lr_factor=0.5", "a_b", "--override", "x_y=1",
    ]  # fmt: skip
    assert option_spelling(["--runs-dir", "r", "--checkpoint-every-n-steps=5", "--trainer.max_epochs", "2"], "_") == [
        "--runs_dir", "r", "--checkpoint_every_n_steps=5", "--trainer.max_epochs", "2",
    ]  # fmt: skip


def test_dotted_flags_become_overrides() -> None:
    from xmkd.cli import split_dotted_overrides

    rest, overrides = split_dotted_overrides(
        ["--seeds", "3", "--model.init_args.lr", "1e-4", "--trainer.max_epochs=2", "--override", "a.b=1"]
    )
    assert rest == ["--seeds", "3", "--override", "a.b=1"]
    assert overrides == ["model.init_args.lr=1e-4", "trainer.max_epochs=2"]
    with pytest.raises(ConfigError, match="needs a value"):
        split_dotted_overrides(["--model.init_args.lr"])
    # after a bare --, arguments pass through untouched (finetune's fit arguments)
    assert split_dotted_overrides(["--folds", "1", "--", "--model.init_args.lr", "1"]) == (
        ["--folds", "1", "--", "--model.init_args.lr", "1"],
        [],
    )


def test_pipelines_take_fits_dotted_flags(monkeypatch, capsys) -> None:
    import xmkd.pipelines.finetune as finetune
    import xmkd.pipelines.linear_eval as linear_eval
    import xmkd.pipelines.pretrain_xkd as pretrain_xkd

    seen = {}
    monkeypatch.setattr(pretrain_xkd, "run", lambda args: seen.setdefault("args", args) and 0)
    monkeypatch.setattr(linear_eval, "run", lambda args: 0)
    monkeypatch.setattr(finetune, "run", lambda args: seen.setdefault("finetune", args) and 0)
    assert (
        main(["pipeline", "pretrain-xkd", "--override", "seed_everything=3", "--model.init_args.lr", "1e-4"])
        == 0
    )
    assert seen["args"].override == ["seed_everything=3", "model.init_args.lr=1e-4"]
    # finetune passes fit arguments through, after -- or as dotted flags
    assert main(["pipeline", "finetune", "--trainer.max_epochs", "2", "--", "--model.init_args.lr", "1"]) == 0
    assert seen["finetune"].extra == ["--", "--model.init_args.lr", "1", "--trainer.max_epochs=2"]
    with pytest.raises(SystemExit):  # a pipeline without config overrides says so instead of ignoring it
        main(["pipeline", "linear-eval", "--trainer.max_epochs", "2"])
    assert "takes no config overrides (trainer.max_epochs=2)" in capsys.readouterr().err


def test_data_tools_take_underscored_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="would list no videos"):  # parsed: the refusal, not a usage error
        main(["data", "synth-av", "--out", str(tmp_path), "--classes", "4", "--clips_per_class", "3"])


def test_synthetic_untrimmed_generation_says_what_it_does(tmp_path: Path, capsys) -> None:
    from xmkd.data.synthetic.untrimmed import ensure_synthetic_untrimmed

    ensure_synthetic_untrimmed(tmp_path / "world", videos=8)
    err = capsys.readouterr().err
    assert (
        f"synth-untrimmed: generating the 'motion' world into {tmp_path / 'world'}" in err
        and "done in" in err
    )
    ensure_synthetic_untrimmed(tmp_path / "world", videos=8)  # already there: silent
    assert capsys.readouterr().err == ""
