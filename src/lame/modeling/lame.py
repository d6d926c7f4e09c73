"""LaMEModel: a vision-language backbone that reads the query, then K reason tokens and [EMBED],
in one forward pass; the embedding comes from the latent positions after the first K."""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import ModelOutput

from ..config import ConfigError, LaMEConfig
from ..data.featurize import Features, Featurizer, collate
from ..data.items import ItemError, ItemLike
from ..errors import MissingPath
from ..integrations.st_files import write_sentence_transformers_files
from .adapters import get_adapter
from .elastic import check_choice, trim_reason_tokens, truncate
from .heads import EmbeddingHead, LatentDecoderHead
from .inference import inference_context
from .lora import add_lora, is_lora_name, plain_backbone_name
from .roles import Role, check_role
from .variants import variant_class

HEADS_FILE = "lame_heads.safetensors"


@dataclass
class LaMEOutput(ModelOutput):
    """A ``ModelOutput`` (a dict as well as a dataclass), so that wrappers that look for the tensors
    in a module's output (DeepSpeed ZeRO-3's backward hooks) find them."""

    embeddings: torch.Tensor | None = None  # (B, D)
    reason_states: torch.Tensor | None = None  # (B, K, H): last hidden states of the K reason tokens
    embed_states: torch.Tensor | None = None  # (B, M, H): last hidden states of the positions after the first K
    hidden_states: torch.Tensor | None = None  # (B, L, H): every position, for inspection and tests
    # Summed token cross-entropy of text the model reads itself (the explicit-CoT baseline's rationale),
    # added by the training step under the reconstruction weight; None for LaME.
    lm_loss: torch.Tensor | None = None

    def decoder_states(self, reads: str = "reason") -> torch.Tensor:
        """What the decoder head reads: the reason states, or (a control) the [EMBED] states."""
        return self.reason_states if reads == "reason" else self.embed_states


@dataclass
class SkippedItem:
    index: int
    reason: str


