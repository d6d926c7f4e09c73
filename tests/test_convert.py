"""``lame data convert``: the published training sets, in fixture folders written here in their released
layouts (MMEB-train's per-subset parquet files and image folder, LLaVA-Hound's conversation JSONL and
frame folders, the ColPali and VisRAG parquet files with images inside), to training JSONL that trains."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import noise, read_jsonl

from lame.cli import main
from lame.data.convert import VLM2VEC_V2_MIXTURE, convert, split_instruction
from lame.data.items import to_item
from lame.training.data import JsonlSource
from lame.training.recipe import load_recipe, recipe_from_dict
from lame.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def png(seed: int, size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    noise(size, seed).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)


def mmeb_train(root: Path) -> Path:
    """Two subsets; images under root/images (one referenced image missing); a train- file beside the
    original- one (another split, not read)."""
    for i in range(4):
        (root / "images" / "ImageNet_1K").mkdir(parents=True, exist_ok=True)
        noise((20, 20), i).save(root / "images" / "ImageNet_1K" / f"n{i}.jpg")
        (root / "images" / "CIRR").mkdir(parents=True, exist_ok=True)
        noise((20, 20), 10 + i).save(root / "images" / "CIRR" / f"c{i}.png")
    classes = ["tench", "goldfish", "tench", "tiger shark"]
    write_parquet(root / "ImageNet_1K" / "original-00000-of-00001.parquet", [
        {"qry": "<|image_1|>\nRepresent the given image for classification", "qry_image_path": f"images/ImageNet_1K/n{i}.jpg",
         "pos_text": classes[i], "pos_image_path": "", "neg_text": "", "neg_image_path": ""} for i in range(4)
    ] + [{"qry": "<|image_1|>\nRepresent the given image for classification", "qry_image_path": "images/ImageNet_1K/gone.jpg",
          "pos_text": "tench", "pos_image_path": "", "neg_text": "", "neg_image_path": ""},
         {"qry": "", "qry_image_path": "", "pos_text": "tench", "pos_image_path": "", "neg_text": "", "neg_image_path": ""}])
    write_parquet(root / "ImageNet_1K" / "train-00000-of-00001.parquet", [
        {"qry": "other split", "qry_image_path": "", "pos_text": "x", "pos_image_path": ""}])
    write_parquet(root / "CIRR" / "original-00000-of-00001.parquet", [
        {"qry": "<|image_1|>\nGiven an image, find a similar everyday image with the described changes: make it red",
         "qry_image_path": f"images/CIRR/c{i}.png", "pos_text": "<|image_1|>\nRepresent the given image.",
         "pos_image_path": f"images/CIRR/c{(i + 1) % 4}.png"} for i in range(4)])
    return root


def llavahound(root: Path) -> tuple[Path, Path]:
    frames = root / "train_300k"
    for video in ("v1", "v2", "v3"):
        (frames / video).mkdir(parents=True)
        for k in range(6):
            noise((28, 28), k).save(frames / video / f"c01_{k + 1}.jpeg")
    rows = [{"id": f"v{i}-cap", "video": f"v{i}", "conversations": [
        {"from": "human", "value": "<video>\nProvide a detailed description of the video."},
        {"from": "gpt", "value": f"a clip number {i} with moving noise"}]} for i in (1, 2, 3, 4)]  # v4 has no frames
    source = root / "video_caption_300k.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    return source, frames


def documents(root: Path) -> tuple[Path, Path]:
    vidore = root / "colpali_train_set" / "data" / "train-00000-of-00001.parquet"
    write_parquet(vidore, [
        {"query": f"what is the total in table {i}?", "image": {"bytes": png(i), "path": f"page{i}.png"},
         "image_filename": f"page{i}.png", "answer": f"{i * 10} dollars", "answer_type": "extractive",
         "source": "pdf", "options": None, "page": "1", "model": "m", "prompt": "p"} for i in range(3)
    ] + [{"query": "broken", "image": {"bytes": b"not an image", "path": "x.png"}, "image_filename": "x.png",
          "answer": "y", "answer_type": "", "source": "", "options": None, "page": "", "model": "", "prompt": ""}])
    visrag = root / "VisRAG" / "data" / "train-00000-of-00001.parquet"
    write_parquet(visrag, [{"query": f"revenue in {2000 + i}", "image": {"bytes": png(20 + i), "path": None},
                            "source": "PlotQA"} for i in range(3)])
    return vidore.parents[1], visrag.parents[1]


def test_split_instruction_keeps_the_content():
    assert split_instruction("<|image_1|>\nRepresent the given image.", True) == ("Represent the given image.", "")
    assert split_instruction("Find me an everyday image that matches the given caption: A man: on a bike", False) == \
        ("Find me an everyday image that matches the given caption:", "A man: on a bike")
    assert split_instruction("Photo: a cat", False) == (None, "Photo: a cat")  # a caption, not an instruction
    assert split_instruction("tench", False) == (None, "tench")


def test_mmeb_train_subsets_become_training_jsonl(tmp_path):
    root = mmeb_train(tmp_path / "MMEB-train")
    out = tmp_path / "out"
    summaries = {s.name: s for s in convert("mmeb-train", root, out, image_root=root)}
    assert set(summaries) == {"ImageNet_1K", "CIRR"}
    imagenet = summaries["ImageNet_1K"]
    assert (imagenet.read, imagenet.written) == (6, 4)  # the other split's file is not read
    assert dict(imagenet.skipped) == {"image file missing": 1, "empty query or positive": 1}
    assert imagenet.examples["image file missing"] == "row 5 of original-00000-of-00001.parquet"
    records = read_jsonl(out / "ImageNet_1K.jsonl")
    assert records[0]["query"] == {"instruction": "Represent the given image for classification",
                                   "image": "../MMEB-train/images/ImageNet_1K/n0.jpg"}
    assert records[0]["positive"] == "tench" and records[0]["label"] == "tench"
    cirr = read_jsonl(out / "CIRR.jsonl")[0]
    assert cirr["query"]["text"] == "make it red" and cirr["query"]["instruction"].startswith("Given an image")
    assert cirr["positive"] == {"instruction": "Represent the given image.", "image": "../MMEB-train/images/CIRR/c1.png"}
    source = JsonlSource(out / "CIRR.jsonl")
    example = source.read(0)
    assert to_item(example.query).images and to_item(example.positives[0]).images  # paths resolve
    assert example.decoder_target("answer") is None  # no boilerplate for the decoder
    assert JsonlSource(out / "ImageNet_1K.jsonl").read(0).decoder_target("answer") == "tench"
    report = json.loads((out / "convert-summary.json").read_text())
    assert report["ImageNet_1K"]["skipped"] == {"image file missing": 1, "empty query or positive": 1}
    assert len(read_jsonl(out / "CIRR.jsonl")) == 4
    assert [s.written for s in convert("mmeb-train", root, tmp_path / "capped", max_rows=2)] == [2, 2]


def test_video_sources_become_native_video_records(tmp_path):
    source, frames = llavahound(tmp_path)
    out = tmp_path / "out"
    (caption,) = convert("llavahound-caption", source, out, video_root=frames, num_frames=4)
    assert (caption.read, caption.written) == (5, 3) and caption.output.endswith("video_caption_300k.jsonl")
    assert dict(caption.skipped) == {"frame folder missing or empty": 1, "not a JSON object": 1}
    record = read_jsonl(out / "video_caption_300k.jsonl")[0]
    assert record["query"] == {"instruction": "Provide a detailed description of the video.",
                               "video": "../train_300k/v1", "num_frames": 4}
    assert record["positive"] == "a clip number 1 with moving noise"
    (retrieval,) = convert("llavahound-video", source, out, video_root=frames)
    back = read_jsonl(out / "video_caption_300k-video.jsonl")[0]
    assert back["query"]["text"] == "a clip number 1 with moving noise" and back["positive"]["video"] == "../train_300k/v1"
    example = JsonlSource(out / "video_caption_300k-video.jsonl").read(0)
    assert example.decoder_target("answer") == "a clip number 1 with moving noise"  # the caption field
    assert len(to_item(example.positives[0]).videos[0].frames) == 6 < 8  # fewer frames than asked: all of them


def test_document_sources_write_their_images(tmp_path):
    vidore, visrag = documents(tmp_path)
    out = tmp_path / "out"
    (colpali,) = convert("vidore", vidore, out)
    assert (colpali.read, colpali.written) == (4, 3) and dict(colpali.skipped) == {"image bytes that are not an image": 1}
    record = read_jsonl(out / "colpali_train_set.jsonl")[0]
    assert record["positive"] == "0 dollars" and record["query"]["text"] == "what is the total in table 0?"
    assert (out / record["query"]["image"]).is_file()
    (pages,) = convert("visrag", visrag, out)
    example = JsonlSource(out / "visrag-indomain.jsonl").read(2)
    assert to_item(example.positives[0]).images and to_item(example.query).text == "revenue in 2002"


def test_converted_sources_train_as_a_mixture(tmp_path, capsys):
    root = mmeb_train(tmp_path / "MMEB-train")
    source, frames = llavahound(tmp_path)
    out = tmp_path / "data"
    assert main(["data", "convert", "mmeb-train", str(root), str(out), "--image-root", str(root)]) == 0
    assert main(["data", "convert", "llavahound-qa", str(source), str(out), "--video-root", str(frames),
                 "--num-frames", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ImageNet_1K: 4 of 6 rows written" in printed and "video_qa_240k: 3 of 5 rows written" in printed
    assert f"- {{path: {out / 'CIRR.jsonl'}, weight: 0.5}}" in printed
    weights = {m.name: m.weight for m in VLM2VEC_V2_MIXTURE}
    raw = {"model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny", "lame": {"num_reason_tokens": 2}},
           "data": {"sources": [{"path": str(out / f"{n}.jsonl"), "weight": weights[n]}
                                for n in ("ImageNet_1K", "CIRR", "video_qa_240k")]},
           "train": {"output_dir": str(tmp_path / "run"), "tensorboard": False, "featurize_workers": 0},
           "stages": [{"name": "s", "steps": 2, "batch_size": 3,
                       "trainable": [{"pattern": "latent_embeddings", "lr": 1e-3}]}]}
    trainer = Trainer(recipe_from_dict(raw, tmp_path), show_progress=False)
    assert trainer.run() is not None and trainer.progress.skipped == 0


def test_the_mixture_recipe_is_the_published_mixture():
    recipe = load_recipe(CONFIGS / "vlm2vec-v2-mixture.yaml", check_paths=False)
    assert [(Path(s.path).stem, s.weight) for s in recipe.data.sources] == \
        [(m.name, m.weight) for m in VLM2VEC_V2_MIXTURE]
    assert len(VLM2VEC_V2_MIXTURE) == 25 and sum(m.format == "mmeb-train" for m in VLM2VEC_V2_MIXTURE) == 20


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert("mmeb-train", tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no subset folder with parquet files"):
        convert("mmeb-train", tmp_path / "empty", tmp_path / "out")
    source, _ = llavahound(tmp_path / "v")
    with pytest.raises(ValueError, match="--video-root"):
        convert("llavahound-qa", source, tmp_path / "out")


def test_a_source_of_which_no_row_converts_is_an_error_naming_the_first_reasons(tmp_path, capsys):
    source, frames = llavahound(tmp_path)
    out = tmp_path / "out"
    convert("llavahound-caption", source, out, video_root=frames)  # a good conversion first
    before = (out / "video_caption_300k.jsonl").read_text()
    (tmp_path / "no-frames").mkdir()
    argv = ["data", "convert", "llavahound-caption", str(source), str(out), "--video-root", str(tmp_path / "no-frames")]
    assert main(argv) == 2  # every frame folder missing: nothing to train on
    (error,) = capsys.readouterr().err.splitlines()
    assert error.startswith("lame data: error: no row of video_caption_300k could be converted (5 read, 5 refused); "
                            "first reasons: video_caption_300k.jsonl:1: frame folder missing or empty; "
                            "video_caption_300k.jsonl:5: not a JSON object")
    assert (out / "video_caption_300k.jsonl").read_text() == before  # the earlier file is kept, not emptied
    assert json.loads((out / "convert-summary.json").read_text())["video_caption_300k"]["written"] == 0

    root = mmeb_train(tmp_path / "MMEB-train")  # one subset converts, the other has no image where it says
    shutil.rmtree(root / "images" / "CIRR")
    with pytest.raises(ValueError, match=r"^no row of CIRR could be converted \(4 read, 4 refused\); first reasons: "
                                         r"row 1 of original-00000-of-00001.parquet: image file missing"):
        convert("mmeb-train", root, tmp_path / "mmeb", image_root=root)
    assert len(read_jsonl(tmp_path / "mmeb" / "ImageNet_1K.jsonl")) == 4 and not (tmp_path / "mmeb" / "CIRR.jsonl").exists()
