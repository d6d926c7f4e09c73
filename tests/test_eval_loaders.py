"""MMEB-V2 and MRMR loaders on small fixtures written in the published layouts (docs/benchmarks.md).

Every fixture is written twice: as parquet (the Hugging Face layout; needs pyarrow, skipped without it)
and as JSONL (the layout of VLM2Vec's local mirror). The end-to-end checks score hand-made embeddings
through ``lame.eval.runner.score_task`` against Hit@1 / nDCG values computed by hand.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lame.eval.mmeb import MMEB_V2_TASKS, VIDEO_CLS_LABELS, load_mmeb_v2, sample_frames
from lame.eval.mrmr import MRMR_TASKS, load_mrmr
from lame.eval.runner import score_task


@pytest.fixture(autouse=True)
def image_cache(tmp_path, monkeypatch) -> Path:
    """Images stored in parquet files are extracted to $LAME_CACHE/images by default: a per-test folder."""
    monkeypatch.setenv("LAME_CACHE", str(tmp_path / "lame-cache"))
    return tmp_path / "lame-cache" / "images"


@pytest.fixture(params=["jsonl", "parquet"])
def fmt(request):
    if request.param == "parquet":
        pytest.importorskip("pyarrow")
    return request.param


def png_bytes(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, color) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(color))
    return path


def write_rows(folder: Path, stem: str, rows: list[dict], fmt: str) -> Path:
    """One data file: <folder>/<stem>.parquet or .jsonl (every row gets every column)."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    rows = [{k: row.get(k) for k in columns} for row in rows]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / f"{stem}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = folder / f"{stem}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def image_cell(path: Path, data_file_dir: Path, fmt: str):
    """An image as the data file stores it: HF image struct (parquet) or a relative path (JSONL)."""
    if fmt == "parquet":
        return {"bytes": path.read_bytes(), "path": path.name}
    if path.is_relative_to(data_file_dir.parent):
        return str(Path("..") / path.relative_to(data_file_dir.parent))
    return str(path)


def same_image(part, expected: Path) -> bool:
    return isinstance(part, Path) and part.is_file() and part.read_bytes() == expected.read_bytes()


# ----------------------------------------------------------------------------------------------------
# MMEB-V2 fixture: 2 image tasks, 2 video tasks, 1 visdoc task
# ----------------------------------------------------------------------------------------------------


