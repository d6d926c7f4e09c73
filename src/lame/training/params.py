"""Which parameters a stage trains: name patterns -> optimizer groups."""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch

from .recipe import ParamGroupSpec, RecipeError


def select_trainable(model: torch.nn.Module, groups: list[ParamGroupSpec], where: str = "trainable",
                     without_lora: bool = False) -> list[dict]:
    """Freezes every parameter, then unfreezes those matched by ``groups`` (first match wins).

    Returns optimizer parameter groups. A pattern that matches no parameter is an error that names it.
    ``without_lora``: LoRA adapters already in the model (added early for sharding) stay frozen.
    """
    named = dict(model.named_parameters())
    if without_lora:
        for p in named.values():
            p.requires_grad_(False)
        named = {n: p for n, p in named.items() if ".lora_" not in n}
    for p in named.values():
        p.requires_grad_(False)
    taken: set[str] = set()
    param_groups = []
    for i, group in enumerate(groups):
        names = [n for n in named if fnmatchcase(n, group.pattern) and n not in taken]
        if not names:
            hint = ", ".join(sorted({n.split(".")[0] for n in named}))
            raise RecipeError(f"{where}[{i}].pattern {group.pattern!r} matches no parameter "
                              f"(top-level names: {hint})")
        taken.update(names)
        for n in names:
            named[n].requires_grad_(True)
        param_groups.append({"params": [named[n] for n in names], "lr": group.lr,
                             "weight_decay": group.weight_decay, "eps": group.eps,
                             "pattern": group.pattern})
    return param_groups


def master_patterns(stages, stage_index: int, every_stage: bool = False) -> list[str]:
    """The trainable patterns whose parameters hold float32 master weights while stage ``stage_index`` runs.

    Those of that stage and of the stages before it: a parameter is cast to float32 at the boundary of
    the first stage that trains it, so a stage does not hold in float32 what only a later stage trains
    (the warm-up stage of a full fine-tuning recipe keeps the frozen language model in ``model.dtype``,
    half the memory in bfloat16), and a parameter an earlier stage trained keeps its float32 weights
    (rounding them back would change what it learnt). ``every_stage``: the patterns of every stage, from
    the start; the sharded strategies (FSDP, DeepSpeed) need this, as they place the parameters once
    and a sharded parameter cannot change its dtype afterwards.
    """
    chosen = stages if every_stage else stages[: stage_index + 1]
    return [group.pattern for stage in chosen for group in stage.trainable]


def master_weights(model: torch.nn.Module, patterns: list[str], dtype: torch.dtype) -> None:
    """Float32 master weights for what trains, the recipe's ``dtype`` for the rest of the base weights.

    Every parameter matched by one of ``patterns`` (:func:`master_patterns`) is held in float32, so
    AdamW's small updates are not rounded away (a bfloat16 weight of magnitude 0.02 cannot move by less
    than about 1e-4); autocast still computes in the recipe's ``mixed_precision``. The other weights of
    the backbone and decoder are held in ``dtype`` (``model.dtype``: frozen weights cost half the memory
    in bfloat16). The model's own new parts (latent vectors, heads) and LoRA adapters are float32 anyway.
    """
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            continue
        if any(fnmatchcase(name, pattern) for pattern in patterns):
            target = torch.float32
        elif name.startswith(("backbone.", "decoder_head.decoder.")) and ".lora_" not in name:
            target = dtype
        else:
            continue
        if p.dtype != target:
            p.data = p.data.to(target)


def _numel(p: torch.nn.Parameter) -> int:
    return getattr(p, "ds_numel", None) or p.numel()  # a ZeRO-3 partitioned parameter holds 0 elements locally


def describe_groups(param_groups: list[dict], model: torch.nn.Module) -> list[dict]:
    total = sum(_numel(p) for p in model.parameters())
    # the group's own learning rate: a schedule in its warm-up has already set "lr" to its first value (often 0)
    rows = [{"pattern": g["pattern"], "tensors": len(g["params"]), "parameters": sum(_numel(p) for p in g["params"]),
             "lr": g.get("initial_lr", g["lr"])} for g in param_groups]
    trainable = sum(r["parameters"] for r in rows)
    rows.append({"pattern": "(frozen)", "tensors": None, "parameters": total - trainable, "lr": None})
    return rows
