"""`lame` errors: a user's mistake is one line and exit status 2, a bug keeps its traceback; the
shipped tiny recipe trains through `lame train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lame.training
from lame.cli import main
from lame.errors import InvalidInput, MissingPath, UserError
from lame.extras import MissingExtra

TINY_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tiny-digits.yaml"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_bad_recipe_value_is_one_line_and_exit_2_before_anything_is_built(tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    # the trainer binds build_model at its import: import it before patching, and patch it where it is used
    import lame.training.trainer

    monkeypatch.setattr(lame.training.trainer, "build_model", no_model)
    out = tmp_path / "out"
    assert main(["train", str(TINY_RECIPE), "--set", f"train.output_dir={out}", "--set", "train.save_every=0",
                 "--dry-run"]) == 2
    assert error_line(capsys).startswith("lame train: error: train.save_every: must be >= 1")
    assert main(["train", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml does not exist" in error_line(capsys)
    assert not out.exists()


def test_missing_user_paths_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["search", "--model", str(tmp_path / "model"), "--index", str(tmp_path / "idx"), "--query", "x"]) == 2
    assert "idx/index.json does not exist: not an index folder" in error_line(capsys)
    assert main(["eval", "--model", str(tmp_path / "model"), "--benchmark", str(tmp_path / "no-such-bench")]) == 2
    assert "no-such-bench" in error_line(capsys)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_an_error_every_process_raises_is_printed_once(tmp_path, monkeypatch, capsys, rank):
    """Under torchrun / accelerate launch every process raises a divergence alike: only rank 0 prints it;
    an error of one process (a missing file) is printed by whichever process meets it."""
    from lame.training.trainer import TrainingDiverged

    def diverged(*args, **kwargs):
        raise TrainingDiverged("training diverged at step 3")

    monkeypatch.setattr(lame.training, "train", diverged)
    monkeypatch.setenv("RANK", rank)
    (tmp_path / "train.jsonl").write_text('{"query": "a", "positive": "b"}\n')
    assert main(["train", str(TINY_RECIPE), "--set", f"data.sources.0.path={tmp_path / 'train.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert err == ("lame train: error: training diverged at step 3\n" if rank == "0" else "")
    assert main(["train", str(TINY_RECIPE) + ".absent"]) == 2
    assert "does not exist" in error_line(capsys)


@pytest.mark.parametrize("error", [ValueError("a check deep inside a library"), KeyError("hidden_size"),
                                   FileNotFoundError(2, "No such file", "/internal/cache/file.bin")],
                         ids=["ValueError", "KeyError", "FileNotFoundError"])
def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(lame.training, "dry_run", broken)
    with pytest.raises(type(error)) as info:
        main(["train", str(TINY_RECIPE), "--dry-run"])
    assert info.value is error
    assert capsys.readouterr().err == ""


def test_user_errors_are_the_built_in_kinds_callers_expect():
    from lame.data.items import ItemError
    from lame.training.data import DataError
    from lame.training.recipe import RecipeError
    from lame.training.trainer import TrainingDiverged

    for kind in (RecipeError, ItemError, DataError, InvalidInput):
        assert issubclass(kind, UserError) and issubclass(kind, ValueError)
    assert issubclass(MissingPath, FileNotFoundError) and issubclass(TrainingDiverged, UserError)
    assert issubclass(MissingExtra, UserError) and issubclass(MissingExtra, ImportError)


def test_the_tiny_digits_recipe_trains_through_the_cli(digits_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "configs/tiny-digits.yaml" in " ".join(capsys.readouterr().out.split())  # the file this test runs
    out = tmp_path / "run"
    settings = [f"data.sources.0.path={digits_data / 'train.jsonl'}", f"train.output_dir={out}",
                "stages.0.steps=2", "stages.1.steps=2", "stages.1.warmup_steps=0", "stages.0.batch_size=4",
                "stages.1.batch_size=4", "train.mixed_precision=no", "train.featurize_workers=0"]
    assert main(["train", str(TINY_RECIPE), *[arg for s in settings for arg in ("--set", s)]]) == 0
    assert f"trained model: {out / 'model'}" in capsys.readouterr().out
    assert (out / "model" / "lame_heads.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in rows] == [("warmup", 2), ("joint", 4)]
    assert all(r["reconstruction"] > 0 for r in rows)


def test_backbone_families_are_checked_when_given(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--backbone", "nope"])
    assert info.value.code == 2 and "no tiny config for 'nope'; choose from qwen2_5_vl" in capsys.readouterr().err
