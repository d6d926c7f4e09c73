"""Training recipes as data: a YAML file -> validated dataclasses, with ``--set key=value`` overrides.

Every key is checked before anything is built: an unknown key, a missing data file or a bad value
raises :class:`RecipeError` naming the key path (``stages[1].trainable[0].lr``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from ..config import LaMEConfig


class RecipeError(ValueError):
    pass


@dataclass
class ModelSpec:
    backbone: str = "tiny:qwen2_vl"  # a local Hugging Face VLM folder, or tiny:<family>
    decoder: str | None = "tiny"  # a local causal-LM folder, "tiny", or null for no decoder head
    dtype: str = "float32"
    seed: int = 0
    lame: dict = field(default_factory=dict)  # LaMEConfig fields


@dataclass
class SourceSpec:
    path: str
    weight: float = 1.0
    name: str | None = None


@dataclass
class DataSpec:
    sources: list[SourceSpec] = field(default_factory=list)
    positives_per_query: int = 1
    negatives_per_query: int = 0


@dataclass
class ParamGroupSpec:
    pattern: str  # fnmatch pattern over parameter names, e.g. "backbone.model.language_model.*"
    lr: float = 1e-4
    weight_decay: float = 0.0


@dataclass
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class StageSpec:
    name: str
    steps: int
    batch_size: int = 8
    trainable: list[ParamGroupSpec] = field(default_factory=list)
    lora: LoraSpec | None = None
    contrastive_weight: float = 1.0
    reconstruction_weight: float | None = None  # None: the model config's value
    diversity_weight: float | None = None
    schedule: str = "cosine"  # any transformers scheduler name: constant, linear, cosine, ...
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0


@dataclass
class TrainSpec:
    output_dir: str = "runs/lame"
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    grad_cache_chunk: int | None = None  # GradCache sub-batch size; None = whole batch at once
    save_every: int = 100
    keep_last: int = 2
    log_every: int = 10
    eval_every: int | None = None  # steps between evaluator calls (Trainer(evaluator=...)); also run at the end
    tensorboard: bool = True
    featurize_workers: int = 2  # threads featurising the next batch during a step; 0 = in the step
    strategy: str = "auto"  # auto (follow accelerate launch) | ddp | fsdp | deepspeed
    deepspeed_config: str | None = None  # DeepSpeed JSON (ZeRO stage, offload); else accelerate's DeepSpeed config


@dataclass
class Recipe:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    stages: list[StageSpec] = field(default_factory=list)
    train: TrainSpec = field(default_factory=TrainSpec)
    source_file: str | None = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source_file")
        return out


def load_recipe(path: str | Path, overrides: list[str] = (), check_paths: bool = True) -> Recipe:
    """Reads a YAML recipe, applies ``key.path=value`` overrides and validates everything but the
    parameter patterns (they need the built model: :func:`lame.training.trainer.check_stage_patterns`).

    ``check_paths=False`` accepts missing data files and model folders (see :func:`missing_paths`).
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    for override in overrides:
        _apply_override(raw, override)
    recipe = _build(Recipe, raw, "")
    recipe.source_file = str(path)
    _resolve_paths(recipe, path.parent)
    validate(recipe, check_paths)
    return recipe


def recipe_from_dict(raw: dict, base_dir: Path = Path(".")) -> Recipe:
    recipe = _build(Recipe, raw, "")
    _resolve_paths(recipe, base_dir)
    validate(recipe)
    return recipe


def _resolve_paths(recipe: Recipe, base_dir: Path) -> None:
    for source in recipe.data.sources:
        if not Path(source.path).is_absolute():
            source.path = str(base_dir / source.path)
    for name in ("backbone", "decoder"):
        value = getattr(recipe.model, name)
        if value and not value.startswith("tiny") and not Path(value).is_absolute():
            setattr(recipe.model, name, str(base_dir / value))


def missing_paths(recipe: Recipe) -> list[str]:
    """Data files and model folders named by the recipe that are not on this machine, as
    ``"key: path does not exist"`` lines."""
    missing = [(f"data.sources[{i}].path", s.path) for i, s in enumerate(recipe.data.sources)
               if not Path(s.path).is_file()]
    for name in ("backbone", "decoder"):
        value = getattr(recipe.model, name)
        if value and not value.startswith("tiny") and not Path(value).is_dir():
            missing.append((f"model.{name}", value))
    return [f"{key}: {path} does not exist" for key, path in missing]


