"""What a recipe trains: the model (a local folder, ``tiny:`` or ``shape:``), made ready for the run's
strategy, and each stage's trainable groups, optimizer and schedule; :func:`dry_run` lists them
without training."""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path

import torch

from ..config import ConfigError, LaMEConfig
from ..modeling import LaMEModel, build_tiny_model
from ..modeling.lora import add_lora, has_lora
from .params import describe_groups, master_patterns, master_weights, select_trainable
from .recipe import Recipe, RecipeError
from .schedules import make_scheduler


def model_config(recipe: Recipe) -> LaMEConfig:
    """The recipe's LaME config; a decoder head exists exactly when ``model.decoder`` is set."""
    return LaMEConfig.from_dict(recipe.model.lame).replace(use_decoder=recipe.model.decoder is not None)


def build_model(recipe: Recipe) -> LaMEModel:
    """A new model of the recipe (random latent vectors and heads on the backbone's weights); a config
    value that only the built model can check (``matryoshka_dims`` against its embedding size) is
    refused as a recipe error."""
    try:
        return _build_model(recipe)
    except ConfigError as exc:
        raise RecipeError(f"model.lame.{exc}") from exc


def _build_model(recipe: Recipe) -> LaMEModel:
    spec = recipe.model
    config = model_config(recipe)
    dtype = getattr(torch, spec.dtype)
    if spec.backbone.startswith("shape:"):  # built where it will train (a 2B model in fp32 is 9 GB)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return build_shaped(recipe, torch.device("cuda", local) if torch.cuda.is_available() else "cpu")
    if spec.backbone.startswith("tiny:"):
        model = build_tiny_model(spec.backbone.split(":", 1)[1], seed=spec.seed, config=config)
        # as from_backbone loads them: the weights of backbone and decoder in model.dtype, their buffers (the
        # rotary frequencies) in float32, which is also what a resumed run loads (a cast module would differ)
        parts = [model.backbone] + ([model.decoder_head.decoder] if model.decoder_head is not None else [])
        for p in (p for part in parts for p in part.parameters()):
            p.data = p.data.to(dtype)
        return model
    return LaMEModel.from_backbone(spec.backbone, config, decoder=spec.decoder, dtype=dtype)


def build_shaped(recipe: Recipe, device) -> LaMEModel:
    """A ``shape:NAME[/BLOCKS]`` backbone: random weights of a real architecture (``device="meta"``: none)."""
    from ..modeling.shapes import architecture, build_shaped_model, depths, parse_shape_spec

    spec = recipe.model
    name, layers = parse_shape_spec(spec.backbone)
    decoder_layers = None
    if layers is not None and spec.decoder == "shape":  # the decoder truncated in the same proportion
        full = depths(name)["layers"]
        decoder_layers = max(1, round(layers * architecture("Qwen3-0.6B")["num_hidden_layers"] / full))
    return build_shaped_model(name, layers, config=model_config(recipe), dtype=getattr(torch, spec.dtype),
                              device=device, seed=spec.seed, decoder=spec.decoder or "shape",
                              decoder_layers=decoder_layers)


def lora_parameter_names(model, target_modules: list[str]) -> set[str]:
    """The parameter names the model will have once LoRA is added (for validating stage patterns early)."""
    names = set(dict(model.named_parameters()))
    host = model.adapter.lora_host
    for name, module in model.get_submodule(host).named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in target_modules:
            full = f"{host}.{name}"
            for kind in ("weight", "bias"):
                if f"{full}.{kind}" in names:
                    names.discard(f"{full}.{kind}")
                    names.add(f"{full}.base_layer.{kind}")
            names.update({f"{full}.lora_A.default.weight", f"{full}.lora_B.default.weight"})
    return names


def check_stage_patterns(model, recipe: Recipe) -> None:
    """Raises :class:`RecipeError` for a trainable pattern that matches no parameter, for every stage."""
    lora_added = has_lora(model)
    names = set(dict(model.named_parameters()))
    for i, stage in enumerate(recipe.stages):
        if stage.lora and not lora_added:
            names = lora_parameter_names(model, stage.lora.target_modules)
            lora_added = True
        for j, group in enumerate(stage.trainable):
            if not any(fnmatchcase(n, group.pattern) for n in names):
                tops = ", ".join(sorted({n.split(".")[0] for n in names}))
                raise RecipeError(f"stages[{i}].trainable[{j}].pattern {group.pattern!r} matches no parameter "
                                  f"(top-level names: {tops})")


