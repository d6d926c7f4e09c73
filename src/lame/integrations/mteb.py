"""LaME models in the ``mteb`` package (MTEB, MIEB and the MMEB tasks it carries).

:class:`LaMEEncoder` implements mteb's encoder protocol: ``encode(dataloader, task_metadata=...,
prompt_type=...)`` over batches of ``text`` / ``image`` columns (and ``query`` + ``instruction`` for
instructed queries), ``similarity`` (cosine) and ``mteb_model_meta``::

    import mteb
    from lame.integrations.mteb import LaMEEncoder

    model = LaMEEncoder("my-lame")                       # a saved LaME folder (or a LaMEModel)
    tasks = mteb.get_tasks(tasks=["MSCOCOT2IRetrieval"])
    results = mteb.evaluate(model, tasks, cache=mteb.ResultCache("mteb-results"))

A row becomes the LaME item ``{"images": [...], "text": ..., "instruction": ...}`` (images first, as
LaME orders a dict item). The instruction is the row's own ``instruction`` column when the task has
one, else ``instructions[...]`` looked up, most specific first, by task name, task type and prompt
type (``"query"`` / ``"document"``); none by default.

:func:`mteb_task` turns a LaME JSONL task folder (the ``lame eval`` format, see
:mod:`lame.eval.jsonl`) into an mteb retrieval task, so both harnesses can score the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..extras import require

require("mteb", extra="mteb", feature="lame's mteb integration")

import numpy as np  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.models.abs_encoder import AbsEncoder  # noqa: E402
from mteb.models.model_meta import ModelMeta  # noqa: E402
from PIL import Image  # noqa: E402

from ..errors import InvalidInput  # noqa: E402


class LaMEEncoder(AbsEncoder):
    """A LaME model (a :class:`~lame.LaMEModel` or a saved folder) for ``mteb.evaluate``."""

    def __init__(self, model, revision: str | None = None, *, device: str | None = None,
                 instructions: Mapping[str, str] | None = None, batch_size: int | None = None,
                 name: str | None = None, num_reason_tokens: int | None = None, dimensions: int | None = None,
                 **kwargs: Any):
        """``num_reason_tokens`` and ``dimensions``: what queries and documents are embedded with, values
        the model was trained for (default: its K, its full size)."""
        from ..modeling import LaMEModel

        folder = None
        if isinstance(model, (str, Path)):
            folder = Path(model)
            model = LaMEModel.from_pretrained(folder, device=device)
        elif device is not None:
            model.to(device)
        self.model = model
        self.choice = {"num_reason_tokens": model.check_reason_tokens(num_reason_tokens),
                       "dimensions": model.check_dimensions(dimensions)}
        self.batch_size = batch_size
        self.instructions = dict(instructions or {})
        config = model.config
        name = name or f"lame/{folder.name if folder else 'lame-model'}"
        if (self.choice["num_reason_tokens"], self.choice["dimensions"]) != (config.num_reason_tokens,
                                                                            model.embedding_dim):
            name += "-k{num_reason_tokens}-d{dimensions}".format(**self.choice)  # results cached apart
        self.mteb_model_meta = ModelMeta(
            loader=None, name=name, revision=revision,
            release_date=None, languages=None,
            n_parameters=sum(p.numel() for p in model.parameters()), memory_usage_mb=None,
            max_tokens=config.max_length, embed_dim=self.choice["dimensions"], license=None, open_weights=True,
            public_training_code=None, public_training_data=None, framework=["PyTorch"],
            similarity_fn_name="cosine", use_instructions=bool(self.instructions),
            training_datasets=None, modalities=["text", "image"],
        )

    def instruction_for(self, task_metadata: TaskMetadata, prompt_type) -> str | None:
        keys = [task_metadata.name, f"{task_metadata.name}-{getattr(prompt_type, 'value', prompt_type)}",
                task_metadata.type, getattr(prompt_type, "value", None)]
        for key in (keys[1], keys[0], keys[2], keys[3]):
            if key and key in self.instructions:
                return self.instructions[key]
        return None

    def encode(self, inputs, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
               prompt_type=None, **kwargs: Any) -> np.ndarray:
        default = self.instruction_for(task_metadata, prompt_type)
        items: list = []
        for batch in inputs:
            items += batch_items(batch, default)
        batch_size = self.batch_size or kwargs.get("batch_size") or 32
        role = {"query": "query", "document": "document"}.get(getattr(prompt_type, "value", prompt_type))
        return self.model.encode(items, batch_size=batch_size, role=role,
                                 show_progress_bar=bool(kwargs.get("show_progress_bar", False)), **self.choice)


def batch_items(batch: Mapping[str, Any], instruction: str | None = None) -> list:
    """The LaME items of one mteb batch (columns ``text``, ``image``, ``query``, ``instruction``)."""
    instructions = batch.get("instruction")
    texts = batch.get("query") if instructions is not None and "query" in batch else batch.get("text")
    images = batch.get("image")
    n = len(texts if texts is not None else images if images is not None else [])
    items = []
    for i in range(n):
        text = texts[i] if texts is not None else None
        pictures = images[i] if images is not None else None
        if pictures is not None and not isinstance(pictures, (list, tuple)):
            pictures = [pictures]
        own = instructions[i] if instructions is not None else None
        item: dict[str, Any] = {}
        if pictures:
            item["images"] = list(pictures)
        if isinstance(text, str) and text.strip():
            item["text"] = text
        if own or instruction:
            item["instruction"] = own or instruction
        if set(item) == {"text"}:
            item = item["text"]
        items.append(item)
    return items


# ------------------------------------------------------------------------ JSONL tasks as mteb tasks
def mteb_task(task, name: str | None = None) -> AbsTaskRetrieval:
    """An mteb retrieval task holding the queries, corpus and graded relevance of a LaME task (a
    :class:`~lame.eval.tasks.RetrievalTask` or a JSONL task folder). Per-query ``candidates`` become
    mteb's ``top_ranked`` lists (every query must have them, or none). Items must be text, an image,
    or a dict of ``text`` / ``image`` / ``images`` / ``instruction``; an interleaved item (``parts``
    or a list) has no column form and is refused."""
    import datasets

    from ..eval.jsonl import load_jsonl_task

    if isinstance(task, (str, Path)):
        task = load_jsonl_task(task)
    with_candidates = [q.candidates is not None for q in task.queries]
    if any(with_candidates) and not all(with_candidates):
        raise InvalidInput(f"task {task.name}: either every query has candidates or none has")

    def columns(items: Sequence[Any], where: str) -> tuple[dict[str, list], str]:
        rows = [_columns(item, f"{where} {key}") for key, item in items]
        has_text = any(r[0] for r in rows)
        has_image = any(r[1] for r in rows)
        data: dict[str, list] = {"id": [key for key, _ in items]}
        if has_text:
            data["text"] = [r[0] or "" for r in rows]
        if has_image:
            data["image"] = [r[1] for r in rows]
        if any(r[2] for r in rows):
            data["instruction"] = [r[2] or "" for r in rows]
        return data, ("i" if has_image else "") + ("t" if has_text else "")

    def dataset(data: dict[str, list]) -> "datasets.Dataset":
        features = {k: datasets.Value("string") for k in data if k != "image"}
        if "image" in data:
            features["image"] = datasets.Sequence(datasets.Image())
        return datasets.Dataset.from_dict(data, features=datasets.Features(features))

    query_data, query_side = columns([(q.id, q.item) for q in task.queries], "query")
    doc_data, doc_side = columns(list(task.corpus.items()), "document")
    if "instruction" in doc_data:
        raise InvalidInput(f"task {task.name}: documents with an instruction have no mteb column form")
    split = RetrievalSplitData(
        queries=dataset(query_data), corpus=dataset(doc_data),
        relevant_docs={q.id: {d: int(g) for d, g in q.relevant.items()} for q in task.queries},
        top_ranked={q.id: list(q.candidates) for q in task.queries} if any(with_candidates) else None,
    )
    metadata = TaskMetadata(
        name=name or task.name, description=f"LaME task {task.name}", reference=None,
        dataset={"path": "local", "revision": "local"}, type="Any2AnyRetrieval", category=f"{query_side}2{doc_side}",
        modalities=(["image"] if "i" in query_side + doc_side else []) + (["text"] if "t" in query_side + doc_side else []),
        eval_splits=["test"], eval_langs=["eng-Latn"], main_score="ndcg_at_10", date=None, domains=None,
        task_subtypes=None, license=None, annotations_creators=None, dialect=None, sample_creation=None,
        bibtex_citation="",
    )

    def load_data(self, *args, **kwargs) -> None:
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True

    cls = type(f"LaMETask_{metadata.name}", (AbsTaskRetrieval,), {"metadata": metadata, "load_data": load_data})
    return cls()


def _columns(item: Any, where: str) -> tuple[str | None, list | None, str | None]:
    """(text, images, instruction) of an item, or InvalidInput when it has no column form."""
    if isinstance(item, str):
        return item, None, None
    if isinstance(item, (Path, Image.Image)):
        return None, [_image_cell(item)], None
    if isinstance(item, dict) and not set(item) - {"text", "image", "images", "instruction"}:
        images = ([item["image"]] if item.get("image") is not None else []) + list(item.get("images") or [])
        return item.get("text"), [_image_cell(x) for x in images] or None, item.get("instruction")
    raise InvalidInput(f"{where}: an interleaved item (a list or 'parts') has no mteb column form")


def _image_cell(image: Any) -> Any:
    """A datasets Image cell that decodes to what LaME reads: the file itself, or the PIL image."""
    return {"path": str(image), "bytes": None} if isinstance(image, Path) else image
