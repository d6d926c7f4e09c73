"""Training recipes as data: a YAML file -> validated dataclasses, with ``--set key=value`` overrides.

Every key is checked before anything is built: an unknown key, a missing data file or a bad value
raises :class:`RecipeError` naming the key path (``stages[1].trainable[0].lr``).

YAML reads a bare ``no`` as the boolean false: a string field whose value may be ``no`` (such as
``train.mixed_precision``) declares it with ``field(metadata={FALSE_MEANS: "no"})``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from ..cli_options import option
from ..config import DTYPES, ConfigError, LaMEConfig
from ..errors import InvalidInput

STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")  # auto: what `accelerate launch` set up (parallel.py)
PRECISIONS = ("no", "bf16", "fp16")  # autocast dtype of the training step
FALSE_MEANS = "false_means"  # field metadata: the string a YAML boolean false stands for


class RecipeError(InvalidInput):
    """A bad recipe: the message starts with the key path."""


@dataclass
class ModelSpec:
    # a local Hugging Face VLM folder, tiny:<family>, or shape:<name>[/<blocks>] (random weights of a real
    # architecture, lame.modeling.shapes: for speed and memory runs)
    backbone: str = "tiny:qwen2_vl"
    decoder: str | None = "tiny"  # a local causal-LM folder, "tiny", "shape" (Qwen3-0.6B's), or null for none
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
    eps: float = 1e-8  # AdamW's epsilon (added to the RMS of each element's gradient); torch's default


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
    # Loss weights of this stage; None: the model config's (lame.training.objective.loss_weights).
    contrastive_weight: float | None = None
    reconstruction_weight: float | None = None
    diversity_weight: float | None = None
    schedule: str = "cosine"  # one of lame.training.schedules.schedules(): constant, linear, cosine, ...
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0


@dataclass
class TrainSpec:
    output_dir: str = "runs/lame"
    seed: int = 0
    mixed_precision: str = field(default="no", metadata={FALSE_MEANS: "no"})  # one of PRECISIONS
    gradient_checkpointing: bool = False
    grad_cache_chunk: int | None = None  # GradCache sub-batch size; None = whole batch at once
    packing: bool = False  # padding-free batches: items share rows, each attending to itself (lame.data.packing)
    packing_capacity: int | None = None  # positions per packed row (None: the batch's longest item)
    save_every: int = 100
    keep_last: int = 2
    log_every: int = 10
    eval_every: int | None = None  # steps between evaluations (the eval section, or Trainer(evaluator=...)); also at the end
    tensorboard: bool = True
    featurize_workers: int = 2  # threads featurising the next batch during a step; 0 = in the step
    strategy: str = "auto"  # one of STRATEGIES
    deepspeed_config: str | None = None  # DeepSpeed JSON (ZeRO stage, offload); else accelerate's DeepSpeed config


@dataclass
class EvalSpec:
    """A benchmark scored during training (every ``train.eval_every`` steps and at the end)."""

    benchmark: str  # mmeb-v2, mrmr (files under data_root) or a JSONL benchmark folder
    data_root: str | None = None  # the folder holding a named benchmark's files
    tasks: list[str] | None = None  # only these tasks (None: all)
    batch_size: int = 32
    max_queries: int | None = None  # the first N queries of each task (None: all)


@dataclass
class Recipe:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    stages: list[StageSpec] = field(default_factory=list)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec | None = None
    source_file: str | None = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source_file")
        return out


def load_recipe(path: str | Path, overrides: list[str] = (), check_paths: bool = True) -> Recipe:
    """Reads a YAML recipe, applies ``key.path=value`` overrides and validates everything but the
    parameter patterns (they need the built model: :func:`lame.training.build.check_stage_patterns`).

    ``check_paths=False`` accepts missing data files and model folders (see :func:`missing_paths`).
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    raw = _yaml(path.read_text(), str(path)) or {}
    for override in overrides:
        _apply_override(raw, override)
    recipe = _build(Recipe, raw, "")
    recipe.source_file = str(path)
    _resolve_paths(recipe, path.parent)
    validate(recipe, check_paths)
    return recipe


def recipe_from_dict(raw: dict, base_dir: Path = Path(".")) -> Recipe:
    """A validated recipe from a dict laid out as the YAML file; relative paths are taken from ``base_dir``."""
    recipe = _build(Recipe, raw, "")
    _resolve_paths(recipe, base_dir)
    validate(recipe)
    return recipe


def _resolve_paths(recipe: Recipe, base_dir: Path) -> None:
    """Files a recipe names are relative to the recipe's folder: data sources, model folders and the
    evaluation benchmark. ``train.output_dir`` and ``train.deepspeed_config`` stay relative to the
    working directory (where a run writes, and a launcher's shared configs)."""
    for source in recipe.data.sources:
        if not Path(source.path).is_absolute():
            source.path = str(base_dir / source.path)
    for name in ("backbone", "decoder"):
        value = getattr(recipe.model, name)
        if value and not _generated(value) and not Path(value).is_absolute():
            setattr(recipe.model, name, str(base_dir / value))
    spec = recipe.eval
    if spec is not None:
        if spec.benchmark not in _benchmark_names() and not Path(spec.benchmark).is_absolute():
            spec.benchmark = str(base_dir / spec.benchmark)
        if spec.data_root and not Path(spec.data_root).is_absolute():
            spec.data_root = str(base_dir / spec.data_root)