def hold_masters(model, recipe: Recipe, stage_index: int, sharded: bool) -> None:
    """Float32 master weights for what stage ``stage_index`` and the earlier ones train, the rest in the
    recipe's dtype; every stage's from the start when ``sharded`` (FSDP, ZeRO: a placed parameter cannot
    change dtype). See :func:`lame.training.params.master_patterns`."""
    patterns = master_patterns(recipe.stages, stage_index, every_stage=sharded)
    master_weights(model, patterns, getattr(torch, recipe.model.dtype))


def prepare_model(model, recipe: Recipe, strategy, stage_index: int):
    """The model made ready for the run: gradient checkpointing, LoRA added up front where the strategy
    shards, master weights; placed (and sharded) by ``strategy``."""
    if recipe.train.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(strategy, "zero_stage", 0) == 3 and recipe.train.grad_cache_chunk:
        # Under DeepSpeed's stage 3 the root module's own parameters (the latent embeddings) do not get
        # the gradient of all of a step's backward passes: on 2 CPU processes they ended 6e-3 away from
        # the 1-process run while every other weight matched to 1e-4. FSDP has no such limit.
        raise RecipeError("train.grad_cache_chunk is not supported with DeepSpeed ZeRO-3; "
                          "use train.strategy: fsdp (or ZeRO-2) for GradCache")
    if strategy.name != "ddp":  # sharded modules cannot take new LoRA layers later: add them now
        lora = next((stage.lora for stage in recipe.stages if stage.lora), None)
        if lora and not has_lora(model):
            add_lora(model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    hold_masters(model, recipe, stage_index, sharded=strategy.name != "ddp")
    return strategy.prepare_model(model)


def start_stage(model, recipe: Recipe, strategy, stage_index: int, device):
    """Stage ``stage_index``'s LoRA layers (added at its start under ``ddp``), master weights, trainable
    groups, optimizer and schedule; returns ``(groups, optimizer, scheduler)``."""
    stage = recipe.stages[stage_index]
    if stage.lora and not has_lora(model):
        add_lora(model, stage.lora.r, stage.lora.alpha, stage.lora.dropout, stage.lora.target_modules)
        model.to(device)
    if strategy.name == "ddp":  # float32 masters for what this stage trains
        hold_masters(model, recipe, stage_index, sharded=False)
    lora_begun = any(s.lora for s in recipe.stages[: stage_index + 1])
    groups = select_trainable(model, stage.trainable, where=f"stages[{stage_index}].trainable",
                              without_lora=not lora_begun)  # adapters added early for sharding stay frozen
    optimizer = strategy.make_optimizer(model, groups, stage, recipe.train.mixed_precision)
    scheduler = make_scheduler(stage.schedule, optimizer, stage.warmup_steps, stage.steps)
    return groups, optimizer, scheduler


def dry_run(recipe: Recipe, memory=None) -> list[dict]:
    """Builds the model and lists, per stage, its trainable groups and their sizes (nothing is trained),
    and the memory plan of one process (:mod:`lame.training.memory`; ``memory``: its
    :class:`~lame.training.memory.PlanSettings`, default ones when None).

    A backbone or decoder folder that is not on this machine is built without weights on the meta
    device from its shipped architecture (:mod:`lame.modeling.meta`), so real recipes check here too.
    """
    from .memory import PlanSettings, plan_stage, strategy_name

    memory = memory or PlanSettings()
    model = _model_to_plan(recipe)
    check_stage_patterns(model, recipe)
    sharded = strategy_name(recipe, memory.world) != "ddp"  # as the trainer holds master weights
    report = []
    for index, stage in enumerate(recipe.stages):
        if stage.lora and not has_lora(model):
            with torch.device(model.device):
                add_lora(model, stage.lora.r, stage.lora.alpha, stage.lora.dropout, stage.lora.target_modules)
        hold_masters(model, recipe, index, sharded)  # the dtypes the trainer holds during this stage
        groups = select_trainable(model, stage.trainable)
        report.append({"stage": stage.name, "steps": stage.steps, "groups": describe_groups(groups, model),
                       "memory": plan_stage(recipe, model, stage, memory)})
    return report


def _model_to_plan(recipe: Recipe) -> LaMEModel:
    """The recipe's model for a dry run: on the meta device where its folders are not on this machine."""
    spec = recipe.model
    folders = [f for f in (spec.backbone, spec.decoder) if f and not f.startswith(("tiny", "shape"))]
    if spec.backbone.startswith("shape:"):
        return build_shaped(recipe, "meta")
    if any(not Path(f).is_dir() for f in folders):
        from ..modeling.meta import build_on_meta

        return build_on_meta(spec.backbone, spec.decoder, model_config(recipe))
    return build_model(recipe)
