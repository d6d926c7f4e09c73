"""The generative reference: can the tiny VLM itself answer the digits benchmark's queries?

A tiny VLM is pretrained as in the quickstart, optionally on the benchmark's training queries too
(image(s) + instruction -> answer word), and scored on held-out queries by the number word it finds
most likely. If a level stays at the image-only ceiling here, where the answer is supervised
directly, no embedding model built on this backbone at this budget can be expected to reason on it.

Run ``python -m lame.experiments.quickstart.probe --hidden-size 128 --num-layers 4 --steps 1000 --with-queries``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from lame.experiments.digits import image_only_ceiling
from lame.data.featurize import Featurizer
from lame.modeling.adapters import get_adapter
from .pretrain import PretrainSettings, answer_accuracy
from .run import answer_pairs, ensure_backbone, ensure_data


def generative_reference(settings: PretrainSettings, per_level: int = 100, show_progress: bool = True) -> dict:
    """Per level: accuracy of the pretrained VLM's answer word on the first ``per_level`` test queries."""
    from transformers import AutoTokenizer

    data_dir = ensure_data()
    folder = ensure_backbone(data_dir, settings, show_progress=show_progress)
    adapter = get_adapter(settings.backbone_type)
    model = adapter.model_class.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image_processor = adapter.tiny_image_processor(settings.min_pixels, settings.max_pixels)
    featurizer = Featurizer(tokenizer, image_processor, [], 512, adapter.image_layout(image_processor, model.config))
    pairs = answer_pairs(data_dir / "test" / "queries.jsonl", data_dir / "test", per_level=per_level)
    levels = sorted({level for _, _, level in pairs})
    result = {"settings": asdict(settings), "queries_per_level": per_level, "levels": {}}
    for level in levels:
        mine = [(item, answer) for item, answer, lv in pairs if lv == level]
        result["levels"][str(level)] = {
            "accuracy": answer_accuracy(model, featurizer, tokenizer, [i for i, _ in mine], [a for _, a in mine]),
            "image_only_ceiling": image_only_ceiling(level),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden-size", type=int, default=PretrainSettings.hidden_size)
    parser.add_argument("--num-layers", type=int, default=PretrainSettings.num_layers)
    parser.add_argument("--steps", type=int, default=PretrainSettings.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-queries", action="store_true", help="pretrain on the training queries' answers too")
    parser.add_argument("--per-level", type=int, default=100)
    args = parser.parse_args(argv)
    settings = PretrainSettings(hidden_size=args.hidden_size, num_layers=args.num_layers, steps=args.steps,
                                seed=args.seed, with_queries=args.with_queries)
    result = generative_reference(settings, args.per_level)
    for level, row in result["levels"].items():
        print(f"level {level}: answer accuracy {row['accuracy']:.3f}  (image-only ceiling {row['image_only_ceiling']:.3f})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
