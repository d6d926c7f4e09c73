"""The peers LaME is measured against, on the same backbone classes and with the same ``encode`` API.

* **discriminative** (VLM2Vec style) is plain :class:`LaMEModel` with ``num_reason_tokens=0``: the
  embedding is the last hidden state at ``[EMBED]``, right after the prompt.
* :class:`SequentialLatentModel` (``variant="sequential"``, PLUME / Coconut style): the prompt and its
  latent block (``[EMBED]`` alone by default, K=0) are run once with a KV cache; then ``latent_steps``
  steps each feed the previous last hidden state back as the next input embedding (one new position per
  step, one backbone call per step); the state fed back is the backbone's last hidden state (after its
  final norm), as in Coconut. The embedding is the last step's hidden state through the embedding head;
  the K step states are ``reason_states``. Gradients flow through every step (training runs the same
  loop; with gradient checkpointing, which drops KV caches, each step re-runs the growing sequence).
* :class:`ExplicitCoTModel` (``variant="cot"``, UME-R1 style): the backbone generates a rationale
  after the prompt (greedy, KV cache, at most ``cot_max_new_tokens`` tokens, stops at the backbone
  family's end-of-turn token, ``<|im_end|>`` for Qwen),
  then the latent block (the learned ``[EMBED]`` vector) is appended after the rationale and run in ONE
  extra cached step; the embedding is taken there. ``force_length=True`` makes every query generate
  exactly ``cot_max_new_tokens`` tokens (EOS suppressed), for comparable timings. Training uses
  rationale annotations with teacher forcing: prompt + rationale + end of turn + ``[EMBED]`` in one
  pass, contrastive loss on ``[EMBED]`` plus LM cross-entropy on the rationale tokens (``lm_loss``, added
  by the training step under ``reconstruction_weight``). Positives and negatives are embedded without a
  rationale in training; at inference a query gets one and a document (``role="document"``,
  ``encode_document``) none, as in training; ``generate_rationale = False`` gives none to any item.

Positions: left-padded batches get their padding-aware positions from the adapter for the prompt
(multimodal RoPE from ``get_rope_index`` for Qwen); every new position (latent step, generated token,
appended ``[EMBED]``) is the row's last prompt position + its offset, passed explicitly as
``position_ids``, so an item's embedding does not depend on its batch neighbours. Every backbone call
goes through the model's adapter (:mod:`lame.modeling.adapters`).

Build a baseline sharing another model's backbone, tokenizer and processor with :func:`variant_of`, or a
tiny one with ``build_tiny_model(variant=..., **BASELINE_DEFAULTS)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from ..config import LaMEConfig
from ..data.featurize import Features
from ..data.items import ItemError
from .lame import LaMEModel, LaMEOutput
from .roles import Role, check_role


def _last_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """(..., B, 1): each row's last position (left padding: the last column; a text token, so its maximum)."""
    return position_ids[..., -1:]


