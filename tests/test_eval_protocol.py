"""The MMEB-V2 and MRMR protocols against the published evaluation code, on small fixtures written in the
published layouts (docs/benchmarks.md, "What matches upstream"): frame counts and sampling, the fixed
label pools, SmthSmthV2's 1,000 rows, option texts, moment-retrieval relevance and clip frames,
candidate instructions, the download layouts and the data check, the tie rule and negative grades;
MRMR's own-document pools for Negation, official items, pin_p distractors and the image cache.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_eval_loaders import image_cell, make_mmeb, make_mrmr, same_image, write_png, write_rows

from lame.cli import build_parser, main
from lame.cli_options import from_options
from lame.eval.options import BenchmarkOptions
from lame.eval.loaders import load_benchmark
from lame.eval.metrics import all_metrics, ndcg_at_k
from lame.eval.mmeb import MMEB_V2_TASKS, VIDEO_CLS_LABELS, check_mmeb_v2, load_mmeb_v2
from lame.eval.mrmr import load_mrmr
from lame.eval.runner import rank, score_task
from lame.eval.tasks import Query, RetrievalTask


@pytest.fixture(autouse=True)
def image_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LAME_CACHE", str(tmp_path / "lame-cache"))
    return tmp_path / "lame-cache" / "images"


def video(folder: Path, n: int) -> list[Path]:
    """n frame images frame_1.jpg .. frame_n.jpg (natural order), each a distinct colour."""
    return [write_png(folder / f"frame_{k}.jpg", (k % 256, k // 256, 7)) for k in range(1, n + 1)]


def jsonl(path: Path, *records: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def frames_of(item) -> list[Path]:
    return item["images"] if "images" in item else [item["image"]]


# ----------------------------------------------------------------------------------------------------
# 1. frames: 64 by default, the published options on the library and the command line
# ----------------------------------------------------------------------------------------------------


def test_videos_default_to_64_frames_and_the_published_options_reach_the_loader(tmp_path):
    frames = tmp_path / "video-tasks" / "frames" / "video_ret" / "MSR-VTT"
    long, short = video(frames / "v1", 100), video(frames / "v2", 3)
    jsonl(tmp_path / "video-tasks" / "data" / "msr-vtt.jsonl",
          {"video_id": "v1", "caption": "a long video"}, {"video_id": "v2", "caption": "a short one"})

    (task,) = load_mmeb_v2(tmp_path, ["MSR-VTT"])
    q0, q1 = task.queries
    assert task.corpus[next(iter(q0.relevant))]["images"] == [long[i] for i in np.linspace(0, 99, 64).astype(int)]
    assert task.corpus[next(iter(q1.relevant))]["images"] == short  # fewer saved frames: as saved

    (task,) = load_mmeb_v2(tmp_path, ["MSR-VTT"], num_frames=8, pad_frames=True)
    assert len(task.corpus[next(iter(task.queries[0].relevant))]["images"]) == 8
    # VLM2Vec main samples short clips with repetition: linspace(0, 2, 8) rounded down
    assert task.corpus[next(iter(task.queries[1].relevant))]["images"] == [short[i] for i in (0, 0, 0, 0, 1, 1, 1, 2)]
    (task,) = load_mmeb_v2(tmp_path, ["MSR-VTT"], num_frames="all")
    assert task.corpus[next(iter(task.queries[0].relevant))]["images"] == long

    argv = ["eval", "--model", "m", "--benchmark", "mmeb-v2", "--data-root", str(tmp_path), "--num-frames", "8",
            "--pad-frames", "--num-samples", "1", "--eval-type", "MSR-VTT=local", "--candidate-instruction",
            "upstream", "--image-cache", str(tmp_path / "img")]
    options = cli_options(build_parser().parse_args(argv))
    assert options["num_frames"] == 8 and options["pad_frames"] and options["extract_dir"] == str(tmp_path / "img")
    (task,) = load_benchmark("mmeb-v2", tmp_path, ["MSR-VTT"], **options)
    (q,) = task.queries  # --num-samples 1
    assert q.candidates is not None  # --eval-type MSR-VTT=local
    assert task.corpus[q.candidates[0]]["instruction"] == "Understand the content of the provided video."
    assert len(task.corpus[q.candidates[0]]["images"]) == 8
    assert cli_options(build_parser().parse_args(argv[:7] + ["--num-frames", "all"]))["num_frames"] == "all"
    with pytest.raises(ValueError, match="do not apply to benchmark mrmr"):
        load_benchmark("mrmr", tmp_path, None, num_frames=8)


# ----------------------------------------------------------------------------------------------------
# 2. global video classification ranks the published label lists
# ----------------------------------------------------------------------------------------------------


def test_global_video_classification_ranks_the_published_label_list(tmp_path):
    assert {n: len(v) for n, v in VIDEO_CLS_LABELS.items()} == {"K700": 700, "HMDB51": 51, "UCF101": 101,
                                                                "Breakfast": 10}
    base = tmp_path / "video-tasks" / "frames" / "video_cls" / "HMDB51"
    video(base / "clip_a", 2), video(base / "clip_b", 2)
    jsonl(tmp_path / "video-tasks" / "data" / "hmdb51.jsonl", {"video_id": "clip_a", "pos_text": "run"},
          {"video_id": "clip_b", "pos_text": "walk"})
    (fixed,) = load_mmeb_v2(tmp_path, ["HMDB51"])
    (test,) = load_mmeb_v2(tmp_path, ["HMDB51"], label_pool="test")
    assert list(fixed.corpus.values()) == VIDEO_CLS_LABELS["HMDB51"]
    assert list(test.corpus.values()) == ["run", "walk"]

    # Both queries score "wave" (a class without a test video) above their own label: a miss against the
    # published pool, a hit against the labels of the test file only.
    def hit(task):
        ids = list(task.corpus)
        emb = np.zeros((2, len(ids)))
        for qi, truth in enumerate(("run", "walk")):
            if "wave" in task.corpus.values():
                emb[qi, list(task.corpus.values()).index("wave")] = 0.9
            emb[qi, list(task.corpus.values()).index(truth)] = 0.5
        return score_task(task, emb, np.eye(len(ids)), ids)[0]["hit@1"]

    assert (hit(fixed), hit(test)) == (0.0, 1.0)

    jsonl(tmp_path / "video-tasks" / "data" / "hmdb51.jsonl", {"video_id": "clip_a", "pos_text": "moonwalk"})
    with pytest.warns(UserWarning, match="not in the published label list") as caught:
        (task,) = load_mmeb_v2(tmp_path, ["HMDB51"])
    assert caught[0].filename == __file__  # the warning names the line that called load_mmeb_v2
    assert len(task.corpus) == 52 and "moonwalk" in task.corpus.values()


# ----------------------------------------------------------------------------------------------------
# 3. SmthSmthV2: the first 1,000 rows
# ----------------------------------------------------------------------------------------------------


def test_smthsmthv2_is_cut_to_its_first_1000_rows(tmp_path):
    video(tmp_path / "video-tasks" / "frames" / "video_cls" / "SSv2" / "77", 2)
    records = [{"video_id": 77, "pos_text": f"label {i}", "neg_text": [f"label {i}", "other"]} for i in range(1003)]
    jsonl(tmp_path / "video-tasks" / "data" / "ssv2.jsonl", *records)
    (task,) = load_mmeb_v2(tmp_path, ["SmthSmthV2"])
    assert len(task.queries) == 1000
    assert task.corpus[task.queries[-1].candidates[0]] == "label 999"
    (task,) = load_mmeb_v2(tmp_path, ["SmthSmthV2"], num_samples=10)
    assert len(task.queries) == 10


# ----------------------------------------------------------------------------------------------------
# 4. video QA: option texts and spacing as VLM2Vec builds them
# ----------------------------------------------------------------------------------------------------


def test_video_qa_options_follow_upstream(tmp_path):
    frames, data = tmp_path / "video-tasks" / "frames" / "video_qa", tmp_path / "video-tasks" / "data"
    video(frames / "Video-MME" / "abc", 2), video(frames / "EgoSchema" / "e1", 2)
    video(frames / "MVBench" / "action_count" / "c.mp4", 2)
    jsonl(data / "video-mme.jsonl", {"question": "What is cooked?", "videoID": "abc",
                                     "options": ["A. Soup.", "B. Rice.", "C. Cake.", "D. Tea."], "answer": "C"})
    jsonl(data / "egoschema.jsonl", {"video_idx": "e1", "question": "What did C do?",
                                     "option": ["A. C cooked.", "B. C slept."], "answer": 1})
    (data / "mvbench").mkdir()
    (data / "mvbench" / "action_count.json").write_text(json.dumps(
        [{"question": "How many?", "video": "c.mp4", "candidates": ["1", "2", "3"], "answer": "3"}]))
    t = {task.name: task for task in load_mmeb_v2(tmp_path, ["Video-MME", "EgoSchema", "MVBench"])}

    def only(name):
        (q,) = t[name].queries
        return q, [t[name].corpus[c] for c in q.candidates]

    q, cands = only("Video-MME")
    assert q.item["text"] == "What is cooked?\nA. Soup.\nB. Rice.\nC. Cake.\nD. Tea."
    assert cands == ["Cake", "Soup", "Rice", "Tea"]  # letter and trailing period cut
    q, cands = only("EgoSchema")
    assert q.item["text"] == "What did C do?A. C cooked. B. C slept."  # question + " ".join(options)
    assert cands == ["C slept", "C cooked"]
    q, cands = only("MVBench")
    assert q.item["text"] == "How many?\nOptions:\n(A) 1\n(B) 2\n(C) 3"
    assert cands == ["(C) 3", "(A) 1", "(B) 2"]  # the option template kept on candidates


# ----------------------------------------------------------------------------------------------------
# 5. moment retrieval: clip frames and relevance
# ----------------------------------------------------------------------------------------------------


def test_moment_retrieval_frames_and_relevance(tmp_path):
    mret, data = tmp_path / "video-tasks" / "frames" / "video_mret", tmp_path / "video-tasks" / "data"
    vid = mret / "QVHighlight" / "vid9"
    query = video(vid / "query", 20)
    clips = {name: video(vid / name, 16) for name in ("positive_0", "positive_1", "negative_0")}
    jsonl(data / "qvhighlight.jsonl", {"query": "a goal is scored", "video_path": "some/dir/vid9.mp4"})
    # VLM2Vec's parser labels the positive folder os.listdir yields last (the file system decides which)
    last = [n for n in os.listdir(vid) if n.startswith("positive")][-1]
    other = ({"positive_0", "positive_1"} - {last}).pop()

    (task,) = load_mmeb_v2(tmp_path, ["QVHighlight"])
    (q,) = task.queries
    assert q.item["images"] == query  # query video: num_frames (64) of its 20 saved frames
    by_frames = {tuple(frames_of(task.corpus[c])): c for c in q.candidates}
    sampled = {name: tuple(f[i] for i in np.linspace(0, 15, 8).astype(int)) for name, f in clips.items()}
    assert set(by_frames) == set(sampled.values())  # clips: num_clip_frames (8), every positive a candidate
    assert list(q.relevant) == [by_frames[sampled[last]]]  # by default one label, as published

    (every,) = load_mmeb_v2(tmp_path, ["QVHighlight"], moment_positives="all")
    assert set(every.queries[0].relevant) == {by_frames[sampled["positive_0"]], by_frames[sampled["positive_1"]]}

    # a model that ranks the other positive clip first: a miss under the published protocol, a hit with "all"
    query_emb = np.array([[1.0, 0.0]], np.float32)
    clip_emb = {other: [1.0, 0.0], last: [0.5, 0.0], "negative_0": [0.0, 1.0]}
    ids = [by_frames[sampled[name]] for name in clip_emb]
    docs = np.array(list(clip_emb.values()), np.float32)
    assert score_task(task, query_emb, docs, ids)[0]["hit@1"] == 0.0
    assert score_task(every, query_emb, docs, ids)[0]["hit@1"] == 1.0
    argv = ["eval", "--model", "m", "--benchmark", "mmeb-v2", "--data-root", str(tmp_path)]
    for flags, hit in (([], 0.0), (["--moment-positives", "all"], 1.0)):  # the command line's default too
        options = cli_options(build_parser().parse_args(argv + flags))
        (loaded,) = load_benchmark("mmeb-v2", tmp_path, ["QVHighlight"], **options)
        assert score_task(loaded, query_emb, docs, ids)[0]["hit@1"] == hit

    (task,) = load_mmeb_v2(tmp_path, ["QVHighlight"], num_clip_frames="all")
    (q,) = task.queries
    assert [frames_of(task.corpus[d]) for d in q.relevant] == [clips[last]]
    assert len(q.candidates) == 3

    ms = mret / "MomentSeeker" / "video_frames"
    source, positive, negative = video(ms / "movie_1", 70), video(ms / "movie_1_pos", 100), video(ms / "movie_1_neg", 5)
    jsonl(data / "momentseeker_1k6.jsonl", {"query": "the car stops", "input_frames": "movie/1.mp4",
                                            "positive_frames": [{"output_path": "movie/1_pos.mp4"}],
                                            "negative_frames": [{"output_path": "movie/1_neg.mp4"}]})
    (task,) = load_mmeb_v2(tmp_path, ["MomentSeeker"], num_frames=4)
    (q,) = task.queries
    assert q.item["images"] == source  # every saved frame, as VLM2Vec's parser loads them
    assert [frames_of(task.corpus[c]) for c in q.candidates] == [positive, negative]


# ----------------------------------------------------------------------------------------------------
# 6. candidate instructions: none by default, VLM2Vec's target instructions on request
# ----------------------------------------------------------------------------------------------------


def test_candidate_instructions(tmp_path):
    files = make_mmeb(tmp_path, "jsonl")
    names = ["MSCOCO_t2i", "MSR-VTT", "ViDoRe_arxivqa"]
    plain = {t.name: t for t in load_mmeb_v2(tmp_path, names, num_frames=4)}
    upstream = {t.name: t for t in load_mmeb_v2(tmp_path, names, num_frames=4, candidate_instruction="upstream")}
    assert sorted(plain["MSCOCO_t2i"].corpus.values()) == sorted(files[k] for k in "xyzw")
    assert {json.dumps(c, default=str) for c in upstream["MSCOCO_t2i"].corpus.values()} == {
        json.dumps({"instruction": "Represent the image.", "image": files[k]}, default=str) for k in "xyzw"}
    assert all(set(c) == {"images"} for c in plain["MSR-VTT"].corpus.values())
    assert all(c["instruction"] == "Understand the content of the provided video."
               for c in upstream["MSR-VTT"].corpus.values())
    assert upstream["ViDoRe_arxivqa"].corpus["0"] == {
        "instruction": "Understand the content of the provided document image.", "image": files["p0"]}
    assert plain["ViDoRe_arxivqa"].corpus["0"] == files["p0"]
    with pytest.raises(ValueError, match="candidate_instruction"):
        load_mmeb_v2(tmp_path, names, candidate_instruction="both")


# ----------------------------------------------------------------------------------------------------
# 7. the layouts of the published download scripts and configs; --check-data
# ----------------------------------------------------------------------------------------------------


def make_download_layout(root: Path) -> dict:
    """One task per published layout variant."""
    out = {}
    # download_data.sh moves mmeb_v1.tar.gz's MMEB/* up: image-tasks/ImageNet-1K/ holds IMAGES; the test
    # data is a snapshot of ziyjiang/MMEB_Test_Instruct in image-query/ (dataset_hflocal_path.py)
    out["a"] = write_png(root / "image-tasks" / "ImageNet-1K" / "a.png", "red")
    write_rows(root / "image-query" / "ImageNet-1K", "test-00000-of-00001", [
        {"qry_inst": "Represent the image:", "qry_text": "", "qry_img_path": "ImageNet-1K/a.png",
         "tgt_text": ["cat", "dog"], "tgt_img_path": ["", ""]}], "jsonl")
    frames = root / "video-tasks" / "frames"
    data = root / "video-tasks" / "data"
    # video_ret.tar.gz extracted into video_ret/ (as the 64-frame reproduction config points at it)
    out["msr"] = video(frames / "video_ret" / "data" / "ziyan" / "video_retrieval" / "MSR-VTT" / "frames" / "v1", 3)
    jsonl(data / "MSR-VTT" / "test_1k" / "test-00000-of-00001.jsonl", {"video_id": "v1", "caption": "a dog"})
    # video_qa parts extracted one level deeper, EgoSchema's frames lower-case
    out["ego"] = video(frames / "video_qa" / "video_qa" / "egoschema" / "e1", 2)
    jsonl(data / "EgoSchema" / "Subset" / "test-00000-of-00001.jsonl",
          {"video_idx": "e1", "question": "why?", "option": ["A. x", "B. y"], "answer": 0})
    # Charades-STA spelled as in the 64-frame config; its test data under the dataset's name
    cha = frames / "video_mret" / "Charades-STA" / "vidC"
    out["cha"] = video(cha / "query", 2)
    video(cha / "positive_0", 2), video(cha / "negative_0", 2)
    jsonl(data / "Charades-STA" / "test-00000-of-00001.jsonl", {"query": "opens a door", "video_path": "vidC.mp4"})
    # K700's test data under the Hugging Face dataset's name, VLM2Vec/Kinetics-700
    out["k700"] = video(frames / "video_cls" / "K700" / "k1", 2)
    jsonl(data / "Kinetics-700" / "test-00000-of-00001.jsonl", {"video_id": "k1", "pos_text": "abseiling"})
    # MomentSeeker as a local file momentseeker.jsonl
    ms = frames / "video_mret" / "MomentSeeker" / "video_frames"
    video(ms / "m_pos", 2), video(ms / "m_neg", 2)
    jsonl(data / "momentseeker.jsonl", {"query": "q", "input_frames": "", "positive_frames": [{"output_path": "m/pos"}],
                                        "negative_frames": [{"output_path": "m/neg"}]})
    # MMLongBench-page under VLM2Vec's older local folder name visdoc-tasks/data/MMLongBench
    out["page"] = write_png(root / "pages" / "p.png", "blue")
    vis = root / "visdoc-tasks" / "data" / "MMLongBench"
    write_rows(vis / "queries", "test", [{"query-id": "1", "query": "what?"}], "jsonl")
    write_rows(vis / "corpus", "test", [{"corpus-id": "p", "image": image_cell(out["page"], vis / "corpus", "jsonl")}],
               "jsonl")
    write_rows(vis / "qrels", "test", [{"query-id": "1", "corpus-id": "p", "score": 1}], "jsonl")
    return out


LAYOUT_TASKS = ["ImageNet-1K", "MSR-VTT", "EgoSchema", "Charades-STA", "K700", "MomentSeeker", "MMLongBench-page"]


def test_the_published_download_layouts_load(tmp_path, capsys):
    out = make_download_layout(tmp_path)
    t = {task.name: task for task in load_mmeb_v2(tmp_path, LAYOUT_TASKS)}
    assert t["ImageNet-1K"].queries[0].item["image"] == out["a"]  # image-tasks/ImageNet-1K: images, not data
    assert list(t["MSR-VTT"].corpus.values()) == [{"images": out["msr"]}]
    assert t["EgoSchema"].queries[0].item["images"] == out["ego"]
    assert t["Charades-STA"].queries[0].item["images"] == out["cha"]
    assert t["K700"].queries[0].item["images"] == out["k700"] and len(t["K700"].corpus) == 700
    assert len(t["MomentSeeker"].queries[0].candidates) == 2
    assert t["MMLongBench-page"].corpus["p"].read_bytes() == out["page"].read_bytes()

    assert main(["eval", "--benchmark", "mmeb-v2", "--check-data", str(tmp_path), "--tasks", *LAYOUT_TASKS]) == 0
    report = capsys.readouterr().out
    assert f"MMEB-V2 under {tmp_path}: 7 of 7 selected task(s) complete" in report
    assert "test data: image-query/ImageNet-1K; images: image-tasks" in report
    assert "frames: video-tasks/frames/video_qa/video_qa/egoschema" in report
    assert "huggingface-cli" not in report


def test_check_data_lists_what_is_missing_and_the_command_for_each_part(tmp_path, capsys):
    root = tmp_path / "mmeb"
    # image test data present, images not extracted
    write_rows(root / "image-query" / "ImageNet-1K", "test-00000-of-00001", [{"qry_text": "x"}], "jsonl")
    frames = root / "video-tasks" / "frames"
    frames.mkdir(parents=True)
    (frames / "video_cls.tar.gz").write_bytes(b"")  # downloaded, not extracted
    r = str(root)
    assert main(["eval", "--benchmark", "mmeb-v2", "--check-data", r, "--tasks", "ImageNet-1K", "HMDB51",
                 "UCF101", "ViDoRe_arxivqa", "MSVD"]) == 1  # no --model needed
    report = capsys.readouterr().out
    assert f"MMEB-V2 under {r}: 0 of 5 selected task(s) complete" in report
    assert "  missing  ImageNet-1K" in report and "test data: image-query/ImageNet-1K" in report
    assert ("images: MISSING (looked for image-tasks/MMEB, image-tasks/<Task>)") in report
    expected = [
        (f"huggingface-cli download TIGER-Lab/MMEB-V2 --repo-type dataset --include image-tasks/mmeb_v1.tar.gz "
         f"--local-dir {r} && tar -xzf {r}/image-tasks/mmeb_v1.tar.gz -C {r}/image-tasks"),
        (f"huggingface-cli download VLM2Vec/HMDB51 --repo-type dataset --exclude '*.mp4' '*.avi' '*.mkv' '*.zip' "
         f"'*.tar' '*.tar.gz' --local-dir {r}/video-tasks/data/HMDB51"),
        (f"mkdir -p {r}/video-tasks/frames/video_cls && tar -xzf {r}/video-tasks/frames/video_cls.tar.gz "
         f"-C {r}/video-tasks/frames/video_cls"),  # the archive is there: extraction only
        (f"huggingface-cli download vidore/arxivqa_test_subsampled_beir --repo-type dataset "
         f"--local-dir {r}/visdoc-tasks/data/arxivqa_test_subsampled_beir"),
        (f"huggingface-cli download TIGER-Lab/MMEB-V2 --repo-type dataset --include video-tasks/frames/video_ret.tar.gz "
         f"--local-dir {r} && mkdir -p {r}/video-tasks/frames/video_ret && tar -xzf "
         f"{r}/video-tasks/frames/video_ret.tar.gz -C {r}/video-tasks/frames/video_ret"),
    ]
    lines = report.splitlines()
    for command in expected:
        assert lines.count(command) == 1, command  # each command once, even when it serves several tasks
    assert "# frames (video-tasks/frames/video_cls.tar.gz), for HMDB51, UCF101" in report

    parts = check_mmeb_v2(root, ["HMDB51"])
    assert [(p.what, p.found) for p in parts] == [("test data", None), ("frames", None)]
    with pytest.raises(FileNotFoundError, match="check-data"):
        load_mmeb_v2(root, ["HMDB51"])

    assert main(["eval", "--benchmark", "mrmr", "--check-data", str(tmp_path / "mrmr")]) == 1
    report = capsys.readouterr().out
    assert (f"huggingface-cli download MRMRbenchmark/negation --repo-type dataset "
            f"--local-dir {tmp_path}/mrmr/negation") in report.splitlines()
    assert main(["eval", "--benchmark", str(tmp_path), "--check-data", str(tmp_path)]) == 2  # JSONL: no check
    assert main(["eval", "--benchmark", "mmeb-v2", "--data-root", r]) == 2  # no --model, no --check-data


def test_every_task_has_its_download_command(tmp_path):
    parts = check_mmeb_v2(tmp_path)
    assert {p.task for p in parts} == set(MMEB_V2_TASKS)
    assert all(p.found is None and p.command and "huggingface-cli download" in p.command for p in parts)


# ----------------------------------------------------------------------------------------------------
# 8. ties and negative grades
# ----------------------------------------------------------------------------------------------------


def test_ties_are_broken_by_document_id_not_by_list_position():
    assert rank(np.array([1.0, 2.0, 2.0, 1.0]), ["a", "b", "c", "d"]) == ["c", "b", "d", "a"]
    corpus = {d: d for d in ("a", "b", "c")}
    task = RetrievalTask("t", [Query("q1", "x", {"a": 1.0}, ["a", "b", "c"]),
                               Query("q2", "y", {"c": 1.0}, ["c", "b", "a"])], corpus)
    # a collapsed model: every score equal. Listing the positive first does not make it win.
    result, rankings = score_task(task, np.ones((2, 2)), np.ones((3, 2)), ["a", "b", "c"])
    assert rankings == {"q1": ["c", "b", "a"], "q2": ["c", "b", "a"]}
    assert result["hit@1"] == pytest.approx(0.5)


def test_negative_grades_count_as_zero():
    relevant = {"a": -1.0, "b": 1.0}
    assert ndcg_at_k(["a", "b"], relevant, 5) == pytest.approx(1 / math.log2(3))
    metrics = all_metrics(["a", "b"], relevant)
    assert metrics["hit@1"] == 0.0 and metrics["mrr"] == pytest.approx(0.5) and metrics["recall@1"] == 0.0


# ----------------------------------------------------------------------------------------------------
# MRMR
# ----------------------------------------------------------------------------------------------------


def test_mrmr_negation_ranks_each_query_against_its_own_four_documents(tmp_path):
    make_mrmr(tmp_path, "jsonl")
    (negation,) = load_mrmr(tmp_path, ["Negation"])
    n1, n2 = negation.queries
    assert n1.candidates == ["n1_1", "n1_2", "n1_3", "n1_4"] and n2.candidates == ["n2_1", "n2_2", "n2_3", "n2_4"]
    # n1 scores a description of n2 highest, then its own n1_1: a hit, since n2_3 is not among its four
    ids = list(negation.corpus)
    emb = np.zeros((2, len(ids)))
    emb[0, ids.index("n2_3")], emb[0, ids.index("n1_1")] = 0.9, 0.5
    emb[1, ids.index("n2_2")] = 0.7
    result, _ = score_task(negation, emb, np.eye(len(ids)), ids)
    assert result["hit@1"] == 1.0

    write_rows(tmp_path / "negation" / "corpus", "test-00000-of-00001",
               [{"id": "x_1", "modality": "text", "text": "t"}], "jsonl")
    write_rows(tmp_path / "negation" / "qrels", "test-00000-of-00001",
               [{"query-id": "n1", "corpus-id": "x_1", "score": 1}], "jsonl")
    with pytest.raises(ValueError, match="no corpus document n1_<k>"):
        load_mrmr(tmp_path, ["Negation"])


def test_mrmr_knowledge_pin_p_rows_are_distractors_and_images_go_to_the_cache(tmp_path, image_cache):
    root = tmp_path / "mrmr"
    make_mrmr(root, "parquet")
    write_rows(root / "knowledge" / "pin_p", "test-00000-of-00001", [
        {"id": "d9", "modality": "text", "text": "A page that only looks relevant."}], "parquet")
    write_rows(root / "knowledge" / "qrels", "test-00000-of-00001", [
        {"query_id": "q1", "corpus_id": "d1", "score": 2}, {"query_id": "q2", "corpus_id": "d3", "score": 1},
        {"query_id": "q2", "corpus_id": "d9", "score": 1}], "parquet")
    for sub, rows in (("query", [{"id": "t1", "modality": "text", "text": "Which law?", "category": "Physics"}]),
                      ("corpus", [{"id": "c1", "modality": "text", "text": "Ohm's law."}]),
                      ("pin_p", [{"id": "c2", "modality": "text", "text": "Newton's law."}]),
                      ("qrels", [{"query_id": "t1", "corpus_id": "c2", "score": 1}])):
        write_rows(root / "theorem" / sub, "test-00000-of-00001", rows, "parquet")

    knowledge, theorem = load_mrmr(root, ["Knowledge", "Theorem"])
    assert knowledge.corpus["pin_p-0"] == "A page that only looks relevant." and "d9" not in knowledge.corpus
    assert knowledge.queries[1].relevant == {"d3": 1.0, "d9": 1.0}  # d9's judgement matches no document
    assert theorem.corpus["c2"] == "Newton's law."  # Theorem's pin_p rows keep their ids, as MRMR's code
    assert theorem.queries[0].relevant == {"c2": 1.0}

    # images stored in the parquet files: extracted to the cache ($LAME_CACHE/images), never under the root
    assert knowledge.queries[0].item["image"].parent == image_cache
    assert not any(p.name.startswith(".") for p in root.iterdir())
    (knowledge,) = load_mrmr(root, ["Knowledge"], extract_dir=tmp_path / "mine")
    assert same_image(knowledge.queries[0].item["image"], root / "knowledge" / "images" / "C.png")
    assert knowledge.queries[0].item["image"].parent == tmp_path / "mine"


def test_lame_eval_scores_mmeb_v2_and_mrmr_items_end_to_end(tmp_path, saved_tiny_model, capsys):
    """The items the loaders build (frame lists, candidate instructions, MRMR's text + image) embed and
    score through the command line with the published options."""
    make_mmeb(tmp_path / "mmeb", "parquet" if importlib.util.find_spec("pyarrow") else "jsonl")
    out = tmp_path / "scores.json"
    saved_tiny_model = Path(shutil.copytree(saved_tiny_model, tmp_path / "model"))  # its card is written: a copy
    assert main(["eval", "--model", str(saved_tiny_model), "--benchmark", "mmeb-v2", "--data-root",
                 str(tmp_path / "mmeb"), "--tasks", "MSR-VTT", "Video-MME", "ViDoRe_arxivqa", "--num-frames", "2",
                 "--candidate-instruction", "upstream", "--image-cache", str(tmp_path / "img"), "--cache-dir", "",
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["tasks"]) == {"MSR-VTT", "Video-MME", "ViDoRe_arxivqa"}
    assert report["tasks"]["ViDoRe_arxivqa"]["metric"] == "ndcg@5"
    make_mrmr(tmp_path / "mrmr", "jsonl")
    assert main(["eval", "--model", str(saved_tiny_model), "--benchmark", "mrmr", "--data-root", str(tmp_path / "mrmr"),
                 "--tasks", "Knowledge", "Negation", "--cache-dir", "", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["tasks"]["Negation"]["num_queries"] == 2
    assert "overall" in capsys.readouterr().out


def cli_options(args) -> dict:
    """The loader options `lame eval` passes for these parsed arguments."""
    return from_options(BenchmarkOptions, args).loader_kwargs()

