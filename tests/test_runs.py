import contextlib
import json
from pathlib import Path

import pytest
import torch

from xmkd.errors import ConfigError
from xmkd.runs import (
    discard_if_failed_empty,
    experiment_name,
    list_versions,
    new_run_dir,
    resolve_run_dir,
    resolve_wandb_mode,
    update_results,
    wandb_run_id,
)


def test_experiment_name_from_config_stem_or_explicit():
    assert experiment_name(["experiments/xkd/xkd_tiny_synthetic.yaml"]) == "xkd_tiny_synthetic"
    assert experiment_name(["a.yaml", "override.yaml"], "mine") == "mine"
    assert experiment_name([]) == "default"
    with pytest.raises(ConfigError, match="experiment"):
        experiment_name([], "../escape")


def test_versions_are_numbered_and_sorted_numerically(tmp_path: Path):
    for _ in range(12):
        new_run_dir(tmp_path, "exp")
    names = [p.name for p in list_versions(tmp_path / "exp")]
    assert names[:3] == ["version_0", "version_1", "version_2"]
    assert names[-1] == "version_11"


def test_resume_auto_picks_newest_run_with_last_checkpoint(tmp_path: Path):
    first = new_run_dir(tmp_path, "exp")
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "last.ckpt").write_bytes(b"x")
    new_run_dir(tmp_path, "exp")  # newer, but crashed before its first checkpoint
    run_dir, ckpt = resolve_run_dir(tmp_path, "exp", "auto")
    assert run_dir == first and ckpt == first / "checkpoints" / "last.ckpt"
    fresh, none = resolve_run_dir(tmp_path, "other", "auto")
    assert fresh.name == "version_0" and none is None


def test_resume_from_bad_path_names_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="resume"):
        resolve_run_dir(tmp_path, "exp", str(tmp_path / "nope"))
    empty = new_run_dir(tmp_path, "exp")
    with pytest.raises(ConfigError, match=r"last\.ckpt"):
        resolve_run_dir(tmp_path, "exp", str(empty))


def test_wandb_id_is_stable_per_run(tmp_path: Path):
    first = wandb_run_id(tmp_path)
    assert first == wandb_run_id(tmp_path)
    assert (tmp_path / "wandb_id.txt").read_text().strip() == first


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "offline"),
        ({"WANDB_MODE": "online"}, "online"),
        ({"WANDB_MODE": "disabled"}, "disabled"),
        ({"WANDB_MODE": "dryrun"}, "offline"),
        ({"WANDB_API_KEY": "k" * 40}, "online"),
        ({"WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline"}, "offline"),
    ],
)
def test_wandb_mode_defaults_to_offline_without_credentials(env, expected, tmp_path: Path):
    assert resolve_wandb_mode(env, netrc_file=tmp_path / "no-netrc") == expected


def test_wandb_mode_online_with_netrc_credentials(tmp_path: Path):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode({}, netrc_file=netrc) == "online"


def test_results_merge_and_json_safe(tmp_path: Path):
    path = tmp_path / "results.json"
    update_results(path, {"a": torch.tensor(0.5), "nan": float("nan")})
    merged = update_results(path, {"b": [torch.tensor(1.0)], "path": Path("x")})
    assert merged == {"a": 0.5, "nan": None, "b": [1.0], "path": "x"}
    assert json.loads(path.read_text()) == merged


def _failed_start(run_dir: Path) -> Path:
    """A run folder as a fit leaves it when it fails before its first step."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "wandb" / "offline-run-1" / "files").mkdir(parents=True)
    (run_dir / ".lock").write_text("pid 1\n")
    (run_dir / "wandb_id.txt").write_text("abc\n")
    (run_dir / "config.yaml").write_text("seed_everything: 0\n")
    (run_dir / "metrics.csv").write_text("epoch,step,train/loss\n")
    return run_dir


def test_a_run_that_fails_before_writing_anything_leaves_no_folder(tmp_path: Path, capsys):
    run_dir = _failed_start(tmp_path / "runs" / "exp" / "version_0")
    with pytest.raises(ConfigError, match="feature_root"), discard_if_failed_empty(run_dir):
        raise ConfigError("feature_root", "not a folder")
    assert not (tmp_path / "runs" / "exp").exists()  # the experiment's only run: its folder goes too
    assert f"removed {run_dir}" in capsys.readouterr().out


@pytest.mark.parametrize("work", ["checkpoint", "metrics row", "figure", "trained", "succeeded", "exit 0"])
def test_a_run_folder_with_work_in_it_is_kept(tmp_path: Path, work: str):
    run_dir = _failed_start(tmp_path / "exp" / "version_3")
    if work == "checkpoint":
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if work == "metrics row":
        (run_dir / "metrics.csv").write_text("epoch,step,train/loss\n0,4,1.5\n")
    if work == "figure":
        (run_dir / "figures").mkdir()
        (run_dir / "figures" / "loss_curves.png").write_bytes(b"x")
    failure = None if work == "succeeded" else SystemExit(0) if work == "exit 0" else RuntimeError("boom")
    with (
        contextlib.suppress(RuntimeError, SystemExit),
        discard_if_failed_empty(run_dir, lambda: work == "trained"),
    ):
        if failure is not None:
            raise failure
    assert (run_dir / "metrics.csv").is_file()
