"""LoRA adapters on the backbone's language model (where the backbone adapter says it sits), through
peft, injected in place.

Injecting (rather than wrapping in a ``PeftModel``) keeps every parameter name stable, so the
trainer's name patterns, checkpoints and DDP see the same model with or without LoRA.
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer


def add_lora(model, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> None:
    """Adds LoRA adapters to ``model`` (a LaMEModel) and records them in its config."""
    settings = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": list(target_modules)}
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    inject_adapter_in_model(config, model.get_submodule(model.adapter.lora_host))
    model.config = model.config.replace(lora=settings)


def has_lora(model) -> bool:
    return any(isinstance(m, LoraLayer) for m in model.modules())


def merge_lora(model) -> None:
    """Folds the adapters into the base weights and removes them: a plain model, same embeddings."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    model.config = model.config.replace(lora=None)


def is_lora_name(name: str) -> bool:
    return ".lora_" in name


def plain_backbone_name(name: str) -> str:
    """``...q_proj.base_layer.weight`` -> ``...q_proj.weight``: the name without LoRA wrapping."""
    return name.replace(".base_layer.", ".")
