"""MMEB-V2 video tasks (18): classification, retrieval, moment retrieval and QA, from frame folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import InvalidInput, MissingPath
from .common import MMEBTask, _as_list, _Context, _Entry, _positive_first, _require, _where, make_item
from .files import _natural_key

# Query instructions of the video parsers in VLM2Vec src/data/eval_dataset/*.py (the image tasks carry
# theirs in the data, field qry_inst), and the target instructions (TASK_INST_TGT) those parsers define
# for candidates, used only with candidate_instruction="upstream".
_VIDEO_QA_PROMPT = ("Given a video and a question, select the most accurate answer from the provided "
                    "candidates. Return only the exact text of your chosen answer. Question:")
_MOMENT_PROMPT = "Find the clip that corresponds to the described scene in the given video:"
_VIDEO_TARGET = "Understand the content of the provided video."
_CLIP_TARGET = "Understand the content of the provided video clip."


def _ret(name: str) -> tuple[str, ...]:
    """Frame folders of a video-retrieval set: VLM2Vec's public configs (``video_ret/<name>``) or what
    ``video_ret.tar.gz`` extracts to (``video_ret/data/ziyan/video_retrieval/<name>/frames``)."""
    return (f"video_ret/{name}/frames", f"video_ret/data/ziyan/video_retrieval/{name}/frames", f"video_ret/{name}")


def _qa(*names: str) -> tuple[str, ...]:
    """Frame folders of a video-QA set: ``video_qa/<name>`` or, as the 64-frame reproduction config has
    it, ``video_qa/video_qa/<name>``."""
    return tuple(f"video_qa/{n}" for n in names) + tuple(f"video_qa/video_qa/{n}" for n in names)


# name: (subcategory, eval_type, parser,
#        frame folders under video-tasks/frames (first existing one wins),
#        test-data names under video-tasks/data (folder or file; first existing one wins),
#        Hugging Face dataset of the test data (VLM2Vec src/constant/dataset_hf_path.py), params)
VIDEO_TASKS = {
    "SmthSmthV2": ("classification", "local", "ssv2", ("video_cls/SSv2",), ("SmthSmthV2", "ssv2.jsonl"),
                   "VLM2Vec/SmthSmthV2",
                   {"num_samples": 1000,  # num_sample_per_subset of every published video config
                    "instruction": "What actions or object interactions are being performed by the person "
                                   "in the video?"}),
    "HMDB51": ("classification", "global", "video_cls", ("video_cls/HMDB51",), ("HMDB51", "hmdb51.jsonl"),
               "VLM2Vec/HMDB51",
               {"instruction": "What actions or objects interactions are the person in the video doing?"}),
    "UCF101": ("classification", "global", "video_cls", ("video_cls/UCF101",), ("UCF101", "ucf101.jsonl"),
               "VLM2Vec/UCF101",
               {"instruction": "What activities or sports are being performed by the person in the video?"}),
    "K700": ("classification", "global", "video_cls", ("video_cls/K700", "video_cls/Kinetics-700"),
             ("K700", "Kinetics-700", "k700.jsonl"), "VLM2Vec/Kinetics-700",
             {"instruction": "Recognize the category of the video content."}),
    "Breakfast": ("classification", "global", "video_cls", ("video_cls/Breakfast",),
                  ("Breakfast", "breakfast.jsonl"), "VLM2Vec/Breakfast",
                  {"instruction": "Recognize the breakfast type that the person is cooking in the video."}),
    "MSR-VTT": ("retrieval", "global", "video_ret", _ret("MSR-VTT"), ("MSR-VTT", "msr-vtt.jsonl"),
                "VLM2Vec/MSR-VTT",
                {"config": "test_1k", "video": "video_id", "text": "caption", "target": _VIDEO_TARGET,
                 "instruction": "Find a video that contains the following visual content:"}),
    "MSVD": ("retrieval", "global", "video_ret", _ret("MSVD"), ("MSVD", "msvd.jsonl"), "VLM2Vec/MSVD",
             {"video": "video_id", "text": "caption", "target": _VIDEO_TARGET,
              "instruction": "Find the video snippet that corresponds to the given summary:"}),
    "DiDeMo": ("retrieval", "global", "video_ret", _ret("DiDeMo"), ("DiDeMo", "didemo.jsonl"), "VLM2Vec/DiDeMo",
               {"video": "video", "video_is_path": True, "text": "caption", "target": _VIDEO_TARGET,
                "instruction": "Find a video that includes the following described scenes:"}),
    "YouCook2": ("retrieval", "global", "video_ret", _ret("YouCook2"), ("YouCook2", "youcook2-val.jsonl"),
                 "lmms-lab/YouCook2",
                 {"split": "val", "video": "id", "text": "sentence", "target": _VIDEO_TARGET,
                  "instruction": "Find a video that demonstrates the following action while making a "
                                 "recipe:"}),
    "VATEX": ("retrieval", "global", "video_ret", _ret("VATEX"), ("VATEX", "vatex.jsonl"), "VLM2Vec/VATEX",
              {"video": "videoID", "text": "enCap", "target": _VIDEO_TARGET,
               "instruction": "Select a video that fits the description provided:"}),
    "QVHighlight": ("moment", "local", "moment", ("video_mret/QVHighlight",), ("QVHighlight", "qvhighlight.jsonl"),
                    "VLM2Vec/QVHighlight", {"instruction": _MOMENT_PROMPT, "target": _VIDEO_TARGET}),
    "Charades-STA": ("moment", "local", "moment", ("video_mret/Charades_STA", "video_mret/Charades-STA"),
                     ("Charades-STA", "Charades_STA", "charades_sta.jsonl"), "VLM2Vec/Charades-STA",
                     {"instruction": _MOMENT_PROMPT, "target": _VIDEO_TARGET}),
    "MomentSeeker": ("moment", "local", "momentseeker", ("video_mret/MomentSeeker",),
                     ("MomentSeeker", "momentseeker_1k6.jsonl", "momentseeker.jsonl"), "VLM2Vec/MomentSeeker",
                     {"instruction_text": "Find the clip that corresponds to the given text:",
                      "instruction_image": "Select the video clip that aligns with the given text and image:",
                      "instruction_video": "Find the clip that corresponds to the given sentence and video "
                                           "segment:",
                      "target": _CLIP_TARGET}),
    "Video-MME": ("qa", "local", "videomme", _qa("Video-MME"), ("Video-MME", "video-mme.jsonl"),
                  "VLM2Vec/Video-MME", {"instruction": _VIDEO_QA_PROMPT}),
    "NExTQA": ("qa", "local", "nextqa", _qa("NExTQA"), ("NExTQA", "nextqa.jsonl"), "VLM2Vec/NExTQA",
               {"config": "MC", "instruction": _VIDEO_QA_PROMPT}),
    "EgoSchema": ("qa", "local", "egoschema", _qa("EgoSchema", "egoschema"),
                  ("EgoSchema", "egoschema.jsonl", "egoschema"), "VLM2Vec/EgoSchema",
                  {"config": "Subset", "instruction": _VIDEO_QA_PROMPT}),
    "MVBench": ("qa", "local", "mvbench", _qa("MVBench"), ("MVBench", "mvbench"), "VLM2Vec/MVBench",
                {"split": "train", "instruction": _VIDEO_QA_PROMPT}),
    "ActivityNetQA": ("qa", "local", "activitynetqa", _qa("ActivityNetQA"),
                      ("ActivityNetQA", "activitynetqa.jsonl"), "VLM2Vec/ActivityNetQA",
                      {"instruction": _VIDEO_QA_PROMPT}),
}


def _parse_video_cls(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/{HMDB51,UCF101,Kinetics-700,Breakfast}: video_id, pos_text (the label). The candidate pool
    of the global task is the fixed label list (``_assemble``), not only the labels of the test file."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_id", "pos_text"], where)
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video_id"]), where)
        query = make_item("", frames, spec.params["instruction"])
        entries.append(_Entry(f"q{i}", query, [str(row["pos_text"])], [0],
                              {"video_id": str(row["video_id"])}))
    return entries


def _parse_ssv2(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/SmthSmthV2: video_id, pos_text, neg_text (the whole option list, positive included)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_id", "pos_text", "neg_text"], where)
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video_id"]), where)
        positive = str(row["pos_text"])
        options = [positive] + [str(c) for c in _as_list(row["neg_text"]) if str(c) != positive]
        entries.append(_Entry(f"q{i}", make_item("", frames, spec.params["instruction"]), options, [0],
                              {"video_id": str(row["video_id"])}))
    return entries


def _parse_video_ret(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/{MSR-VTT,MSVD,DiDeMo,VATEX}, lmms-lab/YouCook2: a caption (or caption list: the first one) and
    the video it describes; the video is its frame folder."""
    p = spec.params
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, [p["video"], p["text"]], where)
        video = str(row[p["video"]])
        if p.get("video_is_path"):
            video = Path(video).stem
        captions = _as_list(row[p["text"]])
        if not captions:
            raise InvalidInput(f"{where}: empty {p['text']!r}")
        frames = ctx.frames(spec, ctx.frames_root(spec) / video, where)
        query = make_item(str(captions[0]).strip(), (), p["instruction"])
        entries.append(_Entry(f"q{i}", query, [make_item("", frames, ctx.target(spec))], [0],
                              {"video_id": video}))
    return entries


