"""A saved LaME folder as a sentence-transformers model.

``LaMEModel.save_pretrained`` writes ``modules.json`` naming :class:`LaMEModule` (this class) and
``config_sentence_transformers.json``, so that, with ``lame`` installed::

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer("my-lame", trust_remote_code=True)
    q = st.encode(["a handwritten seven"])
    d = st.encode([Image.open("digit.png"), {"text": "which digit?", "image": "digit.png"}])
    st.similarity(q, d)

returns the embeddings :meth:`lame.LaMEModel.encode` returns; ``st.encode_query`` and
``st.encode_document`` embed as :meth:`lame.LaMEModel.encode_query` and ``encode_document`` do (they
pass ``task="query"`` / ``"document"``, which this module reads as LaME's ``role``).

An elastic model (:mod:`lame.modeling.elastic`): ``st.encode(..., num_reason_tokens=k)`` embeds with k
reason tokens (one the model was trained for), and sentence-transformers' own ``truncate_dim`` (of
``SentenceTransformer(..., truncate_dim=d)`` or ``encode``) cuts the embeddings to d values;
sentence-transformers neither re-normalises them (``normalize_embeddings=True`` does, which gives
``LaMEModel.encode(..., dimensions=d)``; its cosine ``similarity`` is the same either way) nor checks d
against the sizes the model was trained for (:attr:`LaMEModule.dimension_choices` lists them).
sentence-transformers 6 imports a module class from outside its own package only with
``trust_remote_code=True``, also for a local folder and a class from an installed package; the code it
runs is this file of the installed ``lame``, nothing from the model folder.

Inputs, in sentence-transformers' forms: a string (text; a string that is an existing image file path
or a ``data:image/...`` URI is an image, as sentence-transformers reads it), a PIL image, a 3-D numpy
array or tensor (an image, HWC or CHW), a dict ``{"text": ..., "image": ...}`` (either may be a list),
or a chat ``[{"role": "user", "content": [{"type": "text", ...}, {"type": "image", "image": ...}]}]``
(read by :mod:`lame.data.messages`, as ``lame serve`` reads ``messages``: parts in reading order,
``system`` text joined with newlines into the instruction). ``prompt=`` (or ``prompt_name=``) becomes
the item's instruction, which LaME places before the query inside the chat template. http(s) image
URLs are not fetched: load the image first.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..extras import require

require("sentence_transformers", extra="st", feature="lame's sentence-transformers module")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sentence_transformers.base.modality import infer_modality, is_message_dict  # noqa: E402
from sentence_transformers.base.modules import InputModule  # noqa: E402

from ..data.messages import conversation_item  # noqa: E402
from ..errors import InvalidInput  # noqa: E402
from ..modeling.roles import ROLES  # noqa: E402

MODALITIES = ["text", "image", ("image", "text"), "message"]


class LaMEModule(InputModule):
    """The whole LaME model as sentence-transformers' one input module: ``preprocess`` featurises
    items into LaME's batch (chat template, images, reason tokens, [EMBED]); ``forward`` runs the
    model and sets ``sentence_embedding``."""

    save_in_root = True
    # encode_query / encode_document pass task="query" / "document"; encode(..., num_reason_tokens=k) the k
    forward_kwargs = {"task", "num_reason_tokens"}

    def __init__(self, model):
        super().__init__()
        self.model = model

    # --------------------------------------------------------------------------------- the model
    @property
    def modalities(self) -> list:
        return list(MODALITIES)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.model.config.max_length

    def get_embedding_dimension(self) -> int:
        return self.model.embedding_dim

    get_sentence_embedding_dimension = get_embedding_dimension

    @property
    def dimension_choices(self) -> list[int]:
        """The sizes ``truncate_dim`` can take with the model's quality (its config's ``matryoshka_dims``)."""
        return self.model.dimension_choices

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, num_reason_tokens: int | None = None,
                   **kwargs) -> dict[str, torch.Tensor]:
        items = [to_lame_item(x, prompt or None) for x in inputs]
        return self.model.collate(self.model.featurize(items), num_reason_tokens=num_reason_tokens)

    def forward(self, features: dict[str, torch.Tensor], task: str | None = None, num_reason_tokens: int | None = None,
                **kwargs) -> dict[str, torch.Tensor]:
        """``task`` "query" or "document" is the role LaME embeds the batch as (other tasks: no role);
        ``num_reason_tokens`` the k it was preprocessed with."""
        batch = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
        role = task if task in ROLES else None
        out = self.model(batch, role=role, num_reason_tokens=num_reason_tokens)
        features["sentence_embedding"] = out.embeddings.float()
        return features

    # ---------------------------------------------------------------------------- saving, loading
    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.model.save_pretrained(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             model_kwargs: dict[str, Any] | None = None, **kwargs) -> "LaMEModule":
        from ..modeling import LaMEModel

        directory = os.path.join(model_name_or_path, subfolder)
        if not os.path.isdir(directory):  # a Hub repository: sentence-transformers fetches the files
            directory = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token,
                                          cache_folder=cache_folder, revision=revision,
                                          local_files_only=local_files_only)
        dtype = (model_kwargs or {}).get("dtype") or (model_kwargs or {}).get("torch_dtype")
        if isinstance(dtype, str):
            dtype = None if dtype == "auto" else getattr(torch, dtype)
        return cls(LaMEModel.from_pretrained(directory, dtype=dtype))


# ----------------------------------------------------------------------------------- input forms
def to_lame_item(value: Any, instruction: str | None = None) -> Any:
    """A sentence-transformers input as a LaME item (see the module docstring for the forms)."""
    if isinstance(value, (list, dict)) and _is_messages(value):
        item = conversation_item(value if isinstance(value, list) else [value], lambda source, _: _image(source))
    elif isinstance(value, dict):
        unknown = set(value) - {"text", "image"}
        if unknown:
            raise InvalidInput(f"unsupported input keys {sorted(unknown)}: LaME reads 'text' and 'image'")
        item = {}
        if value.get("text") is not None:
            text = value["text"]
            item["text"] = text if isinstance(text, str) else " ".join(text)
        images = value.get("image")
        if images is not None:
            images = [_image(x) for x in (images if isinstance(images, (list, tuple)) else [images])]
            item["image" if len(images) == 1 else "images"] = images[0] if len(images) == 1 else images
    elif isinstance(value, str):
        item = _image(value) if infer_modality(value, MODALITIES) == "image" else value
    elif isinstance(value, (Image.Image, np.ndarray, torch.Tensor)):
        item = _image(value)
    else:
        raise InvalidInput(f"unsupported input of type {type(value).__name__}")
    if instruction:
        item = _with_instruction(item, instruction)
    return item


def _with_instruction(item: Any, instruction: str) -> dict:
    if isinstance(item, dict):
        return {**item, "instruction": item.get("instruction") or instruction}
    if isinstance(item, str):
        return {"text": item, "instruction": instruction}
    return {"image": item, "instruction": instruction}


def _is_messages(value: Any) -> bool:
    return is_message_dict(value) or (isinstance(value, list) and bool(value) and is_message_dict(value[0]))


def _image(value: Any) -> Image.Image | Path:
    if isinstance(value, (Image.Image, Path)):
        return value
    if isinstance(value, str):
        if value.startswith("data:image/"):
            try:
                return Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1], validate=True)))
            except Exception as exc:
                raise InvalidInput(f"an image data URI could not be decoded ({exc})") from exc
        if value.startswith(("http://", "https://")):
            raise InvalidInput(f"image URLs are not fetched ({value[:80]}): load the image and pass it instead")
        return Path(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.ndim == 3:
        array = value if value.shape[-1] in (1, 3, 4) else np.moveaxis(value, 0, -1)
        if array.dtype != np.uint8:
            array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    raise InvalidInput(f"unsupported image of type {type(value).__name__}")