def make_mmeb(root: Path, fmt: str) -> dict:
    img = root / "image-tasks" / "MMEB"
    files = {
        "a": write_png(img / "ImageNet-1K" / "a.png", "red"),
        "b": write_png(img / "ImageNet-1K" / "b.png", "green"),
        **{k: write_png(img / "MSCOCO" / f"{k}.png", c)
           for k, c in (("x", "blue"), ("y", "yellow"), ("z", "white"), ("w", "black"))},
    }
    inst = "<|image_1|> Represent the given image for classification"
    write_rows(root / "image-tasks" / "ImageNet-1K", "test-00000-of-00001", [
        {"qry_inst": inst, "qry_text": "", "qry_img_path": "ImageNet-1K/a.png", "tgt_inst": "",
         "tgt_text": ["cat", "dog", "bird"], "tgt_img_path": ["", "", ""]},
        {"qry_inst": inst, "qry_text": "", "qry_img_path": "ImageNet-1K/b.png", "tgt_inst": "",
         "tgt_text": ["dog", "cat", "dog"], "tgt_img_path": ["", "", ""]},
    ], fmt)
    t2i = "Find me an everyday image that matches the given caption:"
    write_rows(root / "image-tasks" / "MSCOCO_t2i", "test-00000-of-00001", [
        {"qry_inst": t2i, "qry_text": "A cat on a mat.", "qry_img_path": "",
         "tgt_inst": "Represent the image.", "tgt_text": ["<|image_1|>"] * 3,
         "tgt_img_path": ["MSCOCO/x.png", "MSCOCO/y.png", "MSCOCO/z.png"]},
        {"qry_inst": t2i, "qry_text": "A dog in the snow.", "qry_img_path": "",
         "tgt_inst": "Represent the image.", "tgt_text": ["<|image_1|>"] * 3,
         "tgt_img_path": ["MSCOCO/y.png", "MSCOCO/x.png", "MSCOCO/w.png"]},
    ], fmt)

    # MSR-VTT: HF snapshot with two configs; only test_1k is read. Frames are not zero-padded.
    frames = root / "video-tasks" / "frames" / "video_ret" / "MSR-VTT"
    files["v1"] = [write_png(frames / "video1" / f"frame_{k}.jpg", (k * 20, 0, 0)) for k in range(1, 11)]
    files["v2"] = [write_png(frames / "video2" / f"frame_{k}.jpg", (0, k * 20, 0)) for k in range(1, 4)]
    data = root / "video-tasks" / "data" / "MSR-VTT"
    write_rows(data / "test_1k", "test-00000-of-00001", [
        {"video_id": "video1", "caption": "a man is cooking", "video": "video1.mp4"},
        {"video_id": "video2", "caption": "a dog runs", "video": "video2.mp4"},
    ], fmt)
    write_rows(data / "train_9k", "train-00000-of-00001",
               [{"video_id": "nope", "caption": "x", "video": "x"}], fmt)

    # Video-MME in the single-file layout of VLM2Vec's local mirror (video-tasks/data/video-mme.jsonl)
    vm = root / "video-tasks" / "frames" / "video_qa" / "Video-MME" / "abc"
    files["vm"] = [write_png(vm / f"{k:04d}.jpeg", (0, 0, k * 30)) for k in range(2)]
    (root / "video-tasks" / "data" / "video-mme.jsonl").write_text(json.dumps(
        {"question": "What is cooked?", "videoID": "abc",
         "options": ["A. Soup", "B. Rice", "C. Cake", "D. Tea"], "answer": "C", "question_id": "001-1",
         "domain": "Life", "sub_category": "Food"}) + "\n")

    # ViDoRe_arxivqa (BEIR): page 0 pre-extracted under visdoc-tasks/ViDoRe_arxivqa/, pages 1 and 2
    # in the corpus file
    vis = root / "visdoc-tasks" / "data" / "ViDoRe_arxivqa"
    files["p0"] = write_png(root / "visdoc-tasks" / "ViDoRe_arxivqa" / "0.png", "purple")
    files["p1"] = write_png(root / "pages" / "1.png", "orange")
    files["p2"] = write_png(root / "pages" / "2.png", "gray")
    write_rows(vis / "queries", "test-00000-of-00001", [
        {"query-id": 10, "query": "What is the loss?", "language": "english"},
        {"query-id": 11, "query": "Which dataset?", "language": "english"},
        {"query-id": 12, "query": "Unjudged query", "language": "english"},
    ], fmt)
    write_rows(vis / "corpus", "test-00000-of-00001", [
        {"corpus-id": 0, "image": None},
        {"corpus-id": 1, "image": image_cell(files["p1"], vis / "corpus", fmt)},
        {"corpus-id": 2, "image": image_cell(files["p2"], vis / "corpus", fmt)},
    ], fmt)
    write_rows(vis / "qrels", "test-00000-of-00001", [
        {"query-id": 10, "corpus-id": 0, "score": 2},
        {"query-id": 10, "corpus-id": 1, "score": 1},
        {"query-id": 10, "corpus-id": 0, "score": 1},  # a repeated pair: the higher grade counts
        {"query-id": 11, "corpus-id": 2, "score": 1},
        {"query-id": 11, "corpus-id": 0, "score": 0},  # grade 0: not relevant
    ], fmt)
    return files


MMEB_LOADED = ["ImageNet-1K", "MSCOCO_t2i", "MSR-VTT", "Video-MME", "ViDoRe_arxivqa"]


@pytest.fixture
def mmeb(tmp_path, fmt):
    files = make_mmeb(tmp_path / "mmeb", fmt)
    tasks = {t.name: t for t in load_mmeb_v2(tmp_path / "mmeb", MMEB_LOADED, num_frames=4)}
    return tasks, files, tmp_path / "mmeb"


