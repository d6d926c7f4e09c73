"""Pretrain the reference digit VLM: a tiny Qwen2-VL that reads digits and reasons step by step.

LaME's premise is a VLM that can answer a question when it *generates* (a chain of thought), and the
question is whether an embedder can use that reasoning in ONE forward pass. This command builds such a
VLM for the offline digits benchmark: the upstream ``Qwen2VLForConditionalGeneration`` class at a tiny
size, trained from random initialisation with the ordinary next-token loss on

* captions: "Which digit is this?" -> "The image shows 3. The answer is three.";
* the benchmark's reasoning questions (levels 1-3), answered with the worked steps, e.g.
  "Add 3, then multiply by 2 (mod 10)." -> "The image shows 4. 4 plus 3 is 7. 7 times 2 is 14, which is
  4 mod 10. The answer is four.", or (``direct_answer_share`` of them) with the answer word alone, the
  way a VLM answers without thinking aloud; half of the questions are worded as the benchmark's
  retrieval instructions ("... Find an image of the result.");
* text-only arithmetic drills ("What is 7 times 2 (mod 10)?").

Queries are drawn afresh at every step from the TRAINING images only (random shifts of one pixel and
contrast jitter), with the benchmark's own question and rationale writers, so validation and test images
are never seen. A tiny Qwen3 causal LM, the stand-in for LaME's decoder head, is pretrained on the same
texts. The result is a normal Hugging Face folder (safetensors) with a model card, the training log and
``SHA256SUMS``.

Run ``OMP_NUM_THREADS=1 python -m lame_testbed.digit_vlm.pretrain OUTPUT_DIR`` (``--help`` for the
settings; the defaults are the shipped model's). On a 2-core CPU shared with other jobs the shipped run
took about 80 minutes with one thread (more threads were slower on the busy machine); a GPU is used
when there is one.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from lame.data.featurize import Featurizer, collate
from lame_testbed.digits import (
    NUMBER_WORDS,
    OPERANDS,
    UNARY_OPS,
    draw_query,
    instruction,
    rationale,
    render_digit,
    split_images,
)
from lame.modeling.adapters import get_adapter
from lame.modeling.tiny import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer, tiny_decoder

from .probe import probe, query_item

_WORD = {"add": "plus", "sub": "minus", "mul": "times"}
_APPLY = {"add": lambda x, k: x + k, "sub": lambda x, k: x - k, "mul": lambda x, k: x * k}


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that defines a pretraining run (saved in the model card and ``pretrain.json``)."""

    hidden_size: int = 128
    num_layers: int = 4
    vision_dim: int = 64
    vision_depth: int = 2
    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    image_size: int = 56  # the benchmark's PNG size; the processor keeps it (4x4 patches, 4 visual tokens)
    split_seed: int = 0  # the benchmark seed whose training images are used
    level_weights: tuple[float, ...] = (0.2, 0.2, 0.35, 0.25)  # share of each level among image queries
    text_drill_share: float = 0.1  # text-only arithmetic questions
    direct_answer_share: float = 0.4  # answers given as the number word alone (one pass) instead of worked steps
    instruction_share: float = 0.5  # image questions worded as the benchmark's retrieval instruction
    decoder_hidden_size: int = 64
    decoder_steps: int = 1500
    eval_every: int = 1000
    eval_queries_per_level: int = 100


def _augmented(array: np.ndarray, rng: random.Random) -> np.ndarray:
    """Shift by up to one pixel each way (on a 10x10 canvas) and scale the contrast by 0.8-1.2."""
    canvas = np.zeros((10, 10))
    canvas[1:9, 1:9] = array
    dy, dx = rng.randint(0, 2), rng.randint(0, 2)
    return np.clip(canvas[dy: dy + 8, dx: dx + 8] * rng.uniform(0.8, 1.2), 0, 16)


def text_drill(rng: random.Random) -> tuple[str, str]:
    """A text-only question on one operation and its worked answer."""
    name = rng.choice(UNARY_OPS)
    x, k = rng.randrange(10), rng.choice(OPERANDS[name])
    raw = _APPLY[name](x, k)
    answer = f"{x} {_WORD[name]} {k} is {raw}" + (f", which is {raw % 10} mod 10" if raw % 10 != raw else "")
    return f"What is {x} {_WORD[name]} {k} (mod 10)?", f"{answer}. The answer is {NUMBER_WORDS[raw % 10]}."