def _extended(batch: dict[str, torch.Tensor], new: int) -> dict[str, torch.Tensor]:
    """``batch`` with ``new`` text positions appended to every row (their embeddings are given separately)."""
    pad = batch["input_ids"].new_zeros(batch["input_ids"].shape[0], new)
    out = dict(batch, input_ids=torch.cat([batch["input_ids"], pad], dim=1),
               attention_mask=torch.cat([batch["attention_mask"], torch.ones_like(pad)], dim=1))
    if "mm_token_type_ids" in batch:
        out["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], pad.to(batch["mm_token_type_ids"].dtype)], dim=1)
    return out


@dataclass
class SequentialOutput(LaMEOutput):
    steps: int | None = None  # latent steps run after the prompt


@dataclass
class CoTOutput(LaMEOutput):
    generated_ids: torch.Tensor | None = None  # (B, N): the rationale tokens (pad after a row's end of turn)
    generated_lengths: torch.Tensor | None = None  # (B,): tokens up to and including the end of turn, else N


class SequentialLatentModel(LaMEModel):
    """PLUME / Coconut-style sequential latent reasoning: ``latent_steps`` backbone calls after the prompt."""

    def __init__(self, config: LaMEConfig, *args, **kwargs):
        if config.variant != "sequential":
            raise ValueError(f"SequentialLatentModel needs variant='sequential', got {config.variant!r}")
        super().__init__(config, *args, **kwargs)

    def forward(self, batch: dict[str, torch.Tensor], normalize: bool | None = None,
                role: Role | None = None, num_reason_tokens: int | None = None) -> SequentialOutput:
        """The prompt pass, then the latent steps; queries and documents (``role``) alike.
        ``num_reason_tokens``: K or None (the baselines train with no other)."""
        check_role(role)
        self.check_reason_tokens(num_reason_tokens)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        steps = self.config.latent_steps
        inputs_embeds = self.input_embeddings(batch["input_ids"])
        position_ids = self.adapter.positions(self.backbone, batch)
        # Gradient checkpointing drops KV caches in training: re-run the growing sequence instead.
        use_cache = not (self.training and getattr(self.backbone, "is_gradient_checkpointing", False))
        out = self.adapter.run(self.backbone, batch, inputs_embeds, use_cache=use_cache and steps > 0)
        prompt_hidden = out.last_hidden_state
        if use_cache:
            states = self._steps_cached(prompt_hidden[:, -1:], out.past_key_values, batch["attention_mask"],
                                        _last_positions(position_ids), steps)
        else:
            states = self._steps_recomputed(prompt_hidden[:, -1:], inputs_embeds, batch, position_ids, steps)
        n_latent, k = self.config.num_latent_tokens, self.config.num_reason_tokens
        latent_states = prompt_hidden[:, -n_latent:]
        embed_states = latent_states[:, k:] if steps == 0 else states[:, -1:]
        normalize = self.config.normalize if normalize is None else normalize
        return SequentialOutput(
            embeddings=self.embedding_head(embed_states, normalize=normalize),
            reason_states=states if steps else latent_states[:, :k],
            embed_states=embed_states,
            hidden_states=torch.cat([prompt_hidden, states], dim=1),
            steps=steps,
        )

    def _steps_cached(self, state, cache, attention_mask, last_position, steps: int) -> torch.Tensor:
        """``steps`` one-position calls of the language model, each reading the previous last hidden state."""
        language_model = self.adapter.language_model(self.backbone)
        size, length = attention_mask.shape
        mask = torch.cat([attention_mask, attention_mask.new_ones(size, steps)], dim=1)
        if getattr(language_model.config, "_attn_implementation", None) == "sdpa":
            # One new query position per step: its SDPA mask is just the key mask, so it is built once here
            # (a 4D mask is used as given) instead of once per step by the model.
            mask = mask.bool()[:, None, None, :]
        positions = last_position + torch.arange(1, steps + 1, device=last_position.device)  # (..., B, steps)
        states = []
        for j in range(steps):
            state = self.adapter.cached_step(self.backbone, state, mask[..., : length + j + 1],
                                             positions[..., j: j + 1], cache)
            states.append(state)
        return torch.cat(states, dim=1) if states else state[:, :0]

    def _steps_recomputed(self, state, inputs_embeds, batch, position_ids, steps: int) -> torch.Tensor:
        """The same steps without a cache (each step re-runs the whole sequence): for gradient checkpointing."""
        last = _last_positions(position_ids)
        fed, states = [state], []  # inputs of the steps so far: the prompt's last state, then each step's
        for j in range(1, steps + 1):
            positions = torch.cat([position_ids, last + torch.arange(1, j + 1, device=last.device)], dim=-1)
            state = self.adapter.run(self.backbone, _extended(batch, j), torch.cat([inputs_embeds, *fed], dim=1),
                                     position_ids=positions).last_hidden_state[:, -1:]
            fed.append(state)
            states.append(state)
        return torch.cat(states, dim=1) if states else state[:, :0]


@dataclass
class CoTFeatures(Features):
    lm_tokens: int = 0  # tokens right before the latent block that carry LM labels (rationale + end of turn)


def _fields_of(features: Features, **changes) -> dict:
    """The :class:`Features` fields of ``features`` (images, videos), with ``changes``."""
    return {f.name: getattr(features, f.name) for f in fields(Features)} | changes


class ExplicitCoTModel(LaMEModel):
    """UME-R1-style explicit chain of thought: generate a rationale, then embed at ``[EMBED]`` after it."""

    def __init__(self, config: LaMEConfig, *args, **kwargs):
        if config.variant != "cot":
            raise ValueError(f"ExplicitCoTModel needs variant='cot', got {config.variant!r}")
        super().__init__(config, *args, **kwargs)
        self.force_length = False  # timing runs: exactly cot_max_new_tokens tokens per query, EOS suppressed
        # False: evaluation embeds at [EMBED] right after the prompt, as training does for positives and
        # negatives (e.g. to encode a candidate pool without rationales).
        self.generate_rationale = True
        self.rationale_end_id = self.tokenizer.convert_tokens_to_ids(
            self.adapter.end_of_turn_token or self.tokenizer.eos_token)

    # ------------------------------------------------------------------------ training (teacher forcing)
    def rationale_features(self, query, rationale: str | None, index: int | None = None,
                           base: Features | None = None) -> CoTFeatures:
        """Prompt + rationale + end of turn + latent block; the rationale tokens (and the end) carry labels.

        ``base``: the query's own features, when already made.
        """
        base = self.featurizer(query, index=index) if base is None else base
        if not rationale:
            return CoTFeatures(**_fields_of(base), lm_tokens=0)
        found = [t for t in self.featurizer.reserved if t in rationale]
        if found:
            raise ItemError(index, f"rationale contains reserved control token(s) {found}")
        ids = self.tokenizer(rationale, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        ids = torch.cat([ids, torch.tensor([self.rationale_end_id])])
        n_latent = self.config.num_latent_tokens
        input_ids = torch.cat([base.input_ids[:-n_latent], ids, base.input_ids[-n_latent:]])
        if input_ids.shape[0] > self.config.max_length:
            raise ItemError(index, f"too long with its rationale: {input_ids.shape[0]} tokens "
                                   f"> max_length {self.config.max_length}")
        return CoTFeatures(**_fields_of(base, input_ids=input_ids), lm_tokens=int(ids.shape[0]))

    def training_query_features(self, example, features: Features) -> CoTFeatures:
        return self.rationale_features(example.query, getattr(example, "rationale", None), base=features)

    def collate(self, features: list[Features], packed: bool = False, capacity: int | None = None,
                num_reason_tokens: int | None = None) -> dict[str, torch.Tensor]:
        batch = super().collate(features, num_reason_tokens=num_reason_tokens)  # generation needs padded rows
        lm_tokens = [getattr(f, "lm_tokens", 0) for f in features]
        if any(lm_tokens):
            batch["lm_tokens"] = torch.tensor(lm_tokens)
        return batch

    # --------------------------------------------------------------------------------------- forward
    def forward(self, batch: dict[str, torch.Tensor], normalize: bool | None = None, role: Role | None = None,
                generate: bool | None = None, num_reason_tokens: int | None = None) -> LaMEOutput:
        """Teacher-forced single pass in training mode, for batches carrying rationales and for documents
        (``role="document"``: training embeds positives without a rationale); otherwise (evaluation,
        ``encode``, ``role`` "query" or None) generate the rationale, then embed after it.
        ``num_reason_tokens``: K or None (the baselines train with no other)."""
        check_role(role)
        self.check_reason_tokens(num_reason_tokens)
        if generate is None:
            generate = (not self.training and self.generate_rationale and "lm_tokens" not in batch
                        and role != "document" and self.config.cot_max_new_tokens > 0)
        if generate:
            return self._generate_and_embed(batch, normalize)
        out = super().forward(batch, normalize)
        if "lm_tokens" in batch:
            out.lm_loss = self._rationale_loss(out.hidden_states, batch)
        return out

    def _rationale_loss(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """Summed cross-entropy of the rationale tokens (and their end of turn), each predicted from the left."""
        input_ids = batch["input_ids"].to(hidden.device)
        lm_tokens = batch["lm_tokens"].to(hidden.device)
        length = input_ids.shape[1]
        end = length - self.config.num_latent_tokens  # labels occupy [end - lm_tokens, end)
        columns = torch.arange(length, device=hidden.device)
        labelled = (columns[None] >= end - lm_tokens[:, None]) & (columns[None] < end)  # (B, L)
        predicting = torch.zeros_like(labelled)
        predicting[:, :-1] = labelled[:, 1:]
        logits = self.backbone.get_output_embeddings()(hidden[predicting]).float()
        return F.cross_entropy(logits, input_ids[labelled], reduction="sum")

    def generation_config(self) -> GenerationConfig:
        n = self.config.cot_max_new_tokens
        return GenerationConfig(
            max_new_tokens=n, min_new_tokens=n if self.force_length else 0, do_sample=False, num_beams=1,
            eos_token_id=self.rationale_end_id, pad_token_id=self.tokenizer.pad_token_id, use_cache=True,
            return_dict_in_generate=True,
        )

    def _generate_and_embed(self, batch: dict[str, torch.Tensor], normalize: bool | None) -> CoTOutput:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        n_latent, k = self.config.num_latent_tokens, self.config.num_reason_tokens
        ids = batch["input_ids"]
        if not torch.equal(ids[:, -n_latent:], self.latent_token_ids.expand(ids.shape[0], -1)):
            raise ValueError("every row of the batch must end with the latent block; build batches with collate()")
        per_position = ("input_ids", "attention_mask", "mm_token_type_ids")
        prompt = {key: value[:, :-n_latent] if key in per_position else value for key, value in batch.items()}
        generated = self.adapter.generate(self.backbone, prompt, self.generation_config())
        new = generated.sequences[:, prompt["input_ids"].shape[1]:]  # (B, N)
        size, n = new.shape
        is_end = new == self.rationale_end_id
        first_end = torch.where(is_end.any(1), is_end.int().argmax(1), n - 1)
        lengths = first_end + 1  # tokens a row really generated (a row that stopped is padded after)
        columns = torch.arange(n, device=new.device)
        gen_mask = (columns[None] < lengths[:, None]).to(prompt["attention_mask"].dtype)

        # The cache holds the prompt and every generated token but the last: one step feeds the last
        # token and the latent block together.
        last = _last_positions(self.adapter.positions(self.backbone, prompt))  # (..., B, 1)
        latent = self.latent_embeddings.to(self.backbone.dtype).expand(size, -1, -1)
        embeds = torch.cat([self.backbone.get_input_embeddings()(new[:, -1:]), latent], dim=1)
        positions = torch.cat([last + n, last + lengths[:, None] + 1
                               + torch.arange(n_latent, device=new.device)], dim=-1)
        mask = torch.cat([prompt["attention_mask"], gen_mask, gen_mask.new_ones(size, n_latent)], dim=1)
        hidden = self.adapter.cached_step(self.backbone, embeds, mask, positions, generated.past_key_values)
        latent_states = hidden[:, 1:]
        normalize = self.config.normalize if normalize is None else normalize
        return CoTOutput(
            embeddings=self.embedding_head(latent_states[:, k:], normalize=normalize),
            reason_states=latent_states[:, :k],
            embed_states=latent_states[:, k:],
            hidden_states=hidden,
            generated_ids=new,
            generated_lengths=lengths,
        )


# The baselines have no reason tokens, hence no decoder head and no diversity term (LaME's regularisers).
BASELINE_DEFAULTS = {"num_reason_tokens": 0, "use_decoder": False, "diversity_weight": 0.0}


def variant_of(model: LaMEModel, variant: str = "lame", **overrides) -> LaMEModel:
    """A model of another variant (or K, or rationale length) on the SAME backbone, tokenizer and
    image processor as ``model``; its own latent vectors and heads are new, on the device and in the
    dtype of ``model``'s latent vectors. The shared backbone is neither moved nor cast."""
    if variant == "discriminative":
        variant, overrides = "lame", {"num_reason_tokens": 0} | overrides
    defaults = {"use_decoder": False} if variant == "lame" else BASELINE_DEFAULTS
    config = model.config.replace(variant=variant, reason_token_ids=[], embed_token_ids=[], elastic_k=None,
                                  matryoshka_dims=None, **(defaults | overrides))
    new = LaMEModel.from_components(config, model.backbone, model.tokenizer, model.image_processor)
    # Only the new model's own parts take the device and dtype of ``model``'s latent vectors; the shared
    # backbone stays as it is (a bfloat16 backbone beside float32 latent vectors is not cast to float32).
    device, dtype = model.device, model.latent_embeddings.dtype
    for name, child in new.named_children():
        if name != "backbone":
            child.to(device=device, dtype=dtype)
    new.latent_embeddings.data = new.latent_embeddings.data.to(device=device, dtype=dtype)
    new.latent_token_ids = new.latent_token_ids.to(device)
    return new.train(model.training)