def test_registry_has_the_78_published_tasks():
    by = {}
    for spec in MMEB_V2_TASKS.values():
        by.setdefault(spec.modality, {}).setdefault(spec.subcategory, []).append(spec.name)
    assert len(MMEB_V2_TASKS) == 78
    assert {m: sum(map(len, s.values())) for m, s in by.items()} == {"image": 36, "video": 18, "visdoc": 24}
    assert {m: {k: len(v) for k, v in s.items()} for m, s in by.items()} == {
        "image": {"classification": 10, "vqa": 10, "retrieval": 12, "grounding": 4},
        "video": {"classification": 5, "retrieval": 5, "moment": 3, "qa": 5},
        "visdoc": {"vidore-v1": 10, "vidore-v2": 4, "visrag": 6, "ood": 4},
    }
    assert {s.metric for s in MMEB_V2_TASKS.values() if s.modality != "visdoc"} == {"hit@1"}
    assert {s.metric for s in MMEB_V2_TASKS.values() if s.modality == "visdoc"} == {"ndcg@5"}
    assert MMEB_V2_TASKS["HMDB51"].eval_type == "global" and MMEB_V2_TASKS["SmthSmthV2"].eval_type == "local"
    assert MMEB_V2_TASKS["ImageNet-1K"].eval_type == "local"
    assert MMEB_V2_TASKS["ViDoRe_arxivqa"].eval_type == "global"


def test_image_local_task(mmeb):
    tasks, files, _ = mmeb
    task = tasks["ImageNet-1K"]
    assert (task.metric, task.category) == ("hit@1", "image")
    q0, q1 = task.queries
    assert q0.item == {"instruction": "Represent the given image for classification", "image": files["a"]}
    assert q0.item["image"].resolve() == files["a"].resolve() and q0.item["image"].is_file()
    assert [task.corpus[c] for c in q0.candidates] == ["cat", "dog", "bird"]
    assert q0.relevant == {q0.candidates[0]: 1.0}
    # the repeated "dog" of the second record is one candidate; the positive stays first
    assert [task.corpus[c] for c in q1.candidates] == ["dog", "cat"]
    assert q1.relevant == {q1.candidates[0]: 1.0}
    assert sorted(task.corpus.values()) == ["bird", "cat", "dog"]  # shared by content across queries


def test_image_task_global_pool_is_deduplicated(tmp_path, fmt):
    files = make_mmeb(tmp_path, fmt)
    (local,) = load_mmeb_v2(tmp_path, ["MSCOCO_t2i"])
    (glob,) = load_mmeb_v2(tmp_path, ["MSCOCO_t2i"], eval_type={"MSCOCO_t2i": "global"})
    q0 = local.queries[0]
    assert q0.item == {"instruction": "Find me an everyday image that matches the given caption:",
                       "text": "A cat on a mat."}
    assert [local.corpus[c] for c in q0.candidates] == [files["x"], files["y"], files["z"]]
    # 6 candidates over two queries, 4 distinct images: one corpus entry each
    assert sorted(glob.corpus.values()) == sorted(files[k] for k in "xyzw")
    assert all(q.candidates is None for q in glob.queries)
    assert [glob.corpus[d] for q in glob.queries for d in q.relevant] == [files["x"], files["y"]]


def test_video_task_frames(mmeb):
    tasks, files, _ = mmeb
    task = tasks["MSR-VTT"]
    assert (task.metric, task.category, len(task.queries)) == ("hit@1", "video", 2)  # train_9k not read
    q0, q1 = task.queries
    assert q0.item == {"instruction": "Find a video that contains the following visual content:",
                       "text": "a man is cooking"}
    assert q0.candidates is None  # global: the pool of all videos
    (pos0,) = q0.relevant
    # 10 frames, 4 evenly spaced: indices 0, 3, 6, 9 in natural order (frame_1 .. frame_10)
    assert task.corpus[pos0] == {"images": [files["v1"][i] for i in (0, 3, 6, 9)]}
    (pos1,) = q1.relevant
    assert task.corpus[pos1] == {"images": files["v2"]}  # fewer frames than asked: all of them
    assert len(task.corpus) == 2