class QueryStream:
    """Endless (item, worked answer) pairs on the training images of the digits benchmark."""

    def __init__(self, settings: PretrainSettings, images: np.ndarray, labels: np.ndarray, pool: np.ndarray,
                 seed: int):
        self.settings = settings
        self.images, self.labels, self.pool = images, labels, pool
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    def image(self, index: int, augment: bool = True):
        array = _augmented(self.images[index], self.rng) if augment else self.images[index]
        return render_digit(array, self.settings.image_size)

    def pair(self) -> tuple[object, str]:
        if self.rng.random() < self.settings.text_drill_share:
            prompt, answer = text_drill(self.rng)
        else:
            level = self.rng.choices(range(len(self.settings.level_weights)), self.settings.level_weights)[0]
            indices, digits, ops, _ = draw_query(self.np_rng, level, self.pool, self.labels)
            text = None
            if self.rng.random() < self.settings.instruction_share:
                text = instruction(level, ops, self.rng.choice(("image", "text")))
            prompt, answer = query_item(level, ops, [self.image(i) for i in indices], text), rationale(ops, digits)
        if self.rng.random() < self.settings.direct_answer_share:
            answer = answer.rsplit("The answer is ", 1)[1].rstrip(".")  # the number word alone
        return prompt, answer

    def batch(self) -> list[tuple[object, str]]:
        return [self.pair() for _ in range(self.settings.batch_size)]


