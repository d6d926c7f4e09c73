"""Real-size models without their weights: the architecture on PyTorch's meta device.

``lame train --dry-run`` lists a recipe's parameter groups and their sizes before a checkpoint is
on the machine. The architectures of the backbones and decoders the shipped recipes name are kept
as their ``config.json`` (``architectures/<folder name>.json``); a recipe whose folder is missing
but whose folder name matches one of them is built here with no memory and no download.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ..config import LaMEConfig
from ..errors import MissingPath
from .adapters import get_adapter
from .tiny import build_tiny_tokenizer


def known_architectures() -> dict[str, Path]:
    """Folder name (e.g. ``Qwen2-VL-2B-Instruct``) -> the shipped ``config.json`` copy."""
    folder = resources.files(__package__) / "architectures"
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".json")}


def architecture_of(path: str) -> dict | None:
    """The architecture config for a checkpoint folder: its own config.json, else the shipped copy."""
    own = Path(path) / "config.json"
    if own.is_file():
        return json.loads(own.read_text())
    shipped = known_architectures().get(Path(path).name)
    return json.loads(shipped.read_text()) if shipped else None


def build_on_meta(backbone: str, decoder: str | None, config: LaMEConfig):
    """A LaME model with the real architecture and no weights (every tensor on the meta device).

    The tokenizer is the tiny one: only the parameter shapes matter, and the real vocabularies
    already have room for the latent tokens.
    """
    from .lame import LaMEModel

    backbone_config = architecture_of(backbone)
    if backbone_config is None:
        raise MissingPath(f"{backbone}: no such folder, and no shipped architecture named "
                          f"{Path(backbone).name!r} (known: {', '.join(sorted(known_architectures()))})")
    decoder_config = None
    if decoder is not None and config.use_decoder and config.num_reason_tokens > 0:
        decoder_config = architecture_of(decoder)
        if decoder_config is None:
            raise MissingPath(f"{decoder}: no such folder, and no shipped architecture named "
                              f"{Path(decoder).name!r}")
    adapter = get_adapter(backbone_config["model_type"])
    with torch.device("meta"):
        model = adapter.model_class(AutoConfig.for_model(**backbone_config))
        decoder_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**decoder_config)) if decoder_config else None
        tokenizer = build_tiny_tokenizer()
        return LaMEModel.from_components(config, model, tokenizer, adapter.tiny_image_processor(),
                                         decoder_model, build_tiny_tokenizer() if decoder_model else None)