def test_sample_frames(tmp_path):
    frames = [write_png(tmp_path / "v" / f"{k}.png", "red") for k in range(1, 9)]
    assert sample_frames(tmp_path / "v", 3, "x") == [frames[0], frames[3], frames[7]]
    assert sample_frames(tmp_path / "v", None, "x") == frames
    with pytest.raises(FileNotFoundError, match="frame folder"):
        sample_frames(tmp_path / "missing", 3, "x")


def test_video_qa_task_positive_first(mmeb):
    tasks, files, _ = mmeb
    (q,) = tasks["Video-MME"].queries
    assert q.item["images"] == files["vm"]
    assert q.item["text"] == "What is cooked?\nA. Soup\nB. Rice\nC. Cake\nD. Tea"
    assert q.item["instruction"].startswith("Given a video and a question")
    assert [tasks["Video-MME"].corpus[c] for c in q.candidates] == ["Cake", "Soup", "Rice", "Tea"]
    assert q.relevant == {q.candidates[0]: 1.0}
    assert q.meta == {"question_id": "001-1", "domain": "Life", "sub_category": "Food"}


def test_visdoc_task_graded_qrels(mmeb):
    tasks, files, _ = mmeb
    task = tasks["ViDoRe_arxivqa"]
    assert (task.metric, task.category) == ("ndcg@5", "visdoc")
    assert [q.id for q in task.queries] == ["10", "11"]  # query 12 has no judged page
    assert task.queries[0].relevant == {"0": 2.0, "1": 1.0}
    assert task.queries[1].relevant == {"2": 1.0}
    assert task.queries[0].item == {"instruction": "Find a document image that matches the given query:",
                                    "text": "What is the loss?"}
    assert task.corpus["0"] == files["p0"]  # the pre-extracted page image
    assert same_image(task.corpus["1"], files["p1"]) and same_image(task.corpus["2"], files["p2"])


def test_mmeb_selection_and_errors(tmp_path):
    make_mmeb(tmp_path, "jsonl")
    assert [t.name for t in load_mmeb_v2(tmp_path, "ViDoRe_arxivqa")] == ["ViDoRe_arxivqa"]
    with pytest.raises(ValueError, match="NoSuchTask"):
        load_mmeb_v2(tmp_path, ["ImageNet-1K", "NoSuchTask"])
    with pytest.raises(FileNotFoundError, match="HMDB51"):
        load_mmeb_v2(tmp_path, ["ImageNet-1K", "HMDB51"])
    with pytest.raises(FileNotFoundError, match="ViDoRe_docvqa"):  # a group needs all its tasks
        load_mmeb_v2(tmp_path, ["visdoc"])
    with pytest.raises(ValueError, match="eval_type"):
        load_mmeb_v2(tmp_path, ["ImageNet-1K"], eval_type={"ImageNet-1K": "sideways"})
    (tmp_path / "image-tasks" / "MMEB" / "ImageNet-1K" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"ImageNet-1K, .*ImageNet-1K/test-00000-of-00001\.jsonl:1: .*a.png"):
        load_mmeb_v2(tmp_path, ["ImageNet-1K"])  # the record by its 1-based line


def test_mmeb_scores_by_hand(mmeb):
    tasks, _, _ = mmeb
    # ImageNet-1K, local. Docs: cat, dog, bird (one-hot). q0 (positive cat) prefers dog: miss. q1 (positive
    # dog, candidates dog/cat) prefers bird, which is not its candidate, then dog: hit. Hit@1 = 1/2.
    task = tasks["ImageNet-1K"]
    doc_ids = list(task.corpus)
    assert [task.corpus[d] for d in doc_ids] == ["cat", "dog", "bird"]
    result, rankings = score_task(task, np.array([[0.2, 0.9, 0.1], [0.1, 0.8, 0.9]]), np.eye(3), doc_ids)
    assert result["score"] == result["hit@1"] == pytest.approx(0.5)
    assert rankings["q1"] == [doc_ids[1], doc_ids[0]]

    # ViDoRe_arxivqa, global, nDCG@5 with grades. q10 ranks 1, 0, 2 (grades 1, 2, 0); q11 ranks 2 first.
    task = tasks["ViDoRe_arxivqa"]
    doc_ids = ["0", "1", "2"]
    result, _ = score_task(task, np.array([[0.5, 0.9, 0.1], [0.0, 0.1, 0.7]]), np.eye(3), doc_ids)
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert result["metric"] == "ndcg@5"
    assert result["score"] == pytest.approx((dcg / idcg + 1.0) / 2)
    assert result["hit@1"] == pytest.approx(1.0)  # page 1 (grade 1) on top still counts as a hit