def validate(recipe: Recipe, check_paths: bool = True) -> None:
    if check_paths:
        problems = missing_paths(recipe)
        if problems:
            raise RecipeError(problems[0])
    if not recipe.stages:
        raise RecipeError("stages: a recipe needs at least one stage")
    if not recipe.data.sources:
        raise RecipeError("data.sources: at least one data source is needed")
    if recipe.train.featurize_workers < 0:
        raise RecipeError(f"train.featurize_workers: must be >= 0, got {recipe.train.featurize_workers}")
    for i, source in enumerate(recipe.data.sources):
        if source.weight <= 0:
            raise RecipeError(f"data.sources[{i}].weight: must be > 0, got {source.weight}")
    try:
        LaMEConfig.from_dict(recipe.model.lame)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"model.lame: {exc}") from exc
    backbone = recipe.model.backbone
    if backbone.startswith("tiny:"):
        from ..modeling.adapters import tiny_families

        family = backbone.split(":", 1)[1]
        if family not in tiny_families():
            raise RecipeError(f"model.backbone: no tiny config for backbone type {family!r}; "
                              f"tiny families: {', '.join(tiny_families())}")
    elif recipe.model.decoder == "tiny":
        raise RecipeError("model.decoder: 'tiny' goes with a tiny backbone; give a causal LM folder or null")
    if recipe.model.dtype not in ("float32", "bfloat16", "float16"):
        raise RecipeError(f"model.dtype: expected float32, bfloat16 or float16, got {recipe.model.dtype!r}")
    if recipe.train.strategy not in ("auto", "ddp", "fsdp", "deepspeed"):
        raise RecipeError(f"train.strategy: expected auto, ddp, fsdp or deepspeed, got {recipe.train.strategy!r}")
    if recipe.train.mixed_precision not in ("no", "bf16", "fp16"):
        raise RecipeError(f"train.mixed_precision: expected no, bf16 or fp16, got {recipe.train.mixed_precision!r}")
    names = set()
    for i, stage in enumerate(recipe.stages):
        where = f"stages[{i}]"
        if stage.name in names:
            raise RecipeError(f"{where}.name: duplicate stage name {stage.name!r}")
        names.add(stage.name)
        if stage.steps < 1:
            raise RecipeError(f"{where}.steps: must be >= 1, got {stage.steps}")
        if stage.batch_size < 2:
            raise RecipeError(f"{where}.batch_size: contrastive training needs >= 2, got {stage.batch_size}")
        if not stage.trainable:
            raise RecipeError(f"{where}.trainable: list at least one parameter group")
        for j, group in enumerate(stage.trainable):
            if group.lr <= 0:
                raise RecipeError(f"{where}.trainable[{j}].lr: must be > 0, got {group.lr}")
    chunk = recipe.train.grad_cache_chunk
    if chunk is not None and chunk < 1:
        raise RecipeError(f"train.grad_cache_chunk: must be >= 1 or null, got {chunk}")


def _apply_override(raw: dict, override: str) -> None:
    if "=" not in override:
        raise RecipeError(f"--set {override!r}: expected key.path=value")
    key, value = override.split("=", 1)
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]))
    last = parts[-1]
    parsed = yaml.safe_load(value)
    if isinstance(node, list):
        node[_index(node, last, key)] = parsed
    else:
        node[last] = parsed


def _child(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if not isinstance(node, dict):
        raise RecipeError(f"--set {where}: not a mapping")
    return node.setdefault(part, {})


def _index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"--set {where}: no list element {part!r}")
    return int(part)


def _build(cls: type, raw: Any, where: str):
    """Builds dataclass ``cls`` from ``raw``, rejecting unknown keys with their full path."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        prefix = f"{where}." if where else ""
        raise RecipeError(f"unknown key(s) {', '.join(prefix + u for u in unknown)}; known: {sorted(fields)}")
    values = {}
    for name, value in raw.items():
        values[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**values)
    except TypeError as exc:
        raise RecipeError(f"{where or 'recipe'}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str):
    origin, args = get_origin(hint), get_args(hint)
    if value is None:
        return None
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if args and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise RecipeError(f"{where}: expected a number, got {value!r}") from None
    if hint in (int, bool, str) and not isinstance(value, hint):
        raise RecipeError(f"{where}: expected {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise RecipeError(f"{where}: expected int, got {value!r}")
    return value
