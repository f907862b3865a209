"""Configs are Python: `configs/<experiment>.py` defines `get_config(arg)`.

    load("configs/motion.py:tiny", ["--config.optimizer.lr=3e-4"])

The part after the colon is handed to `get_config` (a variant name such as `tiny` or
`base`, optionally followed by `,key=value` pairs the experiment understands). Overrides
are applied last and keep the type of the field they replace.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path
from typing import Sequence

import ml_collections

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def resolve_path(path: str) -> Path:
    """A config path as given, else relative to the repository's `configs/` folder."""
    candidates = [Path(path), REPO_CONFIGS / path, REPO_CONFIGS / Path(path).name]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise FileNotFoundError(f"{path}: no such config file (also looked in {REPO_CONFIGS})")


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `path.py[:arg]` and applies `--config.a.b=value` overrides."""
    path, _, arg = spec.partition(":")
    file = resolve_path(path)
    # Experiments import their shared base as `from configs import base`.
    root = str(file.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(f"{file.parent.name}.{file.stem}")
    config = module.get_config(arg or None)
    return apply_overrides(config, overrides)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())  # a private, unlocked copy
    for item in overrides:
        if not item.startswith("--config."):
            raise ValueError(f"{item}: overrides look like --config.a.b=value")
        key, sep, raw = item[len("--config."):].partition("=")
        if not sep:
            raise ValueError(f"{item}: missing '=value'")
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            if name not in node:
                raise KeyError(f"{item}: config has no field {key!r}")
            node = node[name]
        if leaf not in node:
            raise KeyError(f"{item}: config has no field {key!r}")
        node[leaf] = _parse_like(raw, node[leaf], item)
    return config


def _parse_like(raw: str, current, item: str):
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{item}: expected a boolean")
    if isinstance(current, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if current is None:
            return raw
        raise ValueError(f"{item}: cannot parse {raw!r} as {type(current).__name__}") from None
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if current is not None and not isinstance(value, type(current)) and not (
        isinstance(current, (list, tuple)) and isinstance(value, (list, tuple))
    ):
        raise ValueError(f"{item}: expected {type(current).__name__}, got {type(value).__name__}")
    return value


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def write(config: ml_collections.ConfigDict, directory: str | Path, name: str = "config.json") -> Path:
    """Writes the resolved config and the package version beside an output."""
    from t2v import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    record = {"t2v_version": __version__, "config": json.loads(to_json(config))}
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out