def test_local_versus_global_scoring(tmp_path):
    files = make_mmeb(tmp_path, "jsonl")
    (local,) = load_mmeb_v2(tmp_path, ["MSCOCO_t2i"])
    (glob,) = load_mmeb_v2(tmp_path, ["MSCOCO_t2i"], eval_type={"MSCOCO_t2i": "global"})
    name_of = {files[k]: k for k in "xyzw"}
    # q0 (positive x) scores w highest, then x: w is not among its own candidates (x, y, z) but is in the
    # global pool, so q0 hits locally and misses globally. q1 (positive y) scores y highest: a hit in both.
    scores = [{"x": 0.8, "y": 0.1, "z": 0.0, "w": 0.9}, {"x": 0.9, "y": 0.95, "z": 0.0, "w": 0.2}]
    for task, expected in ((local, 1.0), (glob, 0.5)):
        doc_ids = list(task.corpus)
        query_emb = np.array([[s[name_of[task.corpus[d]]] for d in doc_ids] for s in scores])
        result, _ = score_task(task, query_emb, np.eye(len(doc_ids)), doc_ids)
        assert result["hit@1"] == pytest.approx(expected)


def test_other_video_formats(tmp_path):
    """One record per remaining video record format (VLM2Vec field names), JSONL files."""
    frames, data = tmp_path / "video-tasks" / "frames", tmp_path / "video-tasks" / "data"

    def video(folder: Path, n: int = 2) -> list[Path]:
        return [write_png(folder / f"{k}.jpg", (k, k, k)) for k in range(n)]

    def rows(name: str, *records: dict) -> None:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in records))

    ssv2 = video(frames / "video_cls" / "SSv2" / "77")
    rows("ssv2.jsonl", {"video_id": 77, "pos_text": "Folding something", "neg_text": ["Opening something",
                                                                                     "Folding something"]})
    hmdb = video(frames / "video_cls" / "HMDB51" / "clip_a")
    rows("hmdb51.jsonl", {"video_id": "clip_a", "pos_text": "run"},
         {"video_id": "clip_a", "pos_text": "walk"})
    qv = frames / "video_mret" / "QVHighlight" / "vid9"
    qv_query, qv_neg, qv_pos = video(qv / "query"), video(qv / "negative_0"), video(qv / "positive_0")
    rows("qvhighlight.jsonl", {"query": "a goal is scored", "video_path": "some/dir/vid9.mp4"})
    ms = frames / "video_mret" / "MomentSeeker"
    ms_pos, ms_neg = video(ms / "video_frames" / "movie_1_pos"), video(ms / "video_frames" / "movie_1_neg")
    ms_img = write_png(ms / "query_q.jpg", "red")
    rows("momentseeker_1k6.jsonl", {"query": "the car stops", "input_frames": "q.jpg",
                                    "positive_frames": [{"output_path": "movie/1_pos.mp4"}],
                                    "negative_frames": [{"output_path": "movie/1_neg.mp4"}]})
    nx = video(frames / "video_qa" / "NExTQA" / "4010")
    (data / "NExTQA" / "MC").mkdir(parents=True)
    (data / "NExTQA" / "MC" / "test.jsonl").write_text(json.dumps(
        {"video": 4010, "question": "why", "answer": 2, "qid": 1, "type": "CW",
         "a0": "p", "a1": "q", "a2": "r", "a3": "s", "a4": "t"}) + "\n")
    ego = video(frames / "video_qa" / "EgoSchema" / "e1")
    rows("egoschema.jsonl", {"video_idx": "e1", "question": "what?", "option": ["A. one", "B. two"],
                             "answer": "1", "question_idx": "e1"})
    anet = video(frames / "video_qa" / "ActivityNetQA" / "v_xyz")
    rows("activitynetqa.jsonl", {"video_name": "xyz", "question": "is it raining", "answer": "no",
                                 "question_id": "x"})
    mvb = video(frames / "video_qa" / "MVBench" / "action_count" / "c.mp4")
    rows("mvbench/action_count.json", [{"question": "how many", "video": "c.mp4",
                                        "candidates": ["1", "2", "3"], "answer": "3"}])
    names = ["SmthSmthV2", "HMDB51", "QVHighlight", "MomentSeeker", "NExTQA", "EgoSchema", "ActivityNetQA",
             "MVBench"]
    t = {task.name: task for task in load_mmeb_v2(tmp_path, names)}

    def cands(name):
        q = t[name].queries[0]
        return [t[name].corpus[c] for c in q.candidates] if q.candidates else None

    assert t["SmthSmthV2"].queries[0].item["images"] == ssv2
    assert cands("SmthSmthV2") == ["Folding something", "Opening something"]
    assert list(t["HMDB51"].corpus.values()) == VIDEO_CLS_LABELS["HMDB51"]  # the 51 published classes
    assert t["HMDB51"].queries[0].candidates is None
    assert t["HMDB51"].queries[0].item["images"] == hmdb
    q = t["QVHighlight"].queries[0]
    assert q.item["images"] == qv_query and q.item["text"] == "a goal is scored"
    assert cands("QVHighlight") == [{"images": qv_pos}, {"images": qv_neg}]
    q = t["MomentSeeker"].queries[0]
    assert q.item["image"] == ms_img and q.item["instruction"].startswith("Select the video clip")
    assert cands("MomentSeeker") == [{"images": ms_pos}, {"images": ms_neg}]
    assert t["NExTQA"].queries[0].item["text"] == "why\nOptions:\n(A) p\n(B) q\n(C) r\n(D) s\n(E) t"
    assert cands("NExTQA") == ["r", "p", "q", "s", "t"] and t["NExTQA"].queries[0].item["images"] == nx
    assert cands("EgoSchema") == ["two", "one"] and t["EgoSchema"].queries[0].item["images"] == ego
    assert cands("ActivityNetQA") == ["no", "yes"] and t["ActivityNetQA"].queries[0].item["images"] == anet
    q = t["MVBench"].queries[0]
    assert cands("MVBench") == ["(C) 3", "(A) 1", "(B) 2"] and q.item["images"] == mvb
    assert q.meta == {"subset": "action_count"}
    for task in t.values():
        assert all(q.relevant == {q.candidates[0]: 1.0} for q in task.queries if q.candidates)


