"""Light imports and optional extras: ``import lame`` and ``lame --help`` load neither torch nor
transformers; a feature whose extra is missing fails with an error naming the extra; plots and
TensorBoard are skipped with a note, and training still finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import HANG_GUARD_S

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAVY = ("torch", "transformers", "peft", "accelerate")
VERBS = ["demo", "train", "quickstart", "eval", "encode", "data", "data convert", "index", "index build", "search",
         "serve", "bench", "bench serve", "bench speed", "bench encode", "bench quality", "bench index"]


def run_python(code: str) -> dict:
    """Runs ``code`` in a fresh interpreter (this checkout's ``lame`` first); returns the JSON it prints last."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    env.pop("DS_ACCELERATOR", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- light imports
def test_import_lame_is_light_and_leaves_the_environment_alone():
    result = run_python(f"""
import json, os, sys
before = dict(os.environ)
import lame
light = {{"heavy": [m for m in {HEAVY!r} if m in sys.modules], "env_same": dict(os.environ) == before,
          "all": lame.__all__, "dir": dir(lame), "version": lame.__version__}}
from lame import LaMEConfig
light["config_heavy"] = [m for m in {HEAVY!r} if m in sys.modules]
from lame import ItemError, LaMEModel, build_tiny_model
import lame.modeling
light["same_objects"] = LaMEModel is lame.modeling.LaMEModel and build_tiny_model is lame.modeling.build_tiny_model
light["config"] = LaMEConfig(num_reason_tokens=3).num_reason_tokens
light["item_error"] = issubclass(ItemError, Exception)
light["ds_accelerator"] = os.environ.get("DS_ACCELERATOR")  # (torch itself sets a few KMP_* variables)
try:
    lame.not_a_name
except AttributeError as exc:
    light["missing"] = str(exc)
print(json.dumps(light))
""")
    assert result["heavy"] == [] and result["config_heavy"] == []
    assert result["env_same"] and result["ds_accelerator"] is None
    assert set(result["all"]) == {"ItemError", "LaMEConfig", "LaMEModel", "build_tiny_model", "__version__"}
    assert set(result["all"]) <= set(result["dir"])
    assert result["version"] == "0.1.0"
    assert result["same_objects"] and result["config"] == 3 and result["item_error"]
    assert "not_a_name" in result["missing"]


def test_cli_help_is_light():
    result = run_python(f"""
import contextlib, io, json, sys
from lame.cli import main
helped = {{}}
for argv in [[], *[verb.split() for verb in {VERBS!r}]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*argv, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    helped[" ".join(argv)] = out.getvalue()
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules], "helped": helped}}))
""")
    assert result["heavy"] == []
    assert all(text.startswith("usage: lame") for text in result["helped"].values())
    assert "--sweep-pairs" in result["helped"]["bench quality"]


def test_quickstart_settings_are_the_ones_the_runner_uses():
    from lame_testbed.quickstart import run, settings

    assert run.QuickstartSettings is settings.QuickstartSettings
    assert run.METHODS is settings.METHODS


# ------------------------------------------------------------------------------------ missing extras
def hide(monkeypatch, *modules: str) -> None:
    """As if ``modules`` were not installed; lame's modules are imported afresh and restored afterwards."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    for name in [n for n in sys.modules if n.split(".")[0] in ("lame", "lame_testbed")]:
        monkeypatch.delitem(sys.modules, name)


def expect_extra(excinfo, extra: str) -> None:
    message = str(excinfo.value)
    assert f"needs the '{extra}' extra" in message and f"pip install 'lame[{extra}]'" in message
    assert excinfo.value.extra == extra


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn", "prometheus_client", "httpx"])
def test_serve_without_its_extra(monkeypatch, missing):
    hide(monkeypatch, missing)
    with pytest.raises(ImportError) as excinfo:
        from lame.serve import load_app  # noqa: F401
    expect_extra(excinfo, "serve")
    assert str(excinfo.value).startswith("lame serve needs the 'serve' extra")
    from lame.serve import ServeSettings  # the settings (and `lame serve --help`) need no extra

    assert ServeSettings().max_batch_size == 32


def test_bench_serve_without_httpx(monkeypatch):
    hide(monkeypatch, "httpx")
    with pytest.raises(ImportError) as excinfo:
        import lame_testbed.bench.serve  # noqa: F401
    expect_extra(excinfo, "serve")


def test_index_without_faiss(monkeypatch, tmp_path):
    hide(monkeypatch, "faiss")
    from lame.index import IndexBuildSettings, open_index  # the options and the loader need no extra

    assert IndexBuildSettings().backend == "faiss"
    with pytest.raises(ImportError) as excinfo:
        from lame.index import VectorIndex  # noqa: F401
    expect_extra(excinfo, "index")
    with pytest.raises(ImportError) as excinfo:
        open_index(tmp_path)  # a folder: a FAISS index
    expect_extra(excinfo, "index")


@pytest.mark.parametrize("missing", ["pymilvus", "milvus_lite"])
def test_milvus_without_its_extra(monkeypatch, tmp_path, capsys, missing):
    hide(monkeypatch, missing)
    from lame.cli import main
    from lame.index import open_index

    if missing == "pymilvus":
        with pytest.raises(ImportError) as excinfo:
            from lame.index import MilvusIndex  # noqa: F401
        expect_extra(excinfo, "milvus")
    (tmp_path / "x.db").mkdir()
    with pytest.raises(ImportError) as excinfo:
        open_index(tmp_path / "x.db")
    expect_extra(excinfo, "milvus")
    assert main(["index", "build", "--embeddings", str(tmp_path), "--backend", "milvus", "--uri",
                 str(tmp_path / "y.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the 'milvus' extra: pip install 'lame[milvus]'" in err
    assert not (tmp_path / "y.db").exists()


def test_the_test_install_has_every_extra_at_pinned_versions():
    """`scripts/setup.sh` (the README's and CI's test command) installs `.[dev]` under constraints.txt: dev
    must reach every extra (so the Milvus Lite tests run on a clean clone), and every package the project
    names must have an exact pin there that its own range accepts."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = Path(SRC).parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lines = [line.split("#")[0].strip() for line in (root / "constraints.txt").read_text().splitlines()]
    pins = {canonicalize_name(name): version for name, _, version in (line.partition("==") for line in lines if line)}
    reached, todo = set(), ["dev"]
    while todo:
        extra = todo.pop()
        reached.add(extra)
        for text in extras[extra]:
            requirement = Requirement(text)
            if requirement.name == "lame":
                todo += sorted(requirement.extras - reached)
    assert reached == set(extras)
    for text in project["dependencies"] + [t for group in extras.values() for t in group]:
        requirement = Requirement(text)
        if requirement.name != "lame":
            pinned = pins.get(canonicalize_name(requirement.name))
            assert pinned and requirement.specifier.contains(pinned), f"{text}: constraints.txt pins {pinned}"


def test_deepspeed_strategy_without_deepspeed_fails_before_training(monkeypatch, tmp_path):
    hide(monkeypatch, "deepspeed")
    from lame.training.parallel import DeepSpeedZero, import_deepspeed

    with pytest.raises(ImportError) as excinfo:
        import_deepspeed()
    expect_extra(excinfo, "deepspeed")
    config = tmp_path / "zero2.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    with pytest.raises(ImportError) as excinfo:
        DeepSpeedZero(SimpleNamespace(num_processes=1), str(config))
    expect_extra(excinfo, "deepspeed")


def test_deepspeed_import_leaves_the_environment_alone(monkeypatch):
    pytest.importorskip("deepspeed")
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    from lame.training.parallel import import_deepspeed

    assert import_deepspeed().accelerator.get_accelerator() is not None
    assert "DS_ACCELERATOR" not in os.environ


# ------------------------------------------------------------------------ plots: skipped with a note
def metrics_file(folder: Path) -> Path:
    rows = [{"step": s, "stage": "only", "loss": 1.0 / s, "contrastive": 0.5, "reconstruction": 0.4,
             "diversity": 0.1} for s in (1, 2)]
    path = folder / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loss_plot_is_skipped_with_a_note_without_matplotlib(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "matplotlib", "matplotlib.pyplot")
    from lame.training.report import plot_losses

    assert plot_losses(metrics_file(tmp_path), tmp_path / "loss_curves.png") is None
    assert not (tmp_path / "loss_curves.png").exists()
    note = capsys.readouterr().err.strip()
    assert len(note.splitlines()) == 1
    assert "loss_curves.png skipped" in note and "pip install 'lame[plots]'" in note


def test_quickstart_and_speed_plots_are_skipped_without_matplotlib(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "matplotlib", "matplotlib.pyplot")
    from lame_testbed.bench.speed import plot_speed
    from lame_testbed.quickstart.plots import plot_quickstart

    assert plot_quickstart({"methods": {}}, tmp_path) == [None]
    assert plot_speed({"rows": []}, tmp_path / "speed.png") is None
    assert list(tmp_path.iterdir()) == []
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 2 and all("'plots' extra" in n for n in notes)


def test_training_finishes_without_matplotlib_and_tensorboard(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "matplotlib", "matplotlib.pyplot", "tensorboard", "torch.utils.tensorboard")
    from lame.training.recipe import recipe_from_dict
    from lame.training.trainer import Trainer

    words = "zero one two three four five six seven eight nine".split()
    (tmp_path / "train.jsonl").write_text("".join(
        json.dumps({"query": f"{words[i % 10]} plus one", "positive": words[(i + 1) % 10],
                    "answer": words[(i + 1) % 10], "label": (i + 1) % 10}) + "\n" for i in range(8)))
    recipe = recipe_from_dict({
        "model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny", "lame": {"num_reason_tokens": 2}},
        "data": {"sources": [{"path": "train.jsonl"}]},
        "train": {"output_dir": str(tmp_path / "out"), "save_every": 100, "log_every": 1, "tensorboard": True},
        "stages": [{"name": "only", "steps": 2, "batch_size": 4,
                    "trainable": [{"pattern": "latent_embeddings", "lr": 1e-2}]}],
    }, tmp_path)
    final = Trainer(recipe, show_progress=False).run()
    assert (final / "lame_config.json").is_file() and (final / "README.md").is_file()
    assert not (tmp_path / "out" / "loss_curves.png").exists()
    assert not (tmp_path / "out" / "tensorboard").exists()
    err = capsys.readouterr().err
    assert "TensorBoard logging skipped" in err and "loss_curves.png skipped" in err


@pytest.mark.parametrize(("module", "missing", "extra"), [
    ("lame.integrations.sentence_transformers", "sentence_transformers", "st"),
    ("lame.integrations.mteb", "mteb", "mteb"),
])
def test_integrations_without_their_extra(monkeypatch, module, missing, extra):
    hide(monkeypatch, missing)
    with pytest.raises(ImportError) as excinfo:
        __import__(module)
    expect_extra(excinfo, extra)


def test_saving_writes_the_sentence_transformers_files_without_it(monkeypatch, tmp_path):
    hide(monkeypatch, "sentence_transformers")
    from lame import build_tiny_model

    build_tiny_model("qwen2_vl", use_decoder=False).save_pretrained(tmp_path)
    assert (tmp_path / "modules.json").is_file() and (tmp_path / "config_sentence_transformers.json").is_file()