def _parse_moment(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/{QVHighlight,Charades-STA}: query, video_path. Frames: <video>/query/ is the query video
    (``num_frames`` of its frames), every other sub-folder a candidate clip (``num_clip_frames`` of its
    frames, VLM2Vec's num_clip_frames). Relevant: by default (``moment_positives="last"``) only the last
    ``positive*`` folder in directory-listing order, the one label per query of VLM2Vec's published
    parser (other positive clips stay candidates, not relevant); with ``"all"`` every ``positive*`` clip."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["query", "video_path"], where)
        video_dir = ctx.frames_root(spec) / Path(str(row["video_path"])).stem
        if not video_dir.is_dir():
            raise MissingPath(f"{where}: frame folder {video_dir} does not exist")
        query = make_item(str(row["query"]).strip(), ctx.frames(spec, video_dir / "query", where),
                          spec.params["instruction"])
        listed = [d for d in (video_dir / name for name in os.listdir(video_dir))
                  if d.is_dir() and d.name != "query"]
        clips = sorted(listed, key=lambda d: (not d.name.startswith("positive"), _natural_key(d.name)))
        positive_dirs = [d for d in listed if d.name.startswith("positive")]
        if not positive_dirs:
            raise MissingPath(f"{where}: no positive* clip folder in {video_dir}")
        if ctx.moment_positives == "last":  # VLM2Vec: ``pos_clip_name`` is overwritten in os.listdir order
            positive_dirs = positive_dirs[-1:]
        positives = [k for k, d in enumerate(clips) if d in positive_dirs]
        candidates = [make_item("", ctx.frames(spec, d, where, ctx.num_clip_frames), ctx.target(spec))
                      for d in clips]
        entries.append(_Entry(f"q{i}", query, candidates, positives, {"video_id": video_dir.name}))
    return entries


def _clip_name(path: str) -> str:
    return str(path).split(".mp4")[0].replace("/", "_")


def _parse_momentseeker(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/MomentSeeker: query, input_frames ('' | <video>.mp4 | <image>.jpg), positive_frames and
    negative_frames ([{output_path}]); clip frames in video_frames/<output_path, '/' -> '_', no .mp4>.
    Query videos and clips use every saved frame, as VLM2Vec's parser does (no sampling)."""
    p, root = spec.params, ctx.frames_root(spec)
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["query", "positive_frames", "negative_frames"], where)
        source = str(row.get("input_frames") or "")
        text = str(row["query"]).strip()
        if source.endswith(".mp4"):
            query = make_item(text, ctx.frames(spec, root / "video_frames" / _clip_name(source), where, None),
                              p["instruction_video"])
        elif source.endswith(".jpg"):
            image = ctx.images.file(Path(f"query_{source}"), root, where)
            query = make_item(text, [image], p["instruction_image"])
        else:
            query = make_item(text, (), p["instruction_text"])

        def clips(value: Any) -> list[str]:
            return [str(c["output_path"] if isinstance(c, dict) else c) for c in _as_list(value)]

        positive, negative = clips(row["positive_frames"]), clips(row["negative_frames"])
        if not positive:
            raise InvalidInput(f"{where}: no positive clip")
        candidates = [make_item("", ctx.frames(spec, root / "video_frames" / _clip_name(c), where, None),
                                ctx.target(spec))
                      for c in positive + negative]
        entries.append(_Entry(f"q{i}", query, candidates, list(range(len(positive)))))
    return entries


def _option_text(option: str) -> str:
    """A Video-MME / EgoSchema option without its letter, as VLM2Vec cuts it: from the first ". " on, with
    dots and spaces stripped at both ends ("A. Soup." -> "Soup"). An option without ". " keeps only its
    last character there, which this reproduces."""
    return option[option.find(". "):].strip(". ")


def _options_block(question: str, options: list[str]) -> str:
    """VLM2Vec's qa_template: question, "Options:" and one "(A) option" line each, trailing space cut."""
    lines = [f"({chr(ord('A') + k)}) {o}" for k, o in enumerate(options)]
    return (question + "\nOptions:\n" + "\n".join(lines)).rstrip()


def _qa_entry(spec: MMEBTask, i: int, frames: list[Path], text: str, options: list[str], answer: int,
              where: str, meta: dict) -> _Entry:
    if not 0 <= answer < len(options):
        raise InvalidInput(f"{where}: answer index {answer} outside the {len(options)} options")
    candidates, positives = _positive_first([str(o) for o in options], answer)
    return _Entry(f"q{i}", make_item(text, frames, spec.params["instruction"]), candidates, positives, meta)


def _parse_videomme(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/Video-MME: question, videoID, options ['A. ...', ...], answer (a letter)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["question", "videoID", "options", "answer"], where)
        options = [str(o) for o in _as_list(row["options"])]
        letter = str(row["answer"]).strip()
        if len(letter) != 1 or not letter.isalpha():
            raise InvalidInput(f"{where}: answer {row['answer']!r} is not an option letter")
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["videoID"]), where)
        text = str(row["question"]) + "\n" + "\n".join(options)
        meta = {k: row[k] for k in ("question_id", "domain", "sub_category") if k in row}
        entries.append(_qa_entry(spec, i, frames, text, [_option_text(o) for o in options],
                                 ord(letter.upper()) - ord("A"), where, meta))
    return entries


