"""benchmarks/xkd_release.py finds the authors' checkout or says what is wrong with the path given."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "xkd_release.py"
_spec = importlib.util.spec_from_file_location("xkd_release", _PATH)
release = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(release)


def fake_checkout(root: Path) -> Path:
    train = root / "codes" / "train"
    (train / "models").mkdir(parents=True)
    (train / "models" / "xkd.py").write_text("")
    (train / release.CONFIG).parent.mkdir(parents=True)
    (train / release.CONFIG).write_text("")
    return train


def test_release_root_from_argument_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = fake_checkout(tmp_path / "XKD")
    monkeypatch.delenv("XKD_RELEASE", raising=False)
    assert release.release_root() is None
    assert release.release_root(str(tmp_path / "XKD")) == train
    assert release.release_root(str(train)) == train  # codes/train itself is fine too
    monkeypatch.setenv("XKD_RELEASE", str(tmp_path / "XKD"))
    assert release.release_root() == train


def test_a_wrong_path_names_itself_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"XKD_RELEASE=.*nowhere.*pritamqu/XKD"):
        release.release_root(str(tmp_path / "nowhere"))