def _generated(value: str) -> bool:
    """A model the project builds itself (random weights), not a folder: tiny:..., shape:..., "shape"."""
    return value.startswith(("tiny", "shape"))


def _benchmark_names() -> tuple[str, ...]:
    from ..eval.loaders import LOADERS

    return tuple(LOADERS)


def missing_paths(recipe: Recipe) -> list[str]:
    """Data files and model folders named by the recipe that are not on this machine, as
    ``"key: path does not exist"`` lines."""
    missing = [(f"data.sources[{i}].path", s.path) for i, s in enumerate(recipe.data.sources)
               if not Path(s.path).is_file()]
    for name in ("backbone", "decoder"):
        value = getattr(recipe.model, name)
        if value and not _generated(value) and not Path(value).is_dir():
            missing.append((f"model.{name}", value))
    if recipe.train.deepspeed_config and not Path(recipe.train.deepspeed_config).is_file():
        missing.append(("train.deepspeed_config", recipe.train.deepspeed_config))
    spec = recipe.eval
    if spec is not None:
        if spec.benchmark not in _benchmark_names() and not Path(spec.benchmark).exists():
            missing.append(("eval.benchmark", spec.benchmark))
        if spec.data_root and not Path(spec.data_root).exists():
            missing.append(("eval.data_root", spec.data_root))
    return [f"{key}: {path} does not exist" for key, path in missing]


def validate(recipe: Recipe, check_paths: bool = True) -> None:
    """Raises :class:`RecipeError` naming the first bad key (the stage patterns are checked later)."""
    if check_paths:
        problems = missing_paths(recipe)
        if problems:
            raise RecipeError(problems[0])
    if not recipe.stages:
        raise RecipeError("stages: a recipe needs at least one stage")
    _validate_model(recipe.model)
    _validate_data(recipe.data)
    _validate_train(recipe.train)
    if recipe.eval is not None:
        _validate_eval(recipe.eval)
    names = set()
    for i, stage in enumerate(recipe.stages):
        if stage.name in names:
            raise RecipeError(f"stages[{i}].name: duplicate stage name {stage.name!r}")
        names.add(stage.name)
        _validate_stage(stage, f"stages[{i}]")


def _validate_model(model: ModelSpec) -> None:
    try:
        config = LaMEConfig.from_dict(model.lame)
    except ConfigError as exc:
        raise RecipeError(f"model.lame.{exc}") from exc
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"model.lame: {exc}") from exc
    if "use_decoder" in model.lame and config.use_decoder != (model.decoder is not None):
        decoder = "null" if model.decoder is None else repr(model.decoder)
        raise RecipeError(f"model.lame.use_decoder: {str(config.use_decoder).lower()} conflicts with "
                          f"model.decoder: {decoder}; a decoder head is built exactly when model.decoder is "
                          "set (null for none), so leave use_decoder out")
    backbone = model.backbone
    if backbone.startswith("tiny:"):
        from ..modeling.adapters import tiny_families

        family = backbone.split(":", 1)[1]
        if family not in tiny_families():
            raise RecipeError(f"model.backbone: no tiny config for backbone type {family!r}; "
                              f"tiny families: {', '.join(tiny_families())}")
        if model.decoder not in (None, "tiny"):
            raise RecipeError("model.decoder: a tiny backbone takes decoder 'tiny' or null")
    elif backbone.startswith("shape:"):
        from ..modeling.shapes import parse_shape_spec

        try:
            parse_shape_spec(backbone)
        except InvalidInput as exc:
            raise RecipeError(f"model.backbone: {exc}") from None
        if model.decoder not in (None, "tiny", "shape"):
            raise RecipeError("model.decoder: a shape: backbone takes decoder 'shape' (Qwen3-0.6B's), 'tiny' or null")
    elif model.decoder in ("tiny", "shape"):
        raise RecipeError(f"model.decoder: {model.decoder!r} goes with a tiny: or shape: backbone; give a causal LM "
                          "folder or null")
    _check_choice("model.dtype", model.dtype, DTYPES)


def _validate_data(data: DataSpec) -> None:
    if not data.sources:
        raise RecipeError("data.sources: at least one data source is needed")
    for i, source in enumerate(data.sources):
        _check_at_least(f"data.sources[{i}].weight", source.weight, 0, strict=True)
    _check_at_least("data.positives_per_query", data.positives_per_query, 1)
    _check_at_least("data.negatives_per_query", data.negatives_per_query, 0)


