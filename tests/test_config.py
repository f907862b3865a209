"""Configs: variants, typed overrides (rejected in one line), the resolved config written beside outputs."""

import json
import re
import subprocess
import sys

import pytest

from t2v import config as config_lib
from t2v.errors import InputError


def test_variant_and_overrides():
    cfg = config_lib.load("configs/synth.py:tiny", ["--config.synth.size=64", "--config.synth.langs=en,de"])
    assert cfg.synth.clips == 4  # from the tiny variant
    assert cfg.synth.size == 64 and isinstance(cfg.synth.size, int)
    assert cfg.synth.langs == "en,de"
    cfg = config_lib.load("configs/motion.py:tiny", [
        "--config.optimizer.lr=3", "--config.train.compute_dtype=bfloat16", "--config.model.audio.causal=true",
        "--config.model.identity.hidden_features=(16, 8)", "--config.optimizer.freeze=['^audio_encoder/']",
        "--config.optimizer.lr_multipliers={'identity_encoder/': 0.1}"])
    assert cfg.optimizer.lr == 3.0 and isinstance(cfg.optimizer.lr, float)  # an int literal for a float field
    assert cfg.train.compute_dtype == "bfloat16" and cfg.model.audio.causal is True
    assert cfg.model.identity.hidden_features == (16, 8)
    assert cfg.optimizer.freeze == ["^audio_encoder/"]
    assert cfg.optimizer.lr_multipliers.to_dict() == {"identity_encoder/": 0.1}


def test_placeholders_keep_their_type():
    cfg = config_lib.load("configs/generate.py")
    assert cfg.generate.temperature is None and cfg.generate.render_batch is None
    cfg = config_lib.load("configs/generate.py", ["--config.generate.temperature=1", "--config.generate.render_batch=8"])
    assert cfg.generate.temperature == 1.0 and isinstance(cfg.generate.temperature, float)
    assert cfg.generate.render_batch == 8
    with pytest.raises(InputError, match="cannot parse '0.5' as int"):
        config_lib.load("configs/generate.py", ["--config.generate.render_batch=0.5"])


def test_the_loaded_config_is_a_copy():
    base = config_lib.load("configs/export.py")
    changed = config_lib.apply_overrides(base, ["--config.export.onnx=false"])
    assert base.export.onnx is True and changed.export.onnx is False


def test_no_key_drives_nothing():
    # The audio constants live in t2v.audio; a config copy of them was read by nothing.
    assert "audio" not in config_lib.load("configs/base.py")
    # Commands that are not experiments hold only their own section.
    assert set(config_lib.load("configs/synth.py")) == {"task", "synth"}
    assert set(config_lib.load("configs/prepare.py")) == {"task", "prepare"}
    assert set(config_lib.load("configs/generate.py")) == {"generate"}
    assert set(config_lib.load("configs/export.py")) == {"export"}


def test_config_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_lib.load("configs/synth.py").synth.clips == 100
    assert config_lib.load("synth.py:tiny").synth.clips == 4


@pytest.mark.parametrize("override, problem", [
    ("--config.synth.nope=1", "config has no field 'synth.nope'"),
    ("--config.nope.deeper=1", "config has no field 'nope.deeper'"),
    ("--config.synth.size.deeper=1", "config has no field 'synth.size.deeper'"),
    ("--config.synth.size=big", "cannot parse 'big' as int"),
    ("--config.synth.size=1.5", "cannot parse '1.5' as int"),
    ("--config.synth.size", "missing '=value'"),
    ("--config.synth=3", "cannot parse '3' as ConfigDict"),
    ("--synth.size=3", "overrides look like --config.a.b=value"),
])
def test_bad_overrides_say_what_is_wrong(override, problem):
    with pytest.raises(InputError, match=re.escape(f"{override}: {problem}")) as error:
        config_lib.load("configs/synth.py", [override])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("override, problem", [
    ("--config.optimizer.freeze=3", "cannot parse '3' as list"),
    ("--config.model.audio.causal=maybe", "cannot parse 'maybe' as bool (Non-boolean argument to boolean flag)"),
    ("--config.optimizer.lr=fast", "cannot parse 'fast' as float"),
])
def test_bad_typed_overrides(override, problem):
    with pytest.raises(InputError, match=re.escape(f"{override}: {problem}")):
        config_lib.load("configs/motion.py:tiny", [override])


def test_unknown_variant_and_file():
    with pytest.raises(InputError, match="unknown variant"):
        config_lib.load("configs/synth.py:huge")
    with pytest.raises(InputError, match="no such config"):
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
