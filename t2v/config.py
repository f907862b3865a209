"""Configs are Python: `configs/<experiment>.py` defines `get_config(arg)`.

    load("configs/motion.py:tiny", ["--config.optimizer.lr=3e-4"])

The part after the colon is handed to `get_config` (a variant name such as `tiny` or
`base`). Overrides are applied last, typed as ml_collections' `config_flags` types them;
docs/config.md says what each type accepts. Every problem is one `InputError` line.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import sys
from pathlib import Path
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections.config_flags import config_path, tuple_parser

from t2v.errors import InputError

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PREFIX = "--config."


def resolve_path(path: str) -> Path:
    """A config path as given, else relative to the repository's `configs/` folder."""
    candidates = [Path(path), REPO_CONFIGS / path, REPO_CONFIGS / Path(path).name]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise InputError(f"{path}: no such config file (also looked in {REPO_CONFIGS})")


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
    """A copy of `config` with `--config.a.b=value` overrides applied, each typed like its field.

    Values are parsed by the absl parser `config_flags` picks for the field's type (a
    `placeholder(float)` field is a float) and assigned through ConfigDict's type safety;
    a field the config lacks, a value of the wrong type or a malformed item raises
    `InputError` naming the override.
    """
    config = copy.deepcopy(config)  # deepcopy, not to_dict: keeps placeholders typed
    config.lock()  # an unknown field is an error, never a new key
    for item in overrides:
        key, value = _parse_override(config, item)
        try:
            config_path.set_value(key, config, value)
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise InputError(f"{item}: {_one_line(error)}") from None
    config.unlock()  # callers may add derived fields (the demo's experiments do)
    return config


def _parse_override(config: ml_collections.ConfigDict, item: str):
    """(`a.b`, typed value) of one `--config.a.b=value`."""
    if not item.startswith(PREFIX):
        raise InputError(f"{item}: overrides look like --config.a.b=value")
    key, sep, raw = item[len(PREFIX):].partition("=")
    if not sep:
        raise InputError(f"{item}: missing '=value'")
    try:
        field_type = config_path.get_type(key, config)
    except (KeyError, AttributeError, IndexError, TypeError, ValueError):
        raise InputError(f"{item}: config has no field {key!r}") from None
    parse = _parser_for(field_type)
    if parse is None:
        raise InputError(f"{item}: {key} is a {field_type.__name__}, which overrides cannot set")
    try:
        return key, parse(raw)
    except (ValueError, SyntaxError, TypeError) as error:
        raise InputError(f"{item}: cannot parse {raw!r} as {field_type.__name__} ({_one_line(error)})") from None


def _literal(argument: str):
    # A None field takes any Python literal, else the text itself (config_flags' rule).
    try:
        return ast.literal_eval(argument)
    except (ValueError, SyntaxError):
        return argument


def _literal_list(argument: str) -> list:
    value = ast.literal_eval(argument)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{value!r} is not a list such as [1, 2]")
    return list(value)


def _config_dict(argument: str) -> ml_collections.ConfigDict:
    value = ast.literal_eval(argument)
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a dict")
    return ml_collections.ConfigDict(value)


# Per field type, the parser `config_flags` picks (its `_FIELD_TYPE_TO_PARSER`, here
# from the public absl and ml_collections parsers), plus literal lists, which it lacks.
_PARSERS = {
    bool: flags.BooleanParser().parse,
    int: flags.IntegerParser().parse,
    float: flags.FloatParser().parse,
    str: str,
    tuple: tuple_parser.TupleParser().parse,
    list: _literal_list,
    ml_collections.ConfigDict: _config_dict,
    type(None): _literal,
}


def _parser_for(field_type):
    if isinstance(field_type, type) and issubclass(field_type, ml_collections.ConfigDict):
        return _config_dict
    return _PARSERS.get(field_type)


def _one_line(error: BaseException) -> str:
    # KeyError quotes its message; absl's parsers raise ValueError(message, value).
    text = str(error.args[0]) if error.args and (isinstance(error, KeyError) or len(error.args) > 1) else str(error)
    return " ".join(text.split())


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def write(config: ml_collections.ConfigDict, directory: str | Path, name: str = "config.json") -> Path:
    """Writes the resolved config and the package version beside an output."""
    from t2v import __version__

    from etils import epath  # gs:// and local alike (pathlib would turn gs://b into gs:/b)

    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    record = {"t2v_version": __version__, "config": json.loads(to_json(config))}
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out
