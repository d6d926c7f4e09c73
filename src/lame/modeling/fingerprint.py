"""A model's fingerprint: one string that changes when the model's embeddings would change.

``lame encode`` writes it into the embeddings' manifest, ``lame index build`` carries it into the
index, and ``lame serve`` / ``lame search`` refuse an index whose fingerprint is not the model's.
It is computed from the loaded model, not from its files, so a moved or re-saved folder keeps it:

* the configuration fields that shape an embedding (variant, K, embedding tokens, pooling,
  projection, normalisation, the latent token ids, the backbone family);
* the embedding dimension;
* the image processor's settings and the tokenizer's size and chat template;
* every weight's name and shape and a fixed sample of its values (all of a tensor up to 65,536
  values, else 4,096 evenly spaced ones), cast to bfloat16 so that a float32 and a bfloat16 load
  of the same checkpoint agree. The decoder head is left out: it is never run to embed.

Two checkpoints of one training run differ in practically every weight, so the sample tells them
apart; it is a guard against mistakes, not a cryptographic seal on the weights.
"""

from __future__ import annotations

import hashlib
import json

import torch

EMBEDDING_CONFIG = ("variant", "latent_steps", "cot_max_new_tokens", "num_reason_tokens", "num_embed_tokens",
                    "pooling", "projection_dim", "normalize", "backbone_type", "reason_token_ids", "embed_token_ids")
OPTIONAL_CONFIG = ("video_max_pixels",)
WHOLE = 65_536  # tensors up to this many values are hashed whole
SAMPLE = 4_096  # values sampled from a larger tensor


def model_fingerprint(model) -> str:
    """``"sha256:<hex>"`` of what decides ``model``'s embeddings (see the module docstring)."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    processor = model.image_processor.to_dict() if hasattr(model.image_processor, "to_dict") else {}
    processor = {k: v for k, v in processor.items() if not k.startswith("_") and k != "processor_class"}
    shaping = {k: config.get(k) for k in EMBEDDING_CONFIG}
    for key in OPTIONAL_CONFIG:  # only where set: models without them keep the fingerprints they had
        if config.get(key) is not None:
            shaping[key] = config[key]
    header = {
        "config": shaping,
        "dim": model.embedding_dim,
        "image_processor": processor,
        "tokenizer": {"size": len(model.tokenizer),
                      "chat_template": hashlib.sha256(str(model.tokenizer.chat_template).encode()).hexdigest()},
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if name.startswith("decoder_head."):
                continue
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            values = tensor.detach().reshape(-1)
            if values.numel() > WHOLE:
                values = values[torch.linspace(0, values.numel() - 1, SAMPLE, device=values.device).long()]
            digest.update(values.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
    return "sha256:" + digest.hexdigest()
