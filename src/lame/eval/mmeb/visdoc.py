"""MMEB-V2 visual-document tasks (24): ViDoRe v1/v2, VisRAG and out-of-domain sets, in the BEIR layout."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ...errors import InvalidInput, MissingPath
from ..tasks import Query, RetrievalTask
from .common import MMEBTask, _Context, make_item
from .files import read_records, row_where
from .layout import page_dirs

VISDOC_PROMPT = "Find a document image that matches the given query:"
VISDOC_TARGET = "Understand the content of the provided document image."  # VLM2Vec's TASK_INST_TGT

# name: (subcategory, parser, Hugging Face dataset (its name is also a folder name under
#        visdoc-tasks/data), page-image folder, split); data folders besides the task's and the dataset's
#        names are in _OTHER_NAMES
VISDOC_TASKS = {
    "ViDoRe_arxivqa": ("vidore-v1", "vidore", "vidore/arxivqa_test_subsampled_beir", "ViDoRe_arxivqa", "test"),
    "ViDoRe_docvqa": ("vidore-v1", "vidore", "vidore/docvqa_test_subsampled_beir", "ViDoRe_docvqa", "test"),
    "ViDoRe_infovqa": ("vidore-v1", "vidore", "vidore/infovqa_test_subsampled_beir", "ViDoRe_infovqa", "test"),
    "ViDoRe_tabfquad": ("vidore-v1", "vidore", "vidore/tabfquad_test_subsampled_beir", "ViDoRe_tabfquad", "test"),
    "ViDoRe_tatdqa": ("vidore-v1", "vidore", "vidore/tatdqa_test_beir", "ViDoRe_tatdqa", "test"),
    "ViDoRe_shiftproject": ("vidore-v1", "vidore", "vidore/shiftproject_test_beir", "ViDoRe_shiftproject", "test"),
    "ViDoRe_syntheticDocQA_artificial_intelligence": (
        "vidore-v1", "vidore", "syntheticDocQA_artificial_intelligence_test_beir",
        "ViDoRe_syntheticDocQA_artificial_intelligence", "test"),
    "ViDoRe_syntheticDocQA_energy": ("vidore-v1", "vidore", "vidore/syntheticDocQA_energy_test_beir",
                                     "ViDoRe_syntheticDocQA_energy", "test"),
    "ViDoRe_syntheticDocQA_government_reports": (
        "vidore-v1", "vidore", "syntheticDocQA_government_reports_test_beir",
        "ViDoRe_syntheticDocQA_government_reports", "test"),
    "ViDoRe_syntheticDocQA_healthcare_industry": (
        "vidore-v1", "vidore", "syntheticDocQA_healthcare_industry_test_beir",
        "ViDoRe_syntheticDocQA_healthcare_industry", "test"),
    "ViDoRe_esg_reports_human_labeled_v2": ("vidore-v2", "vidore", "vidore/esg_reports_human_labeled_v2",
                                            "esg_reports_human_labeled_v2", "test"),
    "ViDoRe_biomedical_lectures_v2_multilingual": ("vidore-v2", "vidore", "vidore/biomedical_lectures_v2",
                                                   "biomedical_lectures_v2_multilingual", "test"),
    "ViDoRe_economics_reports_v2_multilingual": ("vidore-v2", "vidore", "vidore/economics_reports_v2",
                                                 "economics_reports_v2_multilingual", "test"),
    "ViDoRe_esg_reports_v2_multilingual": ("vidore-v2", "vidore", "vidore/esg_reports_v2",
                                           "esg_reports_v2_multilingual", "test"),
    "VisRAG_ArxivQA": ("visrag", "visrag", "openbmb/VisRAG-Ret-Test-ArxivQA", "VisRAG_ArxivQA", "train"),
    "VisRAG_ChartQA": ("visrag", "visrag", "openbmb/VisRAG-Ret-Test-ChartQA", "VisRAG_ChartQA", "train"),
    "VisRAG_MP-DocVQA": ("visrag", "visrag", "openbmb/VisRAG-Ret-Test-MP-DocVQA", "VisRAG_MP-DocVQA", "train"),
    "VisRAG_SlideVQA": ("visrag", "visrag", "openbmb/VisRAG-Ret-Test-SlideVQA", "VisRAG_SlideVQA", "train"),
    "VisRAG_InfoVQA": ("visrag", "visrag", "openbmb/VisRAG-Ret-Test-InfoVQA", "VisRAG_InfoVQA", "train"),
    "VisRAG_PlotQA": ("visrag", "visrag", "openbmb/VisRAG-Ret-Test-PlotQA", "VisRAG_PlotQA", "train"),
    "ViDoSeek-page": ("ood", "vidore", "VLM2Vec/ViDoSeek-page-fixed", "ViDoSeek-page", "test"),
    "ViDoSeek-doc": ("ood", "vidore", "VLM2Vec/ViDoSeek", "ViDoSeek-doc", "test"),
    "MMLongBench-page": ("ood", "vidore", "VLM2Vec/MMLongBench-page-fixed", "MMLongBench-page", "test"),
    "MMLongBench-doc": ("ood", "vidore", "VLM2Vec/MMLongBench-doc", "MMLongBench-doc", "test"),
}


# older local names: VLM2Vec's dataset_hflocal_path.py reads MMLongBench-page from visdoc-tasks/data/MMLongBench
_OTHER_NAMES = {"MMLongBench-page": ("MMLongBench",)}


def _visrag_image_name(corpus_id: str) -> str:
    """VLM2Vec's page-image file name for VisRAG (long ids are shortened, made unique by a hash)."""
    base, ext = Path(corpus_id).stem, Path(corpus_id).suffix
    if not ext:
        base, ext = corpus_id, ""
    return f"{base[:50]}_{hashlib.md5(corpus_id.encode('utf-8')).hexdigest()[:8]}{ext}"