def _parse_nextqa(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/NExTQA (config MC): video, question, answer (index), a0..a4. Candidates are the plain
    answers (VLM2Vec builds the "(A) ..." lines for the query only)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video", "question", "answer", "a0", "a1", "a2", "a3", "a4"], where)
        options = [str(row[f"a{k}"]) for k in range(5)]
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video"]), where)
        meta = {k: row[k] for k in ("qid", "type") if k in row}
        text = _options_block(str(row["question"]), options)
        entries.append(_qa_entry(spec, i, frames, text, options, int(row["answer"]), where, meta))
    return entries


def _parse_egoschema(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/EgoSchema (config Subset): video_idx, question, option [...], answer (index). The query text
    is the question immediately followed by the options joined by single spaces (VLM2Vec: question +
    ' '.join(options), no space after the question)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_idx", "question", "option", "answer"], where)
        options = [str(o) for o in _as_list(row["option"])]
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video_idx"]), where)
        text = str(row["question"]) + " ".join(options)
        meta = {"question_idx": row["question_idx"]} if "question_idx" in row else {}
        entries.append(_qa_entry(spec, i, frames, text, [_option_text(o) for o in options],
                                 int(row["answer"]), where, meta))
    return entries


def _parse_activitynetqa(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/ActivityNetQA (the yes/no subset): video_name, question, answer ('yes' | 'no')."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_name", "question", "answer"], where)
        answer = str(row["answer"]).strip().lower()
        if answer not in ("yes", "no"):
            raise InvalidInput(f"{where}: answer {row['answer']!r} is neither 'yes' nor 'no'")
        frames = ctx.frames(spec, ctx.frames_root(spec) / f"v_{row['video_name']}", where)
        text = str(row["question"]) + "? (A) yes; (B) no."
        entries.append(_qa_entry(spec, i, frames, text, ["yes", "no"], ["yes", "no"].index(answer), where,
                                 {"question_id": row["question_id"]} if "question_id" in row else {}))
    return entries


def _parse_mvbench(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/MVBench: one config (or <subset>.json) per subset; question, video, candidates, answer (text).
    Frames in <subset>/<video>/. Candidates keep VLM2Vec's option template: "(A) 1", "(B) 2", ..."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["question", "video", "candidates", "answer"], where)
        subset = row.get("subset")
        if not subset:  # the config folder (or <subset>.json file) the row came from
            source = Path(row["_source"])
            base = next((b for b in ctx.data_paths(spec) if b in source.parents), source.parent)
            rel = source.relative_to(base)
            subset = rel.parts[0] if len(rel.parts) > 1 else source.stem
        options = [str(c) for c in _as_list(row["candidates"])]
        answer = str(row["answer"])
        if answer not in options:
            raise InvalidInput(f"{where}: answer {answer!r} is not among the candidates {options}")
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(subset) / str(row["video"]), where)
        text = _options_block(str(row["question"]), options)
        templated = [f"({chr(ord('A') + k)}) {o}" for k, o in enumerate(options)]
        entries.append(_qa_entry(spec, i, frames, text, templated, options.index(answer), where,
                                 {"subset": str(subset)}))
    return entries


VIDEO_PARSERS: dict[str, Callable[[MMEBTask, list[dict], _Context], list[_Entry]]] = {
    "video_cls": _parse_video_cls,
    "ssv2": _parse_ssv2,
    "video_ret": _parse_video_ret,
    "moment": _parse_moment,
    "momentseeker": _parse_momentseeker,
    "videomme": _parse_videomme,
    "nextqa": _parse_nextqa,
    "egoschema": _parse_egoschema,
    "activitynetqa": _parse_activitynetqa,
    "mvbench": _parse_mvbench,
}