def _validate_train(train: TrainSpec) -> None:
    for key in ("save_every", "log_every", "keep_last"):
        _check_at_least(f"train.{key}", getattr(train, key), 1)
    if train.eval_every is not None:
        _check_at_least("train.eval_every", train.eval_every, 1)
    if train.grad_cache_chunk is not None:
        _check_at_least("train.grad_cache_chunk", train.grad_cache_chunk, 1)
    if train.packing_capacity is not None:
        _check_at_least("train.packing_capacity", train.packing_capacity, 1)
    _check_at_least("train.featurize_workers", train.featurize_workers, 0)
    _check_choice("train.strategy", train.strategy, STRATEGIES)
    _check_choice("train.mixed_precision", train.mixed_precision, PRECISIONS)
    if train.strategy == "fsdp" and train.mixed_precision == "fp16":
        raise RecipeError("train.mixed_precision: fp16 needs loss scaling, which the fsdp strategy does not do; "
                          "use bf16 (or the deepspeed strategy)")


def _validate_eval(spec: EvalSpec) -> None:
    if spec.benchmark in _benchmark_names() and not spec.data_root:
        raise RecipeError(f"eval.data_root: benchmark {spec.benchmark!r} needs the folder that holds its files")
    _check_at_least("eval.batch_size", spec.batch_size, 1)
    if spec.max_queries is not None:
        _check_at_least("eval.max_queries", spec.max_queries, 1)
    if spec.tasks is not None and not spec.tasks:
        raise RecipeError("eval.tasks: name at least one task, or leave the key out for all")


def _validate_stage(stage: StageSpec, where: str) -> None:
    from .schedules import schedules

    _check_at_least(f"{where}.steps", stage.steps, 1)
    if stage.batch_size < 2:
        raise RecipeError(f"{where}.batch_size: contrastive training needs >= 2, got {stage.batch_size}")
    if not stage.trainable:
        raise RecipeError(f"{where}.trainable: list at least one parameter group")
    for j, group in enumerate(stage.trainable):
        _check_at_least(f"{where}.trainable[{j}].lr", group.lr, 0, strict=True)
        _check_at_least(f"{where}.trainable[{j}].eps", group.eps, 0, strict=True)
    for key in ("contrastive_weight", "reconstruction_weight", "diversity_weight"):
        if getattr(stage, key) is not None:
            _check_at_least(f"{where}.{key}", getattr(stage, key), 0)
    if stage.schedule not in schedules():
        from transformers import SchedulerType

        problem = ("needs more than a warm-up and a length (a metric or options)"
                   if stage.schedule in {s.value for s in SchedulerType} else "is not a transformers scheduler")
        raise RecipeError(f"{where}.schedule: {stage.schedule!r} {problem}; use one of {', '.join(schedules())}")
    _check_at_least(f"{where}.warmup_steps", stage.warmup_steps, 0)
    if stage.warmup_steps > stage.steps:
        raise RecipeError(f"{where}.warmup_steps: {stage.warmup_steps} is more than the stage's {stage.steps} steps")
    if stage.max_grad_norm is not None:
        _check_at_least(f"{where}.max_grad_norm", stage.max_grad_norm, 0)  # 0 or null: no clipping
    if stage.lora is not None:
        _check_at_least(f"{where}.lora.r", stage.lora.r, 1)


def _check_at_least(key: str, value, low, strict: bool = False) -> None:
    if value < low or (strict and value == low):
        raise RecipeError(f"{key}: must be {'>' if strict else '>='} {low}, got {value}")


def _check_choice(key: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RecipeError(f"{key}: expected one of {', '.join(allowed)}; got {value!r}")


def _apply_override(raw: dict, override: str) -> None:
    if "=" not in override:
        raise RecipeError(f"--set {override!r}: expected key.path=value")
    key, value = override.split("=", 1)
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]))
    last = parts[-1]
    parsed = _yaml(value, f"--set {override}")
    if isinstance(node, list):
        node[_index(node, last, key)] = parsed
    else:
        node[last] = parsed


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None


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
    false_means = {f.name: f.metadata[FALSE_MEANS] for f in dataclasses.fields(cls) if FALSE_MEANS in f.metadata}
    values = {}
    for name, value in raw.items():
        if value is False and name in false_means:
            value = false_means[name]
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


@dataclass
class PlanSettings:
    """What ``--dry-run`` assumes about the run besides the recipe."""

    world: int = field(default=1, metadata=option("processes the run will use", flag="--processes"))
    seq_len: int = field(default=512, metadata=option(
        "positions per item (query, positive, negative), latent block included"))
    image_tokens: int = field(default=256, metadata=option(
        "visual tokens per item (patches = merge^2 x this); 0: text only"))
    decoder_tokens: int = 16  # decoder target tokens per query
    gpu_memory_gib: float | None = field(default=None, metadata=option(
        "memory per process (GiB): print the largest GradCache chunk that fits", flag="--gpu-memory",
        metavar="GIB"))