def test_visrag_page_names(tmp_path):
    """VisRAG pages pre-extracted under VLM2Vec's shortened name: <first 50 chars>_<md5[:8]><ext>."""
    import hashlib

    corpus_id = "a" * 60 + ".png"
    name = "a" * 50 + "_" + hashlib.md5(corpus_id.encode()).hexdigest()[:8] + ".png"
    page = write_png(tmp_path / "visdoc-tasks" / "VisRAG_ChartQA" / name, "red")
    base = tmp_path / "visdoc-tasks" / "data" / "VisRAG-Ret-Test-ChartQA"
    for sub, row in (("queries", {"query-id": "q", "query": "chart?"}), ("corpus", {"corpus-id": corpus_id}),
                     ("qrels", {"query-id": "q", "corpus-id": corpus_id, "score": 1})):
        write_rows(base / sub, "train", [row], "jsonl")
    (task,) = load_mmeb_v2(tmp_path, ["VisRAG_ChartQA"])
    assert task.corpus == {corpus_id: page} and task.queries[0].relevant == {corpus_id: 1.0}


# ----------------------------------------------------------------------------------------------------
# MRMR fixture: Knowledge (interleaved, graded) and Negation (image queries, Hit@1, own documents)
# ----------------------------------------------------------------------------------------------------


