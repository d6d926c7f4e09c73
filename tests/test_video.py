"""Native video: frame sampling (natural order, linspace, no padding), decoding with PyAV, the item
forms, the upstream video patch layout, and the backbone's own video input in the three families."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from helpers import noise
from PIL import Image
from tolerances import FORWARD, float32_sum, float64_sum

from lame import LaMEConfig, build_tiny_model
from lame.data.items import ItemError, resolve_paths, to_item
from lame.data.video import UNKNOWN_FPS_SPACING, Video, load_video, natural_key, sample_indices
from lame.extras import MissingExtra
from lame.modeling.adapters import get_adapter, tiny_families

COLOURS = [(10 * i, 255 - 10 * i, (37 * i) % 256) for i in range(12)]


def frame_folder(folder, count=12, size=(64, 48)):
    """Frames named frame_1 ... frame_12 (natural order differs from text order), solid colours."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, COLOURS[i]).save(folder / f"frame_{i + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    return folder


def write_video(path, count=10, fps=5, size=(64, 48)):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(count):
            frame = av.VideoFrame.from_image(Image.new("RGB", size, COLOURS[i]))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def colour(frame: Image.Image) -> tuple:
    return tuple(int(c) for c in np.asarray(frame).reshape(-1, 3).mean(0).round())


def nearest(frame: Image.Image) -> int:
    values = np.asarray(colour(frame))
    return int(np.argmin([np.abs(values - np.asarray(c)).sum() for c in COLOURS]))


def test_sampling_is_natural_order_and_linspace_without_padding(tmp_path):
    assert sorted(["frame_10.png", "frame_2.png", "Frame_1.png"], key=natural_key) == \
        ["Frame_1.png", "frame_2.png", "frame_10.png"]
    assert sample_indices(12, 4) == [0, 3, 7, 11]
    assert sample_indices(3, 8) == [0, 1, 2]  # fewer frames than asked: all of them, none repeated
    folder = frame_folder(tmp_path / "clip")
    video = load_video(folder, num_frames=4)
    assert [nearest(f) for f in video.frames] == [0, 3, 7, 11]
    assert video.timestamps == [0.0, UNKNOWN_FPS_SPACING, 2 * UNKNOWN_FPS_SPACING, 3 * UNKNOWN_FPS_SPACING]
    assert load_video(folder, num_frames=4, fps=2).timestamps == [0.0, 1.5, 3.5, 5.5]  # frame index / fps
    assert len(load_video(folder, num_frames=20).frames) == 12


def test_a_video_file_is_decoded_with_pyav(tmp_path):
    path = write_video(tmp_path / "clip.mp4")
    video = load_video(path, num_frames=4)
    assert [nearest(f) for f in video.frames] == [0, 3, 6, 9]
    # index / 5 fps: a frame's pts times the stream's time base, rounded to float64 at most twice
    np.testing.assert_allclose(video.timestamps, [0.0, 0.6, 1.2, 1.8], atol=float64_sum(2, scale=1.8), rtol=0)
    assert video.size == (64, 48)


def test_without_pyav_a_video_file_names_the_extra(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(MissingExtra, match=r"needs the 'video' extra: pip install 'lame\[video\]'"):
        load_video(path)
    assert len(load_video(frame_folder(tmp_path / "frames")).frames) == 8  # folders need no extra


def test_item_forms_and_their_errors(tmp_path):
    folder = frame_folder(tmp_path / "clip")
    item = to_item({"video": folder, "num_frames": 3, "text": "what happens", "instruction": "Find it."})
    assert [type(p).__name__ for p in item.parts] == ["Video", "str"] and len(item.videos[0].frames) == 3
    item = to_item({"parts": ["before", {"video": folder, "num_frames": 2}, {"image": noise((8, 8), 1)}, "after"]})
    assert [type(p).__name__ for p in item.parts] == ["str", "Video", "Image", "str"]
    record = resolve_paths({"video": "clip", "parts": [{"video": "clip", "num_frames": 2}]}, tmp_path)
    assert record["video"] == folder and record["parts"][0] == {"video": folder, "num_frames": 2}
    for bad, reason in [({"video": tmp_path / "absent.mp4"}, "does not exist"),
                        ({"video": folder, "num_frames": 0}, "num_frames"),
                        ({"text": "x", "num_frames": 4}, "go with a 'video'"),
                        ({"video": tmp_path / "empty"}, "no frame images")]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(ItemError, match=reason):
            to_item(bad, 0)


def upstream_patchify(frames: np.ndarray, patch: int, merge: int, tp: int) -> np.ndarray:
    """The upstream Qwen2-VL video processor's layout of normalised (T, C, H, W) frames, written out."""
    t, c, h, w = frames.shape
    if t % tp:
        frames = np.concatenate([frames, np.repeat(frames[-1:], tp - t % tp, 0)])
    gt, gh, gw = frames.shape[0] // tp, h // patch, w // patch
    x = frames.reshape(gt, tp, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * tp * patch * patch)


@pytest.mark.parametrize("family", tiny_families())
def test_video_patches_are_laid_out_as_upstream(family):
    model = build_tiny_model(family, config=LaMEConfig(num_reason_tokens=1, use_decoder=False))
    processor, adapter = model.image_processor, get_adapter(family)
    side = processor.patch_size * processor.merge_size * 2  # a frame size the processor keeps as it is
    video = Video([noise((side, side), 20 + i) for i in range(3)], [0.0, 0.5, 1.0])
    inputs = adapter.video_inputs(video, processor)
    mean, std = np.asarray(processor.image_mean)[:, None, None], np.asarray(processor.image_std)[:, None, None]
    frames = np.stack([(np.asarray(f, dtype=np.float32).transpose(2, 0, 1) / 255 - mean) / std for f in video.frames])
    expected = upstream_patchify(frames, processor.patch_size, processor.merge_size, processor.temporal_patch_size)
    # float32 rescaling and normalisation (a few roundings of values <= 1, then divided by std) against float64
    bound = float32_sum(5, scale=float((1 / std).max()))
    np.testing.assert_allclose(inputs["pixel_values_videos"].numpy(), expected, atol=bound, rtol=0)
    assert inputs["video_grid_thw"].tolist() == [[2, side // processor.patch_size, side // processor.patch_size]]
    # a still video of two identical frames is exactly what the image processor makes of that frame
    still = adapter.video_inputs(Video([video.frames[0]] * 2, [0.0, 0.5]), processor)
    torch.testing.assert_close(still["pixel_values_videos"],
                               processor(images=[video.frames[0]], return_tensors="pt")["pixel_values"], atol=0, rtol=0)


@pytest.mark.parametrize("family", tiny_families())
def test_the_backbone_reads_a_video_as_a_video(family, tmp_path):
    model = build_tiny_model(family, config=LaMEConfig(num_reason_tokens=2, use_decoder=False))
    folder = frame_folder(tmp_path / "clip")
    item = {"video": folder, "num_frames": 4, "text": "what happens?"}
    features = model.featurizer(item)
    assert features.pixel_values is None and features.video_grid_thw[0, 0] == 2  # 4 frames, 2 per temporal patch
    batch = model.collate([features, model.featurizer("text")])
    assert int((batch["mm_token_type_ids"] == 2).sum()) == int((features.input_ids == model.featurizer.video_token_id).sum())
    assert ("second_per_grid_ts" in batch) == (family == "qwen2_5_vl")
    text = model.tokenizer.decode(features.input_ids)
    assert ("<0.2 seconds><|vision_start|>" in text) == (family == "qwen3_vl")  # Qwen3-VL writes the times
    emb = model.encode([item, "what happens?", item])
    assert np.isfinite(emb).all()
    assert np.allclose(emb[0], emb[2], atol=FORWARD, rtol=0)  # the same item twice in one batch
    assert not np.allclose(emb[0], emb[1], atol=FORWARD, rtol=0)  # another item
    # a video is more than its first frame and its frames' order matters
    reversed_frames = Video(list(reversed(load_video(folder, 4).frames)), [0.0, 0.5, 1.0, 1.5])
    assert not np.allclose(model.encode([{"video": reversed_frames, "text": "what happens?"}])[0], emb[0], atol=FORWARD,
                           rtol=0)
    # gradients reach the vision tower through the video input
    model.train()
    out = model(model.collate([features]))
    out.embeddings.sum().backward()
    assert model.backbone.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0


def test_a_long_video_is_sized_to_the_budget(tmp_path):
    """An item over max_length because of its video frames gets them downscaled until it fits."""
    folder = frame_folder(tmp_path / "clip", size=(224, 224))
    item = {"video": folder, "num_frames": 8, "text": "what happens?"}
    roomy = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=2, use_decoder=False))
    full = roomy.featurizer(item)
    assert full.video_grid_thw[0].tolist() == [4, 4, 4]  # 4 patch groups of 2x2 merged tokens: 16 tokens
    tight = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=2, use_decoder=False,
                                                           max_length=len(full) - 8))
    fitted = tight.featurizer(item)
    assert len(fitted) <= len(full) - 8 and fitted.video_grid_thw[0].tolist() == [4, 2, 2]
    assert np.isfinite(tight.encode([item])).all()


def test_jsonl_training_records_name_videos_relative_to_the_file(tmp_path):
    from lame.training.data import JsonlSource

    frame_folder(tmp_path / "videos" / "clip")
    (tmp_path / "train.jsonl").write_text(json.dumps(
        {"query": {"video": "videos/clip", "num_frames": 2, "text": "describe"}, "positive": "colours"}) + "\n")
    example = JsonlSource(tmp_path / "train.jsonl").read(0)
    assert len(to_item(example.query).videos[0].frames) == 2


def test_the_frame_budget_is_part_of_the_fingerprint():
    plain = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=1, use_decoder=False))
    again = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=1, use_decoder=False))
    small = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=1, use_decoder=False,
                                                           video_max_pixels=28 * 28))
    assert plain.fingerprint() == again.fingerprint() != small.fingerprint()
