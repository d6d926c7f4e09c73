"""The two heads on the latent block: the embedding head and the latent decoder head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """Pools the hidden states of the latent positions after the first K, projects, normalises.

    ``last`` takes the ``[EMBED]`` state (the last position), ``mean`` averages the positions,
    ``attention`` weighs them with a learned query. Embeddings come out in float32 and are normalised
    in float32 (a bfloat16 vector normalised in bfloat16 has a norm anywhere in about 1 +- 2e-3).
    """

    def __init__(self, hidden_size: int, pooling: str = "last", projection_dim: int | None = None):
        super().__init__()
        self.pooling = pooling
        self.query = nn.Parameter(torch.zeros(hidden_size)) if pooling == "attention" else None
        self.projection = nn.Linear(hidden_size, projection_dim) if projection_dim else None

    def forward(self, embed_states: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``embed_states``: (B, M, H) -> embeddings (B, D)."""
        if self.pooling == "last":
            pooled = embed_states[:, -1]
        elif self.pooling == "mean":
            pooled = embed_states.mean(dim=1)
        else:
            scores = embed_states @ self.query.to(embed_states.dtype) / embed_states.shape[-1] ** 0.5
            pooled = (scores.softmax(dim=1).unsqueeze(-1) * embed_states).sum(dim=1)
        if self.projection is not None:
            pooled = self.projection(pooled.to(self.projection.weight.dtype))
        pooled = pooled.float()
        return F.normalize(pooled, dim=-1) if normalize else pooled


class LatentDecoderHead(nn.Module):
    """A causal LM that reads ONLY the K reason-token states, as a projected soft prefix.

    Training: teacher-forced cross-entropy on the target text's tokens (the prefix positions carry
    no labels). Inference: :meth:`generate` shows in words what the latent states hold.
    """

    def __init__(self, hidden_size: int, decoder, tokenizer, projector: str = "mlp", max_length: int = 64):
        super().__init__()
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        dec_size = decoder.get_input_embeddings().embedding_dim
        if projector == "linear":
            self.projector = nn.Linear(hidden_size, dec_size)
        else:
            self.projector = nn.Sequential(nn.Linear(hidden_size, dec_size), nn.GELU(), nn.Linear(dec_size, dec_size))

    def prefix(self, reason_states: torch.Tensor) -> torch.Tensor:
        """(B, K, H) reason states -> (B, K, H_decoder) soft prefix in the decoder's input space."""
        projected = self.projector(reason_states.to(next(self.projector.parameters()).dtype))
        return projected.to(self.decoder.get_input_embeddings().weight.dtype)

    def tokenize_targets(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded target ids ending in EOS, and their mask."""
        eos = self.tokenizer.eos_token_id
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"][: self.max_length - 1] + [eos] for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(device), mask.to(device)

    def loss_terms(self, reason_states: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, int]:
        """Summed token cross-entropy of ``texts`` given the (B, K, H) reason states, and the token count.

        Sums (not means) let a batch be split into chunks (GradCache) without changing the loss.
        """
        if len(texts) != reason_states.shape[0]:
            raise ValueError(f"{len(texts)} decoder targets for {reason_states.shape[0]} queries")
        prefix = self.prefix(reason_states)
        ids, mask = self.tokenize_targets(texts, prefix.device)
        embeds = torch.cat([prefix, self.decoder.get_input_embeddings()(ids)], dim=1)
        attention = torch.cat([torch.ones(prefix.shape[:2], dtype=mask.dtype, device=mask.device), mask], dim=1)
        hidden = self.decoder.base_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
        k = prefix.shape[1]
        # Only the positions that predict a target token go through the LM head (vocabularies are large).
        predicting = hidden[:, k - 1: -1][mask.bool()]
        logits = self.decoder.get_output_embeddings()(predicting).float()
        total = F.cross_entropy(logits, ids[mask.bool()], reduction="sum")
        return total, int(mask.sum())

    def loss(self, reason_states: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Mean token cross-entropy of ``texts`` given the (B, K, H) reason states."""
        total, count = self.loss_terms(reason_states, texts)
        return total / count

    def count_target_tokens(self, texts: list[str]) -> int:
        return sum(min(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]), self.max_length - 1) + 1
                   for t in texts)

    @torch.no_grad()
    def generate(self, reason_states: torch.Tensor, max_new_tokens: int = 32) -> list[str]:
        prefix = self.prefix(reason_states)
        attention = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        new_tokens = self.decoder.generate(
            inputs_embeds=prefix,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