def make_mrmr(root: Path, fmt: str) -> dict:
    pics = root / "knowledge" / "images"
    f = {k: write_png(pics / f"{k}.png", c) for k, c in
         (("A", "red"), ("B", "green"), ("C", "blue"), ("D", "white"), ("E", "black"))}
    kq, kc = root / "knowledge" / "query", root / "knowledge" / "corpus"
    write_rows(kq, "test-00000-of-00001", [
        {"id": "q1", "modality": "image,text", "text": "Look at <image 1> and <image 2>. Which disease?",
         "image": image_cell(f["C"], kq, fmt), "image 1": image_cell(f["A"], kq, fmt),
         "image 2": image_cell(f["B"], kq, fmt), "category": "Clinical_Medicine"},
        {"id": "q2", "modality": "text", "text": "Who painted it?", "category": "History"},
        {"id": "q3", "modality": "text", "text": "A query without judgements", "category": "History"},
    ], fmt)
    write_rows(kc, "test-00000-of-00001", [
        {"id": "d1", "modality": "image,text", "text": "Slide <image 1> shows a lesion; see also <image 2>",
         "image 1": image_cell(f["D"], kc, fmt), "image 2": image_cell(f["A"], kc, fmt)},
        {"id": "d2", "modality": "text", "text": "A plain text document."},
        {"id": "d3", "modality": "image", "text": "", "image": image_cell(f["E"], kc, fmt)},
    ], fmt)
    write_rows(root / "knowledge" / "qrels", "test-00000-of-00001", [
        {"query_id": "q1", "corpus_id": "d1", "score": 2},
        {"query_id": "q1", "corpus_id": "d2", "score": 1},
        {"query_id": "q2", "corpus_id": "d3", "score": 1},
    ], fmt)

    # Negation: each query has its own four descriptions <query id>_1 .. _4, one of them relevant
    npics = root / "negation" / "images"
    g = {k: write_png(npics / f"{k}.png", c) for k, c in (("F", "cyan"), ("G", "magenta"))}
    nq = root / "negation" / "query"
    write_rows(nq, "test-00000-of-00001", [
        {"id": "n1", "modality": "image", "text": "", "image": image_cell(g["F"], nq, fmt)},
        {"id": "n2", "modality": "image", "text": "", "image": image_cell(g["G"], nq, fmt)},
    ], fmt)
    write_rows(root / "negation" / "corpus", "test-00000-of-00001", [
        {"id": f"{q}_{k}", "modality": "text", "text": f"Caption {q}.{k} is not true.", "image": None}
        for q in ("n1", "n2") for k in (1, 2, 3, 4)
    ], fmt)
    write_rows(root / "negation" / "qrels", "test-00000-of-00001", [
        {"query-id": "n1", "corpus-id": "n1_1", "score": 1},
        {"query-id": "n2", "corpus-id": "n2_2", "score": 1},
    ], fmt)
    return {**f, **g}


def test_mrmr_registry():
    assert list(MRMR_TASKS) == ["Knowledge", "Theorem", "Negation", "Design", "Traffic"]
    assert {n: t.metric for n, t in MRMR_TASKS.items()} == {
        "Knowledge": "ndcg@10", "Theorem": "ndcg@10", "Negation": "hit@1", "Design": "ndcg@10",
        "Traffic": "ndcg@10"}
    assert {t.category for t in MRMR_TASKS.values()} == {"knowledge", "theorem", "contradiction"}


def test_mrmr_items_as_the_official_code_builds_them(tmp_path, fmt):
    """Default items: the record's text with its <image N> placeholders, plus its ``image`` column
    (MRMR's mteb tasks pass exactly these two fields to a model)."""
    f = make_mrmr(tmp_path, fmt)
    knowledge, negation = load_mrmr(tmp_path, ["Knowledge", "Negation"], extract_dir=tmp_path / "cache")
    assert (knowledge.metric, knowledge.category, knowledge.group_by) == ("ndcg@10", "knowledge", "domain")
    assert (negation.metric, negation.category) == ("hit@1", "contradiction")

    q1, q2 = knowledge.queries  # q3 has no judged document
    assert set(q1.item) == {"instruction", "image", "text"}
    assert q1.item["instruction"] == "Retrieve relevant documents that help answer the question."
    assert q1.item["text"] == "Look at <image 1> and <image 2>. Which disease?"
    assert same_image(q1.item["image"], f["C"])  # the image column; the numbered images are not read
    assert q1.relevant == {"d1": 2.0, "d2": 1.0}
    assert q1.meta == {"category": "Clinical_Medicine", "domain": "Medicine"}
    assert q2.item == {"instruction": q1.item["instruction"], "text": "Who painted it?"}
    assert q2.relevant == {"d3": 1.0} and q2.candidates is None

    # d1 has numbered images only and no image column: its text alone, placeholders and all
    assert knowledge.corpus["d1"] == "Slide <image 1> shows a lesion; see also <image 2>"
    assert knowledge.corpus["d2"] == "A plain text document."
    assert same_image(knowledge.corpus["d3"], f["E"])

    n1, n2 = negation.queries
    assert same_image(n1.item["image"], f["F"]) and set(n1.item) == {"instruction", "image"}
    assert n1.relevant == {"n1_1": 1.0} and n2.relevant == {"n2_2": 1.0}
    assert negation.corpus["n1_3"] == "Caption n1.3 is not true."


