"""The documentation's runnable parts, as written: the walkthrough of docs/training.md (its files and
its commands, exactly) and the JSONL benchmark example of docs/benchmarks.md.

A file block follows ``<!-- walkthrough-file: PATH -->`` (or ``example-file``); a command block follows
``<!-- walkthrough-run -->`` and may hold ``lame ...`` and ``python SCRIPT.py`` lines, run here in this
process (in a temporary working directory) as a shell would run them."""

from __future__ import annotations

import importlib.util
import json
import re
import runpy
import shlex
from pathlib import Path

import pytest
from PIL import Image
from tolerances import SCORE

from lame.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def blocks(text: str, marker: str) -> list[tuple[str, str]]:
    """(argument, content) of every fenced block right after ``<!-- marker[: argument] -->``."""
    return re.findall(rf"<!-- {marker}(?:: (\S+))? -->\n```\w*\n(.*?)```", text, re.S)


def commands(block: str) -> list[list[str]]:
    """The command lines of a shell block (continuations joined, comments dropped) as argument lists."""
    joined = re.sub(r"\\\n", " ", block)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def run(argv: list[str]) -> int:
    if argv[0] == "lame":
        return main(argv[1:])
    if argv[0] == "python" and len(argv) == 2 and argv[1].endswith(".py"):
        runpy.run_path(argv[1], run_name="__main__")
        return 0
    raise AssertionError(f"the walkthrough runs {shlex.join(argv)!r}; this test runs only `lame ...` and "
                         "`python SCRIPT.py` lines")


def write_files(root: Path, files: list[tuple[str, str]]) -> None:
    for path, content in files:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)


def test_training_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    doc = (DOCS / "training.md").read_text()
    files = blocks(doc, "walkthrough-file")
    assert {path for path, _ in files} == {"make_images.py", "train.jsonl", "bench/shapes/corpus.jsonl",
                                           "bench/shapes/queries.jsonl", "bench/shapes/task.json", "recipe.yaml"}
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, files)
    (runs,) = blocks(doc, "walkthrough-run")
    lines = commands(runs[1])
    assert [argv[:2] for argv in lines] == [["python", "make_images.py"], ["lame", "train"], ["lame", "eval"]]
    for argv in lines:
        assert run(argv) == 0, shlex.join(argv)
    out = capsys.readouterr().out

    # what the walkthrough says comes out
    assert "evaluating every 2 steps and at the end on bench: 1 task(s), 5 queries" in out
    assert "scores after step 6: overall " in out and "trained model: runs/shapes/model" in out
    run_dir = tmp_path / "runs" / "shapes"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/overall" in r]
    assert [r["step"] for r in evals] == [2, 4, 6] and "eval/shapes/hit@1" in evals[-1]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    model = run_dir / "model"
    card = (model / "README.md").read_text().split("## Scores", 1)[1]
    assert "Benchmark `" in card and "after step 6" in card and "= circle" in card
    assert "<!-- lame-eval:bench start -->" in card  # `lame eval` added its block to the same card
    scores = json.loads((model / "scores-bench.json").read_text())  # written by `lame eval`
    assert scores["overall"] == pytest.approx(evals[-1]["eval/overall"], abs=SCORE)
    assert set(scores["tasks"]["shapes"]["groups"]) == {"circle", "square"}
    assert json.loads((model / "scores-bench-step-000006.json").read_text())["step"] == 6
    assert (run_dir / "recipe.yaml").is_file()
    if importlib.util.find_spec("matplotlib"):
        assert (run_dir / "loss_curves.png").is_file()
    for name in ("metrics.jsonl", "loss_curves.png", "checkpoints/step-000006/", "scores-bench-step-000006.json",
                 "scores-bench.json"):
        assert name in doc

    # the same command again with --resume: the run is finished, nothing is trained
    assert main(["train", "recipe.yaml", "--resume"]) == 0
    assert "the run already finished at step 6; nothing to do" in capsys.readouterr().out


def test_the_jsonl_benchmark_example_loads_and_scores(tmp_path, saved_tiny_model):
    from lame import LaMEModel
    from lame.eval.loaders import load_benchmark
    from lame.eval.runner import evaluate

    write_files(tmp_path, blocks((DOCS / "benchmarks.md").read_text(), "example-file"))
    for name, colour in (("cat", "orange"), ("dog", "brown"), ("chart", "blue")):
        (tmp_path / "my-benchmark" / "captions" / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), colour).save(tmp_path / "my-benchmark" / "captions" / "images" / f"{name}.png")

    captions, pick = load_benchmark(str(tmp_path / "my-benchmark"))
    assert (captions.name, captions.metric, captions.category, captions.group_by) == (
        "captions", "hit@1", "image-to-text", "kind")
    assert (pick.name, pick.metric, pick.category, pick.group_by) == ("pick-one", "mrr", "text-to-image", None)
    assert captions.queries[2].relevant == {"c3": 2.0, "c4": 0.0} and captions.queries[2].meta == {"kind": "chart"}
    assert [q.candidates for q in pick.queries] == [["1", "2", "3"], ["4", "1", "2"]]
    assert captions.corpus["c1"] == "a cat asleep on a sofa" and len(pick.corpus["4"]) == 3

    report = evaluate(LaMEModel.from_pretrained(saved_tiny_model), [captions, pick], show_progress_bar=False)
    assert set(report["tasks"]["captions"]["groups"]) == {"photo", "chart"}
    assert set(report["categories"]) == {"image-to-text", "text-to-image"}
    assert report["overall"] == pytest.approx((report["tasks"]["captions"]["hit@1"] + report["tasks"]["pick-one"]["mrr"]) / 2)
