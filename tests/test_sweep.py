"""`t2v sweep`: variants x seeds, resumed, summarised identically on a rerun."""

import json
import textwrap
from pathlib import Path

import pytest

from t2v import sweep
from t2v.errors import InputError

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def toy_spec(tmp_path):
    """A config file for the toy task (tests/toy_task.py), 4 steps a run."""
    folder = tmp_path / "sweep_configs"
    folder.mkdir()
    (folder / "toy_sweep.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import toy_task

        def get_config(arg=None):
            return toy_task.toy_config(steps=4, eval_every=4, checkpoint_every=4)
    """))
    import sys

    sys.path.insert(0, str(TESTS))
    import toy_task  # noqa: F401  registers the "toy" task in this process

    return str(folder / "toy_sweep.py")


def test_grid_and_names():
    assert sweep.parse_grid(["a.b=1,2", "c=x"]) == [("a.b", ["1", "2"]), ("c", ["x"])]
    assert sweep.variant_name({"a.b": "1", "c": ""}) == "a.b-1_c-none"
    for bad in (["nokey"], ["=1"], ["a=1", "a=2"]):
        with pytest.raises(InputError):
            sweep.parse_grid(bad)


@pytest.mark.slow  # 8 toy trainings: ~45 s on a loaded 2-core machine
def test_a_sweep_runs_resumes_and_repeats_exactly(toy_spec, tmp_path, capsys):
    args = dict(spec=toy_spec, grid_items=["toy.hidden=8,16"], seeds=2)
    first = sweep.run(workdir=tmp_path / "s1", **args)
    assert set(first["variants"]) == {"toy.hidden-8", "toy.hidden-16"}
    for variant in first["variants"].values():
        assert set(variant["seeds"]) == {"0", "1"} and variant["complete"]
        losses = [variant["seeds"][s]["loss"] for s in ("0", "1")]
        assert losses[0] != losses[1]  # the seed drives the run
        assert variant["mean"]["loss"] == pytest.approx(sum(losses) / 2)
        assert variant["std"]["loss"] > 0
    text = (tmp_path / "s1" / "sweep.json").read_text()
    assert "data:image/png;base64," in (tmp_path / "s1" / "report.html").read_text()
    # Rerun in the same folder: nothing is retrained, the file is the same.
    capsys.readouterr()
    sweep.run(workdir=tmp_path / "s1", **args)
    assert (tmp_path / "s1" / "sweep.json").read_text() == text
    # A fresh folder, trained again from scratch: the same numbers.
    sweep.run(workdir=tmp_path / "s2", **args)
    assert (tmp_path / "s2" / "sweep.json").read_text() == text
    # Another grid in the same folder is refused, in one line.
    with pytest.raises(InputError, match="plan.json"):
        sweep.run(toy_spec, ["toy.hidden=4"], 2, tmp_path / "s1")


def test_launch_writes_one_job_per_run(toy_spec, tmp_path):
    summary = sweep.run(toy_spec, ["toy.hidden=8,16"], 2, tmp_path / "s", ["--config.train.steps=6"], launch=True)
    scripts = sorted((tmp_path / "s" / "jobs").glob("*.sh"))
    assert len(scripts) == 4 and not any(v["seeds"] for v in summary["variants"].values())
    text = scripts[0].read_text()
    assert "t2v train --config" in text and "--config.train.steps=6" in text and "--config.seed=" in text
    assert len((tmp_path / "s" / "jobs" / "commands.txt").read_text().splitlines()) == 4
    json.loads((tmp_path / "s" / "sweep.json").read_text())


def test_a_bad_override_fails_before_anything_runs(toy_spec, tmp_path):
    with pytest.raises((KeyError, ValueError)):
        sweep.run(toy_spec, ["toy.no_such_key=1,2"], 1, tmp_path / "s")
    assert not (tmp_path / "s" / "plan.json").exists()
