"""Item -> model inputs: chat template, latent tokens, image patches; and the batch collator.

Each item is featurised on its own, so a bad item is isolated (it raises :class:`ItemError` with
its index) and featurisation can run in DataLoader workers; :func:`collate` then left-pads and
concatenates, which gives exactly what the upstream processor would give for the batch.

Why not the upstream ``Qwen2VLProcessor``: it insists on a torchvision-backed video processor even
for images only (torchvision is not installable beside every torch build), and it works on whole
batches. We use the upstream tokenizer, chat template and image processor classes and repeat the
processor's one remaining job: each ``<|image_pad|>`` becomes ``grid_t*grid_h*grid_w/merge**2``
copies, as every supported family's ``replace_image_token`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .items import Item, ItemError, ItemLike, to_item

IMAGE_TOKEN = "<|image_pad|>"


@dataclass
class Features:
    """Model inputs of one item (no batch dimension)."""

    input_ids: torch.Tensor  # (L,)
    pixel_values: torch.Tensor | None  # (patches, patch_dim)
    image_grid_thw: torch.Tensor | None  # (images, 3)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


class Featurizer:
    """Turns items into :class:`Features`: query inside the chat template, then the latent block."""

    def __init__(self, tokenizer, image_processor, latent_tokens: list[str], max_length: int):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.latent_suffix = "".join(latent_tokens)
        self.max_length = max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        # Control tokens a user's text must not smuggle in: they would break image slots or the latent block.
        self.reserved = sorted({*latent_tokens, *tokenizer.all_special_tokens,
                                *(t for t in tokenizer.get_added_vocab() if t.startswith("<|"))})
        self.merge_size = image_processor.merge_size
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token")

    def prompt(self, item: Item) -> str:
        """The chat-templated text of an item, one ``<|image_pad|>`` per image, latent block last."""
        content = []
        if item.instruction:
            content.append({"type": "text", "text": item.instruction + "\n"})
        for part in item.parts:
            content.append({"type": "text", "text": part} if isinstance(part, str) else {"type": "image"})
        messages = [{"role": "user", "content": content}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + self.latent_suffix

    def __call__(self, obj: ItemLike, index: int | None = None) -> Features:
        item = to_item(obj, index)
        for part in (item.instruction, *item.parts):
            if isinstance(part, str) and "<|" in part:
                found = [t for t in self.reserved if t in part]
                if found:
                    raise ItemError(index, f"text contains reserved control token(s) {found}")
        text = self.prompt(item)
        pixel_values = grid = None
        if item.images:
            try:
                vision = self.image_processor(images=item.images, return_tensors="pt")
            except ValueError as exc:  # e.g. an extreme aspect ratio
                raise ItemError(index, f"image could not be processed ({exc})") from exc
            pixel_values, grid = vision["pixel_values"], vision["image_grid_thw"]
            text = self._expand_image_tokens(text, grid, index)
        input_ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if input_ids.shape[0] > self.max_length:
            raise ItemError(
                index,
                f"too long: {input_ids.shape[0]} tokens (text and image patches, with the latent block) "
                f"> max_length {self.max_length}",
            )
        return Features(input_ids, pixel_values, grid)

    def _expand_image_tokens(self, text: str, grid: torch.Tensor, index: int | None) -> str:
        pieces = text.split(IMAGE_TOKEN)
        if len(pieces) - 1 != grid.shape[0]:
            raise ItemError(index, f"chat template produced {len(pieces) - 1} image slots for {grid.shape[0]} images")
        counts = (grid.prod(-1) // self.merge_size**2).tolist()
        out = [pieces[0]]
        for count, piece in zip(counts, pieces[1:]):
            out.append(IMAGE_TOKEN * count + piece)
        return "".join(out)


def collate(features: list[Features], pad_token_id: int, image_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a list of :class:`Features` into one batch for the backbone."""
    length = max(len(f) for f in features)
    input_ids = torch.full((len(features), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), length), dtype=torch.long)
    for row, f in enumerate(features):
        input_ids[row, length - len(f):] = f.input_ids
        attention_mask[row, length - len(f):] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": ((input_ids == image_token_id) & attention_mask.bool()).int(),
    }
    with_images = [f for f in features if f.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([f.pixel_values for f in with_images])
        batch["image_grid_thw"] = torch.cat([f.image_grid_thw for f in with_images])
    return batch