class LaMEModel(nn.Module):
    """The LaME embedder. Build it with :meth:`from_backbone` (a local Hugging Face VLM folder),
    :meth:`from_pretrained` (a saved LaME folder) or :func:`lame.build_tiny_model`."""

    def __init__(self, config: LaMEConfig, backbone, tokenizer, image_processor, decoder=None, decoder_tokenizer=None):
        super().__init__()
        self.config = config
        self.adapter = get_adapter(backbone.config.model_type)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        hidden = self.adapter.hidden_size(backbone)
        self.latent_embeddings = nn.Parameter(torch.randn(config.num_latent_tokens, hidden) * config.latent_init_std)
        self.embedding_head = EmbeddingHead(hidden, config.pooling, config.projection_dim)
        self.decoder_head = None
        if config.use_decoder and config.num_reason_tokens > 0:
            if decoder is None or decoder_tokenizer is None:
                raise ValueError("use_decoder is set but no decoder model and tokenizer were given")
            self.decoder_head = LatentDecoderHead(
                hidden, decoder, decoder_tokenizer, config.decoder_projector, config.decoder_max_length
            )
        self.featurizer = Featurizer(tokenizer, image_processor, config.latent_token_strings(), config.max_length,
                                     self.adapter.image_layout(image_processor, backbone.config,
                                                               video_max_pixels=config.video_max_pixels))
        self.register_buffer("latent_token_ids", torch.tensor(config.reason_token_ids + config.embed_token_ids),
                             persistent=False)

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_components(cls, config: LaMEConfig, backbone, tokenizer, image_processor, decoder=None,
                        decoder_tokenizer=None) -> "LaMEModel":
        """Adds the latent tokens to ``tokenizer`` (ids recorded in the config) and builds the model."""
        latent = config.latent_token_strings()
        tokenizer.add_tokens([t for t in latent if t not in tokenizer.get_vocab()], special_tokens=True)
        ids = tokenizer.convert_tokens_to_ids(latent)
        embedding_dim = config.projection_dim or get_adapter(backbone.config.model_type).hidden_size(backbone)
        config = config.replace(
            backbone_type=backbone.config.model_type,
            reason_token_ids=ids[: config.num_reason_tokens],
            embed_token_ids=ids[config.num_reason_tokens:],
            **trained_choices(config, embedding_dim),
        )
        rows = backbone.get_input_embeddings().num_embeddings
        if len(tokenizer) > rows:
            # The new rows are never read: the latent positions take ``latent_embeddings`` instead.
            backbone.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        return _model_class(cls, config.variant)(config, backbone, tokenizer, image_processor, decoder,
                                                 decoder_tokenizer)

    @classmethod
    def from_backbone(cls, path: str | Path, config: LaMEConfig | None = None, decoder: str | Path | None = None,
                      dtype: torch.dtype | None = None) -> "LaMEModel":
        """A new LaME model on a Hugging Face VLM checkpoint in a local folder (nothing is downloaded).

        ``decoder`` is a local causal-LM folder (e.g. Qwen3-0.6B) for the latent decoder head.
        """
        path = Path(path)
        if not path.is_dir():
            raise MissingPath(f"backbone folder {path} does not exist")
        config = config or LaMEConfig()
        adapter = get_adapter(AutoConfig.from_pretrained(path, local_files_only=True).model_type)
        backbone = adapter.model_class.from_pretrained(path, dtype=dtype, local_files_only=True)
        tokenizer = _load_tokenizer(path)
        image_processor = adapter.load_image_processor(path, config.min_pixels, config.max_pixels)
        decoder_model = decoder_tokenizer = None
        if config.use_decoder and config.num_reason_tokens > 0:
            if decoder is None:
                raise ValueError("use_decoder is set: pass decoder=<local causal LM folder> or use_decoder=False")
            decoder_model = AutoModelForCausalLM.from_pretrained(decoder, dtype=dtype, local_files_only=True)
            decoder_tokenizer = _load_tokenizer(Path(decoder))
        return cls.from_components(config, backbone, tokenizer, image_processor, decoder_model, decoder_tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "LaMEModel":
        """Loads a folder written by :meth:`save_pretrained`."""
        directory = Path(directory)
        config = LaMEConfig.load(directory)
        adapter = get_adapter(config.backbone_type)
        backbone = adapter.model_class.from_pretrained(directory / "backbone", dtype=dtype, local_files_only=True)
        tokenizer = _load_tokenizer(directory / "processor")
        image_processor = adapter.load_image_processor(directory / "processor")
        decoder = decoder_tokenizer = None
        if (directory / "decoder").is_dir():
            decoder = AutoModelForCausalLM.from_pretrained(directory / "decoder", dtype=dtype, local_files_only=True)
            decoder_tokenizer = _load_tokenizer(directory / "decoder")
        model = _model_class(cls, config.variant)(config, backbone, tokenizer, image_processor, decoder,
                                                  decoder_tokenizer)
        if config.lora:
            add_lora(model, **config.lora)
        missing, unexpected = model.load_state_dict(load_file(directory / HEADS_FILE), strict=False)
        missing = [k for k in missing if not _is_base_weight(k)]
        if missing or unexpected:
            raise ValueError(f"{directory / HEADS_FILE}: missing {missing}, unexpected {unexpected}")
        if dtype is not None:
            model.to(dtype)
        if device is not None:
            model.to(device)
        return model.eval()

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Writes config, safetensors weights, tokenizer, image processor, decoder, a model card and the
        files sentence-transformers reads (``modules.json``, ``config_sentence_transformers.json``).

        ``state_dict`` replaces the module's own (sharded training passes the gathered full weights).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        state = self.state_dict() if state_dict is None else state_dict

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {plain_backbone_name(k[len(prefix):]): v for k, v in state.items()
                    if k.startswith(prefix) and not is_lora_name(k)}

        self.backbone.save_pretrained(directory / "backbone", state_dict=part("backbone."))
        self.tokenizer.save_pretrained(directory / "processor")
        self.image_processor.save_pretrained(directory / "processor")
        if self.decoder_head is not None:
            self.decoder_head.decoder.save_pretrained(directory / "decoder", state_dict=part("decoder_head.decoder."))
            self.decoder_head.tokenizer.save_pretrained(directory / "decoder")
        heads = {k: v.detach().contiguous().cpu() for k, v in state.items() if not _is_base_weight(k)}
        save_file(heads, directory / HEADS_FILE)
        write_sentence_transformers_files(directory)  # SentenceTransformer(directory) loads the same model
        if not (directory / "README.md").exists():
            (directory / "README.md").write_text(self.model_card())

    def model_card(self) -> str:
        c = self.config
        return (
            "---\nlibrary_name: lame\ntags: [embeddings, multimodal, latent-reasoning, sentence-transformers]\n"
            "pipeline_tag: feature-extraction\n---\n"
            f"# LaME embedding model\n\nBackbone family: `{c.backbone_type}`; K = {c.num_reason_tokens} reason tokens, "
            f"{c.num_embed_tokens} embedding token(s), pooling `{c.pooling}`.\n\n"
            + (f"Trained to embed with k of {self.reason_token_choices} reason tokens and at sizes "
               f"{self.dimension_choices}: `encode(items, num_reason_tokens=k, dimensions=d)`.\n\n"
               if (len(self.reason_token_choices), len(self.dimension_choices)) != (1, 1) else "") +
            "```python\nfrom lame import LaMEModel\nmodel = LaMEModel.from_pretrained(\"PATH\")\n"
            "emb = model.encode([\"a query\", {\"text\": \"a caption\", \"image\": \"photo.png\"}])\n```\n\n"
            "With `lame[st]` installed, sentence-transformers loads the same folder:\n\n"
            "```python\nfrom sentence_transformers import SentenceTransformer\n"
            "st = SentenceTransformer(\"PATH\", trust_remote_code=True)  # imports lame's module class\n"
            "emb = st.encode([\"a query\"])\n```\n\n"
            f"Configuration:\n\n```json\n{json.dumps(c.to_dict(), indent=2)}\n```\n"
        )

    # ------------------------------------------------------------------------------------ forward
    @property
    def device(self) -> torch.device:
        return self.latent_embeddings.device

    def featurize(self, items: Sequence[ItemLike]) -> list[Features]:
        """Features of every item (one batched featurizer call); raises the first bad item's ItemError."""
        results = self.featurizer.many(items)
        for result in results:
            if isinstance(result, ItemError):
                raise result
        return results

    def training_query_features(self, example, features: Features) -> Features:
        """Features of a training example's query, given the query item's own ``features`` (the
        explicit-CoT baseline adds the example's rationale)."""
        return features

    def collate(self, features: list[Features], packed: bool = False, capacity: int | None = None,
                num_reason_tokens: int | None = None) -> dict[str, torch.Tensor]:
        """A batch for :meth:`forward`: left-padded, or with ``packed`` padding-free
        (:mod:`lame.data.packing`: items share rows, each attending only to itself; a row holds at most
        ``capacity`` positions, None: the batch's longest item). Only the single-pass LaME forward reads
        packed batches; the baselines (their own forward) and batches with videos stay padded.
        ``num_reason_tokens``: keep the first k of the K reason tokens (:mod:`lame.modeling.elastic`);
        pass the same k to :meth:`forward`."""
        k = self.check_reason_tokens(num_reason_tokens)
        features = [trim_reason_tokens(f, self.config.num_reason_tokens, self.config.num_embed_tokens, k)
                    for f in features]
        single_pass = type(self).forward is LaMEModel.forward and type(self).collate is LaMEModel.collate
        no_video = all(f.pixel_values_videos is None for f in features)
        if packed and single_pass and no_video:
            from ..data.packing import collate_packed

            return collate_packed(features, self.tokenizer.pad_token_id, self.featurizer.image_token_id, capacity)
        return collate(features, self.tokenizer.pad_token_id, self.featurizer.image_token_id,
                       self.featurizer.video_token_id)

    def forward(self, batch: dict[str, torch.Tensor], normalize: bool | None = None,
                role: Role | None = None, num_reason_tokens: int | None = None) -> LaMEOutput:
        """One pass over query + latent block. ``batch`` comes from :meth:`collate` (padded or packed).
        ``role`` (``"query"``, ``"document"``): LaME embeds both alike (see :mod:`lame.modeling.roles`).
        ``num_reason_tokens``: the k reason tokens the batch was collated with (default: K); the
        embedding comes from the positions after them, the decoder reads their k states."""
        check_role(role)
        k = self.check_reason_tokens(num_reason_tokens)
        batch = {key: v.to(self.device) for key, v in batch.items()}
        n_latent = k + self.config.num_embed_tokens
        if "pack_rows" in batch:
            hidden, latent_states = self._packed_pass(batch, k)
        else:
            hidden = self.adapter.last_hidden_state(self.backbone, batch,
                                                    self.input_embeddings(batch["input_ids"], k))
            latent_states = hidden[:, -n_latent:]
        embed_states = latent_states[:, k:]
        normalize = self.config.normalize if normalize is None else normalize
        return LaMEOutput(
            embeddings=self.embedding_head(embed_states, normalize=normalize),
            reason_states=latent_states[:, :k],
            embed_states=embed_states,
            hidden_states=hidden,
        )

    def _packed_pass(self, batch: dict[str, torch.Tensor], k: int) -> tuple[None, torch.Tensor]:
        """The backbone over a packed batch with ``k`` reason tokens; returns (None, the latent states
        (B, k + M, H)) — a packed batch has no per-item hidden-state matrix."""
        from ..data.packing import latent_index, packed_positions

        ids, vectors = self.latent_block(k)
        rows, columns = latent_index(batch, len(ids))
        rows, columns = rows.to(self.device), columns.to(self.device)
        input_ids = batch["input_ids"]
        if not torch.equal(input_ids[rows, columns], ids.expand(rows.shape[0], -1)):
            raise ValueError(f"every item of a packed batch must end with the latent block of {k} reason tokens: "
                             "build it with collate(), with the same num_reason_tokens as this call")
        token_embeds = self.backbone.get_input_embeddings()(input_ids)
        latent = vectors.to(token_embeds.dtype).expand(rows.shape[0], -1, -1)
        inputs_embeds = token_embeds.index_put((rows, columns), latent)
        position_ids = packed_positions(self.adapter, self.backbone, batch)
        inputs = {key: batch[key] for key in ("pixel_values", "image_grid_thw") if key in batch}
        hidden = self.adapter.run(self.backbone, {"attention_mask": None, **inputs}, inputs_embeds,
                                  position_ids=position_ids).last_hidden_state
        return None, hidden[rows, columns]

    def input_embeddings(self, input_ids: torch.Tensor, num_reason_tokens: int | None = None) -> torch.Tensor:
        """Token embeddings of a batch ending with the latent block (of ``num_reason_tokens`` reason tokens,
        default K), the block replaced by the learned vectors."""
        k = self.check_reason_tokens(num_reason_tokens)
        ids, vectors = self.latent_block(k)
        n_latent = len(ids)
        if not torch.equal(input_ids[:, -n_latent:], ids.expand(input_ids.shape[0], -1)):
            raise ValueError(f"every row of the batch must end with the latent block of {k} reason tokens: build "
                             "batches with collate(), with the same num_reason_tokens as this call")
        token_embeds = self.backbone.get_input_embeddings()(input_ids)
        latent = vectors.to(token_embeds.dtype).expand(input_ids.shape[0], -1, -1)
        return torch.cat([token_embeds[:, :-n_latent], latent], dim=1)

    def latent_block(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The token ids and learned vectors of the latent block with the first ``k`` reason tokens."""
        if k == self.config.num_reason_tokens:
            return self.latent_token_ids, self.latent_embeddings
        K = self.config.num_reason_tokens
        return (torch.cat([self.latent_token_ids[:k], self.latent_token_ids[K:]]),
                torch.cat([self.latent_embeddings[:k], self.latent_embeddings[K:]]))

    def reconstruction_loss(self, reason_states: torch.Tensor, target_texts: list[str]) -> torch.Tensor:
        """Teacher-forced decoder cross-entropy on ``target_texts`` from the K reason states only."""
        if self.decoder_head is None:
            raise ValueError("this model has no decoder head (use_decoder=False or K=0)")
        return self.decoder_head.loss(reason_states, target_texts)

    # -------------------------------------------------------------------------------- public API
    def image_target_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The ``(width, height)`` this model's image processor shrinks a ``width`` x ``height`` image to, or
        None when it does not shrink it: an image can be decoded straight to that size (``lame serve``)."""
        return self.adapter.image_target_size(self.image_processor, width, height)

    @property
    def image_max_pixels(self) -> int | None:
        """The most pixels of one image the model reads (its image processor's limit); None if unknown."""
        return self.adapter.image_max_pixels(self.image_processor)

    def fingerprint(self) -> str:
        """A string that changes when this model's embeddings would (see :mod:`lame.modeling.fingerprint`);
        ``lame encode`` records it so that an index is only ever searched with the model that made it."""
        from .fingerprint import model_fingerprint

        return model_fingerprint(self)

    @property
    def embedding_dim(self) -> int:
        """The dimension of the embeddings :meth:`encode` returns by default (``projection_dim`` or the
        hidden size)."""
        return self.config.projection_dim or self.adapter.hidden_size(self.backbone)

    @property
    def reason_token_choices(self) -> list[int]:
        """The numbers of reason tokens this model embeds with (``num_reason_tokens=``), ascending: its
        config's ``elastic_k``; a fixed-K model: [K]."""
        return self.config.reason_token_choices

    @property
    def dimension_choices(self) -> list[int]:
        """The embedding sizes this model gives (``dimensions=``), descending: its config's
        ``matryoshka_dims``; a model trained without them: [embedding_dim]."""
        return list(self.config.matryoshka_dims or [self.embedding_dim])

    def check_reason_tokens(self, num_reason_tokens: int | None) -> int:
        """``num_reason_tokens``, or K when None; an InvalidInput (one line) when the model was not trained for it."""
        return check_choice(num_reason_tokens, self.reason_token_choices, self.config.num_reason_tokens,
                            "num_reason_tokens", "embeds with {} reason tokens (elastic_k of its config)")

    def check_dimensions(self, dimensions: int | None) -> int:
        """``dimensions``, or the full size when None; an InvalidInput (one line) when the model was not
        trained for it."""
        return check_choice(dimensions, self.dimension_choices, self.embedding_dim, "dimensions",
                            "gives embeddings of {} dimensions (matryoshka_dims of its config)")

    def encode(
        self,
        items: Sequence[ItemLike] | ItemLike,
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress_bar: bool = False,
        on_error: Literal["raise", "skip"] = "raise",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        return_skipped: bool = False,
        role: Role | None = None,
        packing: bool = False,
        num_reason_tokens: int | None = None,
        dimensions: int | None = None,
    ):
        """Embeds items (see :mod:`lame.data.items` for the forms an item can take).

        ``items`` is a list of items, or one item that is not a list. A list is always a list of items:
        ``encode(["caption", img])`` embeds two items (a text and an image); one interleaved item is a
        list INSIDE the list, ``encode([["caption", img]])``, or ``encode([{"parts": ["caption",
        {"image": img}]}])``.

        Returns a float32 ``(n, d)`` numpy array (a ``(d,)`` vector for a single non-list item); a CPU
        torch tensor with ``convert_to_tensor=True`` (or ``convert_to_numpy=False``). ``device`` moves
        the model there first (it stays there). With ``on_error="skip"`` a bad item's row is NaN, a
        warning names every skipped item and ``return_skipped=True`` also returns the list of
        :class:`SkippedItem`. The model's train/eval mode is restored afterwards, also on error.
        ``role="document"`` embeds the items as retrieval targets are embedded in training: the same for
        LaME and the discriminative and sequential models; the explicit-CoT model then generates no
        rationale (its positives are trained without one). :meth:`encode_query` and
        :meth:`encode_document` pass the role for you. ``packing=True`` runs padding-free batches
        (:mod:`lame.data.packing`; the same embeddings, less padding computed; the baselines stay padded).
        ``num_reason_tokens`` (k reason tokens, default K) and ``dimensions`` (the embedding's first d
        values, re-normalised; default the full size) take the values the model was trained for
        (:attr:`reason_token_choices`, :attr:`dimension_choices`); any other is refused.
        """
        check_role(role)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        k, dimensions = self.check_reason_tokens(num_reason_tokens), self.check_dimensions(dimensions)
        if device is not None:
            self.to(device)
        single = not isinstance(items, (list, tuple))
        items = [items] if single else list(items)
        result = torch.full((len(items), dimensions), float("nan"), dtype=torch.float32)
        was_training = self.training
        switch = any(m.training for m in self.modules())  # train()/eval() walk every module: only when needed
        if switch:
            self.eval()
        try:
            skipped = self._encode_into(result, items, batch_size, normalize, show_progress_bar, on_error,
                                        role=role, packing=packing, num_reason_tokens=k)
        finally:
            if switch:
                self.train(was_training)
        if skipped:
            listed = "; ".join(f"item {s.index}: {s.reason}" for s in skipped[:20])
            more = f" (and {len(skipped) - 20} more)" if len(skipped) > 20 else ""
            warnings.warn(f"skipped {len(skipped)} of {len(items)} items: {listed}{more}", stacklevel=2)
        embeddings = result[0] if single else result
        if convert_to_numpy and not convert_to_tensor:
            embeddings = embeddings.numpy()
        return (embeddings, skipped) if return_skipped else embeddings

    def encode_query(self, items: Sequence[ItemLike] | ItemLike, **kwargs):
        """:meth:`encode` with ``role="query"``."""
        return self.encode(items, role="query", **kwargs)

    def encode_document(self, items: Sequence[ItemLike] | ItemLike, **kwargs):
        """:meth:`encode` with ``role="document"``: items embedded as retrieval targets."""
        return self.encode(items, role="document", **kwargs)

    def _encode_into(self, result: torch.Tensor, items: list, batch_size: int, normalize: bool | None,
                     show_progress_bar: bool, on_error: str, role: Role | None,
                     packing: bool, num_reason_tokens: int) -> list[SkippedItem]:
        """Fills ``result``'s rows (the embeddings' first ``result.shape[1]`` values); returns the skipped items."""
        k, dimensions = num_reason_tokens, result.shape[1]
        normalized = self.config.normalize if normalize is None else normalize
        # Featurise a bounded window at a time (one image-processor and one tokenizer call for the window),
        # sorted by length inside it (padded batches); a background thread featurises the next window while
        # the model runs.
        chunk = max(batch_size * 8, 64)
        windows = [range(start, min(start + chunk, len(items))) for start in range(0, len(items), chunk)]

        def featurize_window(indices: range) -> tuple[list[tuple[int, Features]], list[SkippedItem]]:
            ready, bad = [], []
            for index, features in zip(indices, self.featurizer.many(items, indices)):
                if isinstance(features, ItemError):
                    if on_error == "raise":
                        raise features
                    bad.append(SkippedItem(index, features.reason))
                else:
                    ready.append((index, features))
            return ready, bad

        def featurized_windows():
            if len(windows) <= 1:  # nothing to overlap with
                yield from map(featurize_window, windows)
                return
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lame-featurize") as pool:
                pending = pool.submit(featurize_window, windows[0])
                for w in range(1, len(windows) + 1):
                    done = pending.result()
                    if w < len(windows):
                        pending = pool.submit(featurize_window, windows[w])
                    yield done

        skipped: list[SkippedItem] = []
        with inference_context(), tqdm(total=len(items), disable=not show_progress_bar, desc="encode") as bar:
            for ready, bad in featurized_windows():
                skipped += bad
                bar.update(len(bad))
                if not packing:  # packed batches waste nothing on mixed lengths: no need to sort
                    ready.sort(key=lambda pair: -len(pair[1]))
                for b in range(0, len(ready), batch_size):
                    part = ready[b: b + batch_size]
                    batch = self.collate([f for _, f in part], packed=packing, num_reason_tokens=k)
                    out = self(batch, normalize=normalize, role=role, num_reason_tokens=k)
                    result[[i for i, _ in part]] = truncate(out.embeddings.float(), dimensions, normalized).cpu()
                    bar.update(len(part))
        return skipped

    @staticmethod
    def similarity(a, b):
        """Cosine similarity matrix between two sets of embeddings (numpy or torch, (n, d) or (d,))."""
        to_numpy = isinstance(a, np.ndarray)
        a = torch.as_tensor(a, dtype=torch.float32)
        b = torch.as_tensor(b, dtype=torch.float32)
        a = nn.functional.normalize(a.reshape(-1, a.shape[-1]), dim=-1)
        b = nn.functional.normalize(b.reshape(-1, b.shape[-1]), dim=-1)
        scores = a @ b.T
        return scores.numpy() if to_numpy else scores

    def decode_latents(self, items: Sequence[ItemLike], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
        """Runs the decoder head on the K reason states of each item: what the latents say in words."""
        if self.decoder_head is None:
            raise ValueError("this model has no decoder head (use_decoder=False or K=0)")
        texts: list[str] = []
        was_training = self.training
        self.eval()
        try:
            with inference_context():
                for b in range(0, len(items), batch_size):
                    features = self.featurizer.many(items, range(b, min(b + batch_size, len(items))))
                    bad = next((f for f in features if isinstance(f, ItemError)), None)
                    if bad is not None:
                        raise bad
                    states = self(self.collate(features)).decoder_states(self.config.decoder_reads)
                    texts += self.decoder_head.generate(states, max_new_tokens=max_new_tokens)
        finally:
            self.train(was_training)
        return texts


def trained_choices(config: LaMEConfig, embedding_dim: int) -> dict:
    """``elastic_k`` and ``matryoshka_dims`` of a new model's config, filled in ([K]; [the full size]) where
    not given, so that a saved config lists what its model is trained for; a size list that does not start
    with the full size is refused."""
    dims = config.matryoshka_dims or [embedding_dim]
    if dims[0] != embedding_dim:
        raise ConfigError("matryoshka_dims[0]", f"must be the model's embedding size ({embedding_dim}), the size "
                          f"encode gives by default; got {dims[0]}")
    return {"elastic_k": config.reason_token_choices, "matryoshka_dims": dims}


def _model_class(cls: type, variant: str) -> type:
    """The class of ``variant``, or ``cls`` where it is a subclass of it."""
    found = variant_class(variant)
    return cls if issubclass(cls, found) else found


def _is_base_weight(name: str) -> bool:
    """Weights saved by the backbone's or decoder's own ``save_pretrained`` (LoRA adapters are not)."""
    return name.startswith(("backbone.", "decoder_head.decoder.")) and not is_lora_name(name)


def _load_tokenizer(path: Path):
    """The tokenizer of a local folder, with the chat template the folder's PROCESSOR uses.

    A processor's template (``chat_template.jinja``, else the legacy ``chat_template.json``) is the
    multimodal one; the tokenizer's own (``tokenizer_config.json``) may be a text-only template: the
    published Qwen2.5-VL-Instruct folders hold the Qwen2.5 language models' template there, which
    cannot render a message with image parts. The tokenizer's template is used only when the folder
    has no processor template."""
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    template = processor_chat_template(path)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def processor_chat_template(path: Path) -> str | None:
    """The chat template a processor loads from ``path`` (as ``AutoProcessor`` does: the ``.jinja`` file
    first, then ``chat_template.json``), or None."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        template = json.loads((path / "chat_template.json").read_text()).get("chat_template")
        return template if isinstance(template, str) else None
    return None
