"""Config errors name the key or path and what was expected; YAML is read only with safe loaders;
exported encoders load with ``weights_only=True`` (and a pickled payload is refused)."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from xmkd.data.datasets.trimmed import TrimmedVideoDataModule
from xmkd.data.datasets.untrimmed import UntrimmedVideoDataModule
from xmkd.errors import ConfigError
from xmkd.models.vit import load_exported_encoder
from xmkd.modules.classifier import VideoClassifier, load_encoder_for_eval
from xmkd.modules.xkd import XKDPretrainer
from xmkd.runner import run_lightning_cli

REPO = Path(__file__).resolve().parents[1]

TINY_MODULE = """
import torch, lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset

class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.1, depth: int = 2):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

class Data(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "tinycfg.py").write_text(TINY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("XMKD_RUN_DIR", raising=False)
    sys.modules.pop("tinycfg", None)
    return tmp_path


def write_config(project: Path, model_args: dict | None = None, data: dict | None = None, **trainer) -> str:
    config = {
        "model": {"class_path": "tinycfg.Tiny", "init_args": model_args or {}},
        "data": data or {"class_path": "tinycfg.Data"},
        "trainer": {"max_steps": 1, "accelerator": "cpu", "enable_progress_bar": False, **trainer},
    }
    (project / "job.yaml").write_text(yaml.safe_dump(config))
    return "job.yaml"


def cli_usage_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        run_lightning_cli(args)
    assert info.value.code != 0
    return capsys.readouterr().err


def test_unknown_model_key_is_named(project: Path, capsys) -> None:
    err = cli_usage_error(["fit", "--config", write_config(project, {"lr": 0.1, "dpeth": 3})], capsys)
    assert "'dpeth' is not accepted" in err and "tinycfg.Tiny" in err
    assert not (project / "runs").exists()  # refused before any run folder is made


def test_wrong_type_names_key_expected_and_given(project: Path, capsys) -> None:
    err = cli_usage_error(["fit", "--config", write_config(project, {"depth": "many"})], capsys)
    assert re.search(r'key "depth":\s+Expected a <class \'int\'>\. Got value: many', err), err[-2000:]


def test_unknown_trainer_key_is_named(project: Path, capsys) -> None:
    err = cli_usage_error(["fit", "--config", write_config(project, bogus_option=1)], capsys)
    assert "trainer.bogus_option" in err


def test_missing_dataset_root_names_key_and_path_through_the_cli(project: Path) -> None:
    missing = project / "no_such_root"
    (project / "train.csv").write_text("a.mp4,0\n")
    data = {
        "class_path": "xmkd.data.datasets.trimmed.TrimmedVideoDataModule",
        "init_args": {"dataset": "csv", "root": str(missing), "annotation": "train.csv", "num_workers": 0},
    }
    with pytest.raises(ConfigError) as info:
        run_lightning_cli(["fit", "--config", write_config(project, data=data), "--runs_dir", "runs"])
    assert info.value.key == "root" and str(missing) in str(info.value) and "csv videos" in str(info.value)


def test_datamodule_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config key 'root': ucf101 needs the folder holding the videos"):
        TrimmedVideoDataModule(dataset="ucf101")
    with pytest.raises(ConfigError, match=r"config key 'dataset'.*ucf101"):
        TrimmedVideoDataModule(dataset="ucf-101")  # type: ignore[arg-type]
    dm = UntrimmedVideoDataModule(
        format="pdan_json", feature_root=str(tmp_path / "no_features"), annotations=[str(tmp_path / "a.json")]
    )
    with pytest.raises(ConfigError) as info:
        dm.setup("fit")
    assert info.value.key == "feature_root" and str(tmp_path / "no_features") in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "key", "expected"),
    [
        ({"variant": "xkdd"}, "variant", "xkd | mas | mats"),
        ({"encoder_size": "huge"}, "encoder_size", "base"),
        ({"loss_weights": {"kd": 1.0, "dk": 1.0}}, "loss_weights", "dk"),
        ({"teacher_view": "both"}, "teacher_view", "local | global"),
        ({"probe_view": "centre"}, "probe_view", "masked | local | global | linear"),
    ],
)
def test_module_config_errors_name_key_and_expectation(kwargs, key, expected) -> None:
    with pytest.raises(ConfigError) as info:
        XKDPretrainer(**kwargs)
    assert info.value.key == key and expected in str(info.value)


def test_classifier_missing_encoder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config key 'encoder_path': .*student_video\.pt: exported"):
        VideoClassifier(str(tmp_path / "student_video.pt"), num_classes=3)


# ------------------------------------------------------------------------------------ safe loading

UNSAFE_YAML = re.compile(
    r"yaml\.(unsafe_load|full_load|load_all)\s*\(|yaml\.(Unsafe|Full)?Loader\b|"
    r"yaml\.load\s*\((?![^)]*Loader\s*=\s*yaml\.(C?SafeLoader))"
)


def test_package_reads_yaml_only_with_safe_loaders() -> None:
    offenders = []
    for path in sorted((REPO / "xmkd").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if UNSAFE_YAML.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "unsafe YAML loading:\n" + "\n".join(offenders)
    # the pattern itself catches what it must, and lets safe calls through
    assert UNSAFE_YAML.search("cfg = yaml.load(f)") and UNSAFE_YAML.search("yaml.unsafe_load(text)")
    assert UNSAFE_YAML.search("yaml.load(f, Loader=yaml.FullLoader)")
    assert not UNSAFE_YAML.search("yaml.safe_load(f)") and not UNSAFE_YAML.search(
        "yaml.load(f, Loader=yaml.SafeLoader)"
    )


class Payload:
    """Unpickling this would run code; ``weights_only=True`` must refuse it."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_exported_encoders_load_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(
        encoder_size="tiny", encoder_depth=1, num_frames=4, img_size=32, tubelet=2, patch_size=16,
        audio_frames=32, audio_local_frames=16, decoder_dim=16, decoder_depth=1, decoder_heads=2,
        head_hidden_dim=16, head_bottleneck_dim=8, head_out_dim=16,
    )  # fmt: skip
    paths = model.export_encoders(tmp_path / "encoders")
    assert set(paths) == {"student_video", "student_audio", "teacher_video", "teacher_audio"}
    for name, path in paths.items():
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values()), name
        role, modality = name.split("_")
        source = getattr(model, role)[modality].state_dict()
        encoder = load_exported_encoder(path)
        assert all(torch.equal(encoder.state_dict()[k], source[k]) for k in source), name
        assert isinstance(load_encoder_for_eval(path), type(encoder))

    # a file that would need full unpickling is refused by both loaders
    evil = tmp_path / "encoders" / "student_video.pt"
    torch.save({"weights": Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_exported_encoder(evil)
    with pytest.raises(pickle.UnpicklingError):
        load_encoder_for_eval(evil)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    from xmkd.runner import config_files, run_lightning_cli

    bad = tmp_path / "broken.yaml"
    bad.write_text("trainer:\n  max_epochs: [1\n")
    assert config_files(["fit", "--config", "a.yaml", "--config=b.yaml"]) == ["a.yaml", "b.yaml"]
    with pytest.raises(ConfigError, match=r"config key 'config': .*broken\.yaml:3: not valid YAML"):
        run_lightning_cli(["fit", "--config", str(bad), "--runs_dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()