def test_mrmr_interleaved_items(tmp_path, fmt):
    """items="interleaved": text pieces and the numbered images in reading order."""
    f = make_mrmr(tmp_path, fmt)
    (knowledge,) = load_mrmr(tmp_path, ["Knowledge"], items="interleaved", extract_dir=tmp_path / "cache")
    q1 = knowledge.queries[0]
    parts = q1.item["parts"]
    assert [p if isinstance(p, str) else "IMG" for p in parts] == [
        "Look at", "IMG", "and", "IMG", ". Which disease?"]
    assert same_image(parts[1], f["A"]) and same_image(parts[3], f["B"])  # the combined "image" C is left out
    d1 = knowledge.corpus["d1"]
    assert [p if isinstance(p, str) else "IMG" for p in d1] == [
        "Slide", "IMG", "shows a lesion; see also", "IMG"]
    assert same_image(d1[1], f["D"]) and same_image(d1[3], f["A"])
    assert knowledge.corpus["d2"] == ["A plain text document."]
    assert len(knowledge.corpus["d3"]) == 1 and same_image(knowledge.corpus["d3"][0], f["E"])
    if fmt == "jsonl":  # path cells point at the written files themselves
        assert d1[1].resolve() == f["D"].resolve()
    with pytest.raises(ValueError, match="items"):
        load_mrmr(tmp_path, ["Knowledge"], items="sideways")


def test_mrmr_scores_by_hand(tmp_path):
    make_mrmr(tmp_path, "jsonl")
    knowledge, negation = load_mrmr(tmp_path, ["knowledge", "Negation"])
    # Knowledge: docs d1, d2, d3. q1 (d1: 2, d2: 1) ranks d2, d3, d1; q2 (d3: 1) ranks d3 first.
    doc_ids = ["d1", "d2", "d3"]
    result, _ = score_task(knowledge, np.array([[0.1, 0.9, 0.5], [0.0, 0.2, 0.8]]), np.eye(3), doc_ids)
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert result["metric"] == "ndcg@10"
    assert result["score"] == pytest.approx((dcg / idcg + 1.0) / 2)
    assert result["groups"]["Medicine"]["ndcg@10"] == pytest.approx(dcg / idcg)
    # Negation: n1 -> n1_1 right, n2 -> n2_4 wrong: Hit@1 = 1/2
    doc_ids = list(negation.corpus)
    query_emb = np.zeros((2, len(doc_ids)))
    query_emb[0, doc_ids.index("n1_1")], query_emb[1, doc_ids.index("n2_4")] = 1.0, 1.0
    result, _ = score_task(negation, query_emb, np.eye(len(doc_ids)), doc_ids)
    assert (result["metric"], result["score"]) == ("hit@1", pytest.approx(0.5))


def test_mrmr_selection_and_errors(tmp_path):
    make_mrmr(tmp_path, "jsonl")
    assert [t.name for t in load_mrmr(tmp_path, "Negation")] == ["Negation"]
    with pytest.raises(ValueError, match="Contradictions"):
        load_mrmr(tmp_path, ["Contradictions"])
    with pytest.raises(FileNotFoundError, match="Traffic"):
        load_mrmr(tmp_path, ["Negation", "Traffic"])
    with pytest.raises(FileNotFoundError, match="Theorem"):
        load_mrmr(tmp_path)  # all five by default