def _field(row: dict, names: tuple[str, ...], where: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise InvalidInput(f"{where}: missing field {names[0]!r}")


def load_beir_qrels(rows: list[dict], what: str) -> dict[str, dict[str, float]]:
    """query id -> {doc id: grade} from rows with query-id/query_id, corpus-id/corpus_id, score; only
    grades > 0 are kept, the highest one when a pair repeats."""
    qrels: dict[str, dict[str, float]] = {}
    for i, row in enumerate(rows):
        where = f"{what}, qrels {row_where(row, i)}"
        qid = str(_field(row, ("query-id", "query_id"), where))
        did = str(_field(row, ("corpus-id", "corpus_id"), where))
        score = float(row.get("score", 1))
        if score > 0:
            docs = qrels.setdefault(qid, {})
            docs[did] = max(docs.get(did, 0.0), score)
    return qrels


def load_visdoc(spec: MMEBTask, data_dir: Path, ctx: _Context, num_samples: int | None = None) -> RetrievalTask:
    """BEIR layout: queries (query-id, query), corpus (corpus-id, image), qrels (query-id, corpus-id,
    score). ``num_samples``: only the first that many queries of the queries file."""
    split = spec.params["split"]
    what = f"MMEB-V2 task {spec.name}"
    qrels = load_beir_qrels(read_records(data_dir / "qrels", split=split), what)
    image_dirs = page_dirs(ctx.root, spec)
    target = ctx.target(spec)
    corpus: dict[str, Any] = {}
    for i, row in enumerate(read_records(data_dir / "corpus", split=split)):
        where = f"{what}, corpus {row_where(row, i)}"
        did = str(_field(row, ("corpus-id", "corpus_id"), where))
        name = _visrag_image_name(did) if spec.parser == "visrag" else f"{did}.png"
        page = next((d / name for d in image_dirs if (d / name).is_file()), None)
        if page is None:
            page = ctx.images.path(row.get("image"), Path(row["_source"]).parent, where)
        if page is None:
            raise MissingPath(f"{where}: no page image {name} in {image_dirs[0]} and none in the "
                              "corpus file")
        corpus[did] = make_item("", [page], target)
    queries = []
    query_rows = read_records(data_dir / "queries", split=split)
    for i, row in enumerate(query_rows[:num_samples] if num_samples else query_rows):
        where = f"{what}, query {row_where(row, i)}"
        qid = str(_field(row, ("query-id", "query_id"), where))
        if qid not in qrels:  # no relevant page: nothing to score (VLM2Vec cannot load such a query either)
            continue
        meta = {"language": row["language"]} if row.get("language") else {}
        text = str(_field(row, ("query",), where)).strip()
        if not text:
            raise InvalidInput(f"{where}: empty query text")
        queries.append(Query(qid, make_item(text, (), spec.params["instruction"]), qrels[qid], None, meta))
    if not queries:
        raise InvalidInput(f"{what}: no query has a relevant document in qrels")
    return RetrievalTask(spec.name, queries, corpus, metric=spec.metric, category=spec.modality)
