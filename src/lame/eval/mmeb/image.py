"""MMEB-V2 image tasks (36): classification, VQA, retrieval and grounding, from MMEB_Test_Instruct."""

from __future__ import annotations

from pathlib import Path

from ...errors import InvalidInput
from .common import MMEBTask, _as_list, _clean, _Context, _Entry, _require, _where, make_item
from .layout import image_root

IMAGE_TASKS = {
    "classification": ["ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365",
                       "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"],
    "vqa": ["OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W", "ScienceQA", "VizWiz",
            "GQA", "TextVQA"],
    "retrieval": ["VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS",
                  "WebQA", "FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"],
    "grounding": ["MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"],
}


def parse_image(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """ziyjiang/MMEB_Test_Instruct (also TIGER-Lab/MMEB-eval): qry_inst?, qry_text, qry_img_path,
    tgt_inst?, tgt_text[], tgt_img_path[] with the positive first; paths relative to image-tasks/MMEB
    (or to image-tasks/ itself in the older layout where mmeb_v1.tar.gz's MMEB/* was moved up).
    Candidates carry ``tgt_inst`` only with candidate_instruction="upstream"."""
    root = image_root(ctx.root)
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["qry_text", "tgt_text"], where)
        q_images = [ctx.images.file(Path(p), root, where)
                    for p in _as_list(row.get("qry_img_path")) if p]
        query = make_item(_clean(row.get("qry_text")), q_images, _clean(row.get("qry_inst")) or None)
        if query is None:
            raise InvalidInput(f"{where}: empty query (no text and no image)")
        texts, paths = _as_list(row.get("tgt_text")), _as_list(row.get("tgt_img_path"))
        if paths and texts and len(paths) != len(texts):
            raise InvalidInput(f"{where}: tgt_text has {len(texts)} entries but tgt_img_path {len(paths)}")
        target = (_clean(row.get("tgt_inst")) or None) if ctx.candidate_instruction == "upstream" else None
        candidates = []
        for k in range(max(len(texts), len(paths))):
            text = _clean(texts[k]) if k < len(texts) else ""
            path = paths[k] if k < len(paths) else ""
            cand = make_item(text, [ctx.images.file(Path(path), root, where)] if path else [], target)
            if cand is None:
                raise InvalidInput(f"{where}: target {k} is empty (no text and no image)")
            candidates.append(cand)
        if not candidates:
            raise InvalidInput(f"{where}: no targets")
        entries.append(_Entry(f"q{i}", query, candidates, [0]))
    return entries