def lm_batch(featurizer: Featurizer, tokenizer, pairs: list[tuple[object, str]]) -> tuple[dict, torch.Tensor]:
    """Prompt + answer + <|im_end|>, left-padded; labels only on the answer tokens."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    features, answer_lengths = [], []
    for item, answer in pairs:
        f = featurizer(item)
        answer_ids = torch.tensor(tokenizer(answer, add_special_tokens=False)["input_ids"] + [end])
        f.input_ids = torch.cat([f.input_ids, answer_ids])
        features.append(f)
        answer_lengths.append(len(answer_ids))
    batch = collate(features, tokenizer.pad_token_id, featurizer.image_token_id)
    labels = torch.full_like(batch["input_ids"], -100)
    for row, n in enumerate(answer_lengths):
        labels[row, -n:] = batch["input_ids"][row, -n:]
    return batch, labels


def build_backbone(settings: PretrainSettings, tokenizer):
    adapter = get_adapter("qwen2_vl")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = adapter.tiny_config(len(tokenizer), ids, settings.hidden_size, settings.num_layers)
    config.vision_config.embed_dim = settings.vision_dim
    config.vision_config.depth = settings.vision_depth
    config.vision_config.num_heads = max(1, settings.vision_dim // 16)
    return adapter.model_class(config)


class Log:
    """Lines to stdout and to the run's log file."""

    def __init__(self, path: Path):
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, text: str) -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def _train(model, steps: int, lr: float, batches, loss_of, log: Log, what: str, every: int = 100,
           on_eval=None, eval_every: int = 0) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)
    model.train()
    started, smoothed = time.perf_counter(), None
    for step in range(1, steps + 1):
        loss = loss_of(next(batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        if step % every == 0 or step == steps:
            log(f"{what} step {step}/{steps} loss {smoothed:.4f} ({time.perf_counter() - started:.0f} s)")
        if on_eval is not None and eval_every and (step % eval_every == 0 or step == steps):
            on_eval(step)
            model.train()


def pretrain(output: Path, settings: PretrainSettings = PretrainSettings(), data_dir: Path | None = None) -> dict:
    """Trains the reference VLM and its decoder into ``output``; returns the final probe scores.

    ``data_dir`` is a generated digits benchmark (for the held-out queries the probe scores); one is
    generated next to ``output`` when not given.
    """
    output.mkdir(parents=True, exist_ok=True)
    log = Log(output / "pretrain.log")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log(f"settings: {json.dumps(asdict(settings))}")
    log(f"device: {device}, torch {torch.__version__}, {platform.platform()}, threads {torch.get_num_threads()}")
    if data_dir is None:
        data_dir = benchmark_next_to(output, settings.split_seed)
    images, labels, train_images = training_digits(settings.split_seed)

    torch.manual_seed(settings.seed)
    vlm = build_vlm(settings, device)
    log(f"backbone: {sum(p.numel() for p in vlm.model.parameters()):,} parameters; "
        f"{len(train_images)} training images")
    train_backbone(vlm, settings, QueryStream(settings, images, labels, train_images, settings.seed), data_dir, log)
    final = final_probe(vlm, data_dir, log)
    decoder, decoder_tokenizer = train_decoder(
        settings, QueryStream(settings, images, labels, train_images, settings.seed + 2), device, log)
    record = {"settings": asdict(settings), "probe": final, "data": str(data_dir),
              "parameters": {"backbone": sum(p.numel() for p in vlm.model.parameters()),
                             "decoder": sum(p.numel() for p in decoder.parameters())}}
    save_run(output, record, vlm, decoder, decoder_tokenizer, log)
    return final


def benchmark_next_to(output: Path, seed: int) -> Path:
    """The digits benchmark (its levels only: what the VLM learns) in ``.OUTPUT-benchmark`` beside
    ``output``, generated unless already there."""
    from lame_testbed.digits import generate_digits_benchmark

    data_dir = output.parent / f".{output.name}-benchmark"
    if not (data_dir / "summary.json").is_file():
        generate_digits_benchmark(data_dir, seed=seed, families=())
    return data_dir


def training_digits(split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All digit images, their labels and the indices of the benchmark's training images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = np.asarray(digits.target, dtype=np.int64)
    train_images, _, _ = split_images(labels, split_seed)
    return digits.images, labels, train_images


@dataclass
class VLM:
    """The backbone being pretrained and what turns items into its inputs."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    featurizer: Featurizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def build_vlm(settings: PretrainSettings, device: torch.device) -> VLM:
    """The reference VLM before pretraining: a randomly initialised tiny Qwen2-VL, its tokenizer and processor."""
    tokenizer = build_tiny_tokenizer()
    model = build_backbone(settings, tokenizer).to(device)
    adapter = get_adapter("qwen2_vl")
    image_processor = adapter.tiny_image_processor(settings.image_size ** 2, settings.image_size ** 2)
    featurizer = Featurizer(tokenizer, image_processor, [], 512, adapter.image_layout(image_processor, model.config))
    return VLM(model, tokenizer, image_processor, featurizer)


def train_backbone(vlm: VLM, settings: PretrainSettings, stream: QueryStream, data_dir: Path, log: Log) -> None:
    """Next-token loss on the answers of ``stream``; the probe on the validation queries every
    ``settings.eval_every`` steps."""
    def loss_of(pairs):
        batch, target = lm_batch(vlm.featurizer, vlm.tokenizer, pairs)
        batch = {k: v.to(vlm.device) for k, v in batch.items()}
        return vlm.model(**batch, labels=target.to(vlm.device)).loss

    def evaluate(step: int) -> None:
        scores = probe(vlm.model, vlm.featurizer, vlm.tokenizer, data_dir, "val", settings.eval_queries_per_level)
        log(f"probe on val at step {step}: " + ", ".join(f"level {k} {v['accuracy']:.3f}"
                                                          for k, v in scores.items()))

    _train(vlm.model, settings.steps, settings.lr, iter(stream.batch, None), loss_of, log, "backbone",
           on_eval=evaluate, eval_every=settings.eval_every)


def final_probe(vlm: VLM, data_dir: Path, log: Log) -> dict:
    """The probe on every validation and test query, per split and level."""
    final = {split: probe(vlm.model, vlm.featurizer, vlm.tokenizer, data_dir, split, None) for split in ("val", "test")}
    for split, result in final.items():
        log(f"final probe on {split}: " + ", ".join(f"level {k} {v['accuracy']:.3f} ({v['queries']} queries)"
                                                  for k, v in result.items()))
    return final


def train_decoder(settings: PretrainSettings, stream: QueryStream, device: torch.device, log: Log) -> tuple:
    """A tiny Qwen3 causal LM (the stand-in for LaME's decoder head) trained on the answers of ``stream``;
    returns it and its tokenizer."""
    tokenizer = build_tiny_tokenizer()
    decoder = tiny_decoder(tokenizer, settings.decoder_hidden_size).to(device)
    texts = random.Random(settings.seed + 1)

    def loss_of(pairs):
        answers = [answer for _, answer in pairs]
        # half of the texts are the answer word alone, as LaME's default decoder target is
        answers = [a.rsplit("The answer is ", 1)[-1].rstrip(".") if texts.random() < 0.5 else a for a in answers]
        ids, target = text_batch(tokenizer, answers)
        return decoder(input_ids=ids.to(device), attention_mask=(target != -100).long().to(device),
                       labels=target.to(device)).loss

    _train(decoder, settings.decoder_steps, settings.lr, iter(stream.batch, None), loss_of, log, "decoder")
    return decoder, tokenizer


def text_batch(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts + EOS, right-padded; labels on every real token, -100 on the padding."""
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), tokenizer.pad_token_id)
    target = torch.full((len(rows), length), -100)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        target[i, : len(r)] = torch.tensor(r)
    return ids, target


def save_run(output: Path, record: dict, vlm: VLM, decoder, decoder_tokenizer, log: Log) -> None:
    """The VLM, its decoder in ``decoder/``, ``pretrain.json``, then the model card and ``SHA256SUMS``
    (after the log is closed, so that its checksum is final)."""
    from .card import write_card

    vlm.model.eval().to("cpu").save_pretrained(output)
    vlm.tokenizer.save_pretrained(output)
    vlm.image_processor.save_pretrained(output)
    decoder.eval().to("cpu").save_pretrained(output / "decoder")
    decoder_tokenizer.save_pretrained(output / "decoder")
    (output / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"model card and checksums: {output / 'README.md'}, {output / 'SHA256SUMS'}")
    log.file.close()
    write_card(output, record, command=" ".join(["python -m lame_testbed.digit_vlm.pretrain", *sys.argv[1:]]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lame_testbed.digit_vlm.pretrain",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="folder for the model (created)")
    parser.add_argument("--data", type=Path, help="a generated digits benchmark (default: generated next to OUTPUT)")
    defaults = PretrainSettings()
    for f in fields(PretrainSettings):
        if f.name == "level_weights":
            parser.add_argument("--level-weights", type=float, nargs=4, default=list(defaults.level_weights))
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                                default=getattr(defaults, f.name))
    args = vars(parser.parse_args(argv))
    output, data = args.pop("output"), args.pop("data")
    args["level_weights"] = tuple(args["level_weights"])
    pretrain(output, PretrainSettings(**args), data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
