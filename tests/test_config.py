"""Configs: variants, typed overrides, the resolved config written beside outputs."""

import json
import subprocess
import sys

import pytest

from t2v import config as config_lib


def test_variant_and_overrides():
    cfg = config_lib.load("configs/synth.py:tiny", ["--config.synth.size=64", "--config.synth.langs=en,de",
                                                    "--config.optimizer.lr=3e-4", "--config.train.compute_dtype=bfloat16"])
    assert cfg.synth.clips == 4  # from the tiny variant
    assert cfg.synth.size == 64 and isinstance(cfg.synth.size, int)
    assert cfg.synth.langs == "en,de"
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.train.compute_dtype == "bfloat16"


def test_config_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_lib.load("configs/synth.py").synth.clips == 100
    assert config_lib.load("synth.py:tiny").synth.clips == 4


@pytest.mark.parametrize("override, problem", [
    ("--config.synth.nope=1", "no field"),
    ("--config.synth.size=big", "cannot parse"),
    ("--config.synth.size=1.5", "expected int"),
    ("--config.synth.size", "missing '=value'"),
])
def test_bad_overrides_say_what_is_wrong(override, problem):
    with pytest.raises((KeyError, ValueError), match=problem):
        config_lib.load("configs/synth.py", [override])


def test_unknown_variant_and_file():
    with pytest.raises(ValueError, match="unknown variant"):
        config_lib.load("configs/synth.py:huge")
    with pytest.raises(FileNotFoundError, match="no such config"):
        config_lib.load("configs/nonexistent.py")


def test_write_records_config_and_version(tmp_path):
    from t2v import __version__

    cfg = config_lib.load("configs/synth.py:tiny")
    out = config_lib.write(cfg, tmp_path / "run")
    record = json.loads(out.read_text())
    assert record["t2v_version"] == __version__
    assert record["config"]["synth"]["clips"] == 4


def test_cli_prints_resolved_config_and_one_line_errors():
    ok = subprocess.run([sys.executable, "-m", "t2v.cli", "config", "--config", "configs/synth.py:tiny",
                         "--config.synth.seed=5"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["synth"]["seed"] == 5
    bad = subprocess.run([sys.executable, "-m", "t2v.cli", "config", "--config", "configs/synth.py",
                          "--config.synth.size=big"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "cannot parse" in bad.stderr
