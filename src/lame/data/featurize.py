"""Item -> model inputs: chat template, latent tokens, image patches; and the batch collator.

:class:`Featurizer` turns one item (``featurizer(item, index)``) or a window of items
(:meth:`Featurizer.many`: one image-processor call and one tokenizer call for the whole window) into
:class:`Features`. Both give exactly the same features, and a bad item raises, or in ``many``
becomes, its own :class:`ItemError` naming its index, never its neighbours'. :func:`collate` then
left-pads and concatenates, which gives what the upstream processor would give for the batch.

Why not the upstream processor classes: some insist on a torchvision-backed video processor even for
images only (torchvision is not installable beside every torch build). We use the upstream tokenizer,
chat template and image processor and repeat the processor's one remaining job: the image
placeholder token the chat template writes once per image becomes as many copies as the backbone
reads for that image. Which token and how many copies is the backbone family's business, an
:class:`ImageLayout` that the model's adapter gives.

**Images are sized to the budget.** An item longer than ``max_length`` because of its images gets them
downscaled (one factor for all of them, aspect ratios kept) until it fits: with Qwen2-VL's released
processor settings a 1920x1080 photo alone is 2,691 image tokens, more than the default ``max_length``
of 2048, and is read at 1624x924 (1,914 image tokens) instead of being refused. Text is never cut; an item whose text
alone is too long, or whose images cannot shrink enough, is refused with an :class:`ItemError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from .items import Item, ItemError, ItemLike, to_item
from .video import Video


@dataclass(frozen=True)
class ImageLayout:
    """How a backbone family places images (and videos) in its token sequence.

    ``token`` is the placeholder the chat template writes once per image. ``slots(vision)`` takes an
    image-processor output for n images and gives two lists of length n: how many copies of the
    placeholder each image takes, and how many rows of ``pixel_values`` are that image's.

    Videos, for families that read them: ``video_block`` is what the chat template writes for one
    video; ``video(Video)`` gives the backbone's video inputs for it (a dict of tensors:
    ``pixel_values_videos``, ``video_grid_thw``, ...), and ``video_text(inputs, Video)`` the text that
    replaces the block (placeholder copies, and whatever the family writes around them);
    ``video_token`` is the placeholder those copies are.
    """

    token: str
    slots: Callable[[Mapping[str, torch.Tensor]], tuple[list[int], list[int]]]
    video_token: str | None = None
    video_block: str | None = None
    video: Callable[[Video], dict] | None = None
    video_text: Callable[[dict, Video], str] | None = None


VIDEO_INPUTS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")  # per item, concatenated by collate


@dataclass
class Features:
    """Model inputs of one item (no batch dimension)."""

    input_ids: torch.Tensor  # (L,)
    pixel_values: torch.Tensor | None  # the item's rows of the image processor's pixel_values
    image_grid_thw: torch.Tensor | None  # (images, 3), for families whose processor gives a grid
    pixel_values_videos: torch.Tensor | None = None  # the item's videos' patch rows
    video_grid_thw: torch.Tensor | None = None  # (videos, 3)
    second_per_grid_ts: torch.Tensor | None = None  # (videos,): seconds per temporal patch (Qwen2.5-VL)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class _Staged:
    index: int
    item: Item
    text: str
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None


class Featurizer:
    """Turns items into :class:`Features`: query inside the chat template, then the latent block."""

    def __init__(self, tokenizer, image_processor, latent_tokens: Sequence[str], max_length: int,
                 layout: ImageLayout):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.latent_suffix = "".join(latent_tokens)
        self.max_length = max_length
        self.layout = layout
        self.image_token_id = tokenizer.convert_tokens_to_ids(layout.token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(layout.video_token) if layout.video_token else None
        # Control tokens a user's text must not smuggle in: they would break image slots or the latent block.
        self.reserved = sorted({*latent_tokens, layout.token, *tokenizer.all_special_tokens,
                                *(t for t in tokenizer.get_added_vocab() if t.startswith("<|"))})
        self._reserved_pattern = re.compile("|".join(re.escape(t) for t in self.reserved))
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token")

    def prompt(self, item: Item) -> str:
        """The chat-templated text of an item, one image (video) placeholder per image (video), latent
        block last."""
        content = []
        if item.instruction:
            content.append({"type": "text", "text": item.instruction + "\n"})
        for part in item.parts:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            else:
                content.append({"type": "video" if isinstance(part, Video) else "image"})
        messages = [{"role": "user", "content": content}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + self.latent_suffix

    def reserved_in(self, text: str) -> list[str]:
        """The reserved control tokens ``text`` contains."""
        if not self._reserved_pattern.search(text):
            return []
        return [t for t in self.reserved if t in text]

    def __call__(self, obj: ItemLike, index: int | None = None) -> Features:
        """The features of one item; raises :class:`ItemError` (naming ``index``) for a bad one.

        Whatever fails while this one item is templated, tokenised or image-processed is that item's
        error: an exception of the tokenizer or image processor becomes an ItemError naming it."""
        try:
            return self._features(obj, index)
        except ItemError:
            raise
        except Exception as exc:  # noqa: BLE001  (one item alone: its failure is its own)
            raise ItemError(index, f"could not be featurised ({type(exc).__name__}: {exc})") from exc

    def length(self, obj: ItemLike) -> int:
        """The item's sequence length (template, text, image tokens and latent block), long or not (its
        images downscaled to fit ``max_length`` where they can be, as :meth:`__call__` does); raises
        :class:`ItemError` for any other problem."""
        try:
            return len(self._features(obj, None, check_length=False))
        except ItemError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ItemError(None, f"could not be featurised ({type(exc).__name__}: {exc})") from exc

    def _features(self, obj: ItemLike, index: int | None, check_length: bool = True) -> Features:
        item = to_item(obj, index)
        for part in (item.instruction, *item.parts):
            if isinstance(part, str):
                found = self.reserved_in(part)
                if found:
                    raise ItemError(index, f"text contains reserved control token(s) {found}")
        text = self.prompt(item)
        features = self._encode(text, item.images, item.videos, index)
        shrunk = False
        if len(features) > self.max_length and (item.images or item.videos):
            features, shrunk = self._fit(text, item.images, item.videos, index, features)
        if check_length and len(features) > self.max_length:
            reduced = "; its images are already as small as the image processor makes them" if shrunk else ""
            raise ItemError(
                index,
                f"too long: {len(features)} tokens (text and image patches, with the latent block) "
                f"> max_length {self.max_length}{reduced}",
            )
        return features

    def _encode(self, text: str, images: list, videos: list, index: int | None) -> Features:
        """Image processor, video inputs (when there are images, videos) and tokenizer for one prompt."""
        pixel_values = grid = None
        if images:
            try:
                vision = self.image_processor(images=images, return_tensors="pt")
            except ValueError as exc:  # e.g. an extreme aspect ratio
                raise ItemError(index, f"image could not be processed ({exc})") from exc
            pixel_values, grid = vision["pixel_values"], vision.get("image_grid_thw")
            text = self.expand_image_tokens(text, vision, index)
        video_inputs = {}
        if videos:
            text, video_inputs = self._add_videos(text, videos, index)
        input_ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        return Features(input_ids, pixel_values, grid, **video_inputs)

    def _add_videos(self, text: str, videos: list[Video], index: int | None) -> tuple[str, dict]:
        """``text`` with each video's block replaced by the family's video text, and the videos' inputs."""
        layout = self.layout
        if layout.video is None:
            raise ItemError(index, "this backbone family reads no video")
        pieces = text.split(layout.video_block)
        if len(pieces) - 1 != len(videos):
            raise ItemError(index, f"chat template produced {len(pieces) - 1} video slots for {len(videos)} videos")
        inputs = []
        for video in videos:
            try:
                inputs.append(layout.video(video))
            except ValueError as exc:
                raise ItemError(index, f"video could not be processed ({exc})") from exc
        text = pieces[0] + "".join(layout.video_text(one, video) + piece
                                   for one, video, piece in zip(inputs, videos, pieces[1:]))
        merged = {key: torch.cat([one[key] for one in inputs]) for key in VIDEO_INPUTS if key in inputs[0]}
        return text, merged

    def _fit(self, text: str, images: list, videos: list, index: int | None,
             features: Features) -> tuple[Features, bool]:
        """Features of the prompt with its images and video frames downscaled (aspect ratios kept, all by
        one factor) until the item fits ``max_length``, when they are what makes it too long;
        ``(features, shrunk)``.

        The image processor's own size rules still apply (Qwen: a multiple of patch x merge per side, at
        least ``min_pixels``), so this converges in a few steps or stops where images cannot shrink."""
        visual = self._visual_tokens(features)
        budget = self.max_length - (len(features) - visual)
        if budget <= 0 or not visual:
            return features, False
        # scale from the size the processor read (its grid), not the file's: a frame the processor already
        # shrank to its own limit only gets fewer tokens once it is smaller than that limit
        image_sizes = self._read_sizes(features.image_grid_thw, [im.size for im in images])
        video_sizes = self._read_sizes(features.video_grid_thw, [v.size for v in videos])
        scale = 1.0
        for _ in range(8):
            scale *= 0.98 * (budget / visual) ** 0.5

            def size(width: int, height: int) -> tuple[int, int]:
                return max(1, round(width * scale)), max(1, round(height * scale))

            smaller = [im.resize(size(*read), Image.Resampling.BICUBIC) for im, read in zip(images, image_sizes)]
            shorter = [video.resized(*size(*read)) for video, read in zip(videos, video_sizes)]
            fitted = self._encode(text, smaller, shorter, index)
            now = self._visual_tokens(fitted)
            if len(fitted) <= self.max_length or now >= visual:  # fits, or the images cannot shrink further
                return fitted, True
            visual = now
        return fitted, True

    def _read_sizes(self, grid: torch.Tensor | None, sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(width, height) the processor read each image (video) at: its patch grid when there is one."""
        patch = getattr(self.image_processor, "patch_size", None)
        if grid is None or patch is None or len(grid) != len(sizes):
            return sizes
        return [(int(w) * patch, int(h) * patch) for _, h, w in grid.tolist()]

    def _visual_tokens(self, features: Features) -> int:
        ids = features.input_ids
        count = int((ids == self.image_token_id).sum())
        return count + (int((ids == self.video_token_id).sum()) if self.video_token_id is not None else 0)

    def many(self, items: Sequence[ItemLike], indices: Sequence[int] | None = None) -> list[Features | ItemError]:
        """``self(items[i], index=i)`` for each ``i`` in ``indices`` (default: every item): its
        Features, or the ItemError it raises, in order.

        The image processor and the tokenizer are called once for the whole window instead of once
        per item (their per-call overhead costs more than the work on small items). An item this
        batched path is not sure about (text holding reserved tokens, too long, a failed batched
        call) goes through the single-item path, so results and errors are exactly its own: whatever
        one item does, the others get the features they would get alone, and no exception leaves
        this method for an item's sake.
        """
        indices = range(len(items)) if indices is None else indices
        results: dict[int, Features | ItemError] = {}
        staged: list[_Staged] = []
        for index in indices:
            try:
                item = to_item(items[index], index)
            except ItemError as exc:
                results[index] = exc
                continue
            if item.videos or any(isinstance(p, str) and self._reserved_pattern.search(p)
                                  for p in (item.instruction, *item.parts)):
                results[index] = self._alone(items, index)  # videos are featurised one item at a time
                continue
            try:
                staged.append(_Staged(index, item, self.prompt(item)))
            except Exception:  # noqa: BLE001  (the single path names the error)
                results[index] = self._alone(items, index)
        staged = self._add_images(items, staged, results)
        if staged:
            try:
                token_ids = self.tokenizer([s.text for s in staged], add_special_tokens=False)["input_ids"]
            except Exception:  # noqa: BLE001  (each item on its own, for its own result or error)
                token_ids = [None] * len(staged)
            for s, ids in zip(staged, token_ids):
                if ids is None or len(ids) > self.max_length:
                    results[s.index] = self._alone(items, s.index)  # the single path's own error
                else:
                    results[s.index] = Features(torch.tensor(ids, dtype=torch.long), s.pixel_values, s.image_grid_thw)
        return [results[index] for index in indices]

    def _add_images(self, items, staged: list[_Staged], results: dict) -> list[_Staged]:
        """One image-processor call for every staged item's images; the items keep their own rows and
        get their placeholders expanded. Items the batched call cannot serve go on their own."""
        with_images = [s for s in staged if s.item.images]
        if not with_images:
            return staged
        try:
            vision = self.image_processor(images=[im for s in with_images for im in s.item.images], return_tensors="pt")
            counts, rows = self.layout.slots(vision)
        except Exception:  # noqa: BLE001  (e.g. one refused image: each item on its own, for its own error)
            for s in with_images:
                results[s.index] = self._alone(items, s.index)
            return [s for s in staged if not s.item.images]
        grids = vision.get("image_grid_thw")
        kept, image, row = [], 0, 0
        for s in staged:
            n = len(s.item.images)
            if n:
                item_rows = sum(rows[image: image + n])
                s.pixel_values = vision["pixel_values"][row: row + item_rows]
                s.image_grid_thw = None if grids is None else grids[image: image + n]
                try:
                    s.text = self._expand(s.text, counts[image: image + n], s.index)
                except ItemError:
                    results[s.index] = self._alone(items, s.index)
                    s = None
                image, row = image + n, row + item_rows
            if s is not None:
                kept.append(s)
        return kept

    def _alone(self, items, index: int) -> Features | ItemError:
        try:
            return self(items[index], index=index)
        except ItemError as exc:
            return exc

    def expand_image_tokens(self, text: str, vision: Mapping[str, torch.Tensor], index: int | None = None) -> str:
        """``text`` with each image placeholder repeated as many times as the backbone reads that image
        (``vision``: the image processor's output for the text's images, in order)."""
        counts, _ = self.layout.slots(vision)
        return self._expand(text, counts, index)

    def _expand(self, text: str, counts: list[int], index: int | None) -> str:
        token = self.layout.token
        pieces = text.split(token)
        if len(pieces) - 1 != len(counts):
            raise ItemError(index, f"chat template produced {len(pieces) - 1} image slots for {len(counts)} images")
        return pieces[0] + "".join(token * count + piece for count, piece in zip(counts, pieces[1:]))


def collate(features: list[Features], pad_token_id: int, image_token_id: int,
            video_token_id: int | None = None) -> dict[str, torch.Tensor]:
    """Left-pad a list of :class:`Features` into one batch for the backbone."""
    length = max(len(f) for f in features)
    input_ids = torch.full((len(features), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), length), dtype=torch.long)
    for row, f in enumerate(features):
        input_ids[row, length - len(f):] = f.input_ids
        attention_mask[row, length - len(f):] = 1
    # modality of each position, as the processors give it: text 0, image 1, video 2
    mm_token_type_ids = ((input_ids == image_token_id) & attention_mask.bool()).int()
    if video_token_id is not None:
        mm_token_type_ids[(input_ids == video_token_id) & attention_mask.bool()] = 2
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": mm_token_type_ids}
    with_images = [f for f in features if f.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([f.pixel_values for f in with_images])
        if all(f.image_grid_thw is not None for f in with_images):
            batch["image_grid_thw"] = torch.cat([f.image_grid_thw for f in with_images])
    with_videos = [f for f in features if f.pixel_values_videos is not None]
    for key in VIDEO_INPUTS if with_videos else ():
        if all(getattr(f, key) is not None for f in with_videos):
            batch[key] = torch.cat([getattr(f, key) for f in with_videos])
    return batch
