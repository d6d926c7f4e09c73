"""A tiny VLM that already "sees" digits: the stand-in for the pretrained VLM a real user starts from.

A randomly initialised tiny backbone of a real class is trained as a captioner (image -> number word)
and on number-word arithmetic in text, with the ordinary next-token loss on the answer tokens. LaME
and the baselines then start from this checkpoint; contrastive training from a random backbone
collapses (every embedding near one point), as it would for a real user starting from scratch.
The result is a normal Hugging Face folder, cached by its settings.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lame.data.featurize import Featurizer, collate
from lame.experiments.digits import NUMBER_WORDS as WORDS
from lame.modeling.adapters import get_adapter
from lame.modeling.tiny import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer, tiny_decoder
from .settings import PretrainSettings


def _caption_prompts(images, labels, rng: random.Random):
    """(item, answer) pairs: what digit is shown, and digit arithmetic in words."""
    pairs = []
    for image, label in zip(images, labels):
        pairs.append(({"image": image, "text": "Which digit is this?"}, WORDS[label]))
    for _ in range(len(images)):
        a, b = rng.randrange(10), rng.randrange(10)
        op, value = rng.choice([("plus", (a + b) % 10), ("minus", (a - b) % 10), ("times", (a * b) % 10)])
        pairs.append((f"{WORDS[a]} {op} {WORDS[b]} (mod 10)", WORDS[value]))
    return pairs


def pretrain_digit_vlm(images, labels, output: Path, settings: PretrainSettings = PretrainSettings(),
                       show_progress: bool = True, queries: list[tuple] = ()) -> Path:
    """Trains (or reuses, if ``output`` already holds it) the captioning tiny VLM; returns its folder.

    ``queries`` are extra (item, answer word) pairs, used when ``settings.with_queries`` is set.
    """
    done = output / "pretrain.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == settings.key():
        return output
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    adapter = get_adapter(settings.backbone_type)
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    model = adapter.model_class(adapter.tiny_config(len(tokenizer), ids, settings.hidden_size, settings.num_layers))
    image_processor = adapter.tiny_image_processor(settings.min_pixels, settings.max_pixels)
    featurizer = Featurizer(tokenizer, image_processor, [], 512, adapter.image_layout(image_processor, model.config))
    pairs = _caption_prompts(images, labels, rng) + [(item, answer) for item, answer, *_ in queries]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.steps, pct_start=0.1)
    model.train()
    bar = tqdm(range(settings.steps), desc="pretrain tiny VLM on digits", disable=not show_progress)
    for _ in bar:
        batch_pairs = rng.sample(pairs, settings.batch_size)
        batch, labels_tensor = _lm_batch(featurizer, tokenizer, batch_pairs)
        out = model(**batch, labels=labels_tensor)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
    accuracy = answer_accuracy(model, featurizer, tokenizer,
                               [{"image": image, "text": "Which digit is this?"} for image in images[:200]],
                               [WORDS[label] for label in labels[:200]])
    output.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(output)
    tokenizer.save_pretrained(output)
    image_processor.save_pretrained(output)
    decoder_dir = output / "decoder"
    tiny_decoder(tokenizer).save_pretrained(decoder_dir)
    tokenizer.save_pretrained(decoder_dir)
    done.write_text(json.dumps({"key": settings.key(), "settings": asdict(settings),
                                "train_caption_accuracy": accuracy}, indent=2))
    return output


def _lm_batch(featurizer: Featurizer, tokenizer, pairs):
    """Prompt + answer + end of turn (the tokenizer's EOS), loss only on the answer tokens (right after the prompt)."""
    features, answers = [], []
    end = tokenizer.eos_token_id
    for item, answer in pairs:
        f = featurizer(item)
        answer_ids = torch.tensor(tokenizer(answer, add_special_tokens=False)["input_ids"] + [end])
        f.input_ids = torch.cat([f.input_ids, answer_ids])
        features.append(f)
        answers.append(len(answer_ids))
    batch = collate(features, tokenizer.pad_token_id, featurizer.image_token_id)
    labels = torch.full_like(batch["input_ids"], -100)
    for row, n in enumerate(answers):
        labels[row, -n:] = batch["input_ids"][row, -n:]
    return batch, labels


@torch.inference_mode()
def answer_accuracy(model, featurizer: Featurizer, tokenizer, items, answers: list[str]) -> float:
    """How often the number word the VLM finds most likely after ``item``'s prompt is ``answer``."""
    was_training = model.training
    model.eval()
    correct = 0
    for item, answer in zip(items, answers):
        batch, target = _lm_batch(featurizer, tokenizer, [(item, word) for word in WORDS])
        logprobs = model(**batch).logits[:, :-1].log_softmax(-1)
        target = target[:, 1:]
        picked = logprobs.gather(2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores = (picked * (target != -100)).sum(1)
        correct += WORDS[int(scores.argmax())] == answer
    model.train(was_training)
    return correct / max(len(items), 1)
