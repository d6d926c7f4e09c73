"""`lame <verb>`: a thin command line; every verb calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(Path(args.output), backbone_type=args.backbone)
    return 0 if result["reload_identical"] else 1


def _train(args: argparse.Namespace) -> int:
    from .training import dry_run, load_recipe, train
    from .training.recipe import missing_paths

    recipe = load_recipe(args.recipe, args.set or [], check_paths=not args.dry_run)
    if not args.dry_run:
        print(f"trained model: {train(recipe, resume=args.resume)}")
        return 0
    missing = missing_paths(recipe)
    print(f"recipe {args.recipe}: valid ({len(recipe.stages)} stages)")
    for line in missing:
        print(f"  not on this machine: {line}")
    if any(line.startswith("model.") for line in missing):
        print("  model not built: its folder is missing; parameter groups are checked when it is present")
        return 0
    for stage in dry_run(recipe):
        print(f"stage {stage['stage']!r}: {stage['steps']} steps")
        for row in stage["groups"]:
            lr = f"  lr {row['lr']:.1e}" if row["lr"] else ""
            print(f"  {row['pattern']:<50} {row['parameters']:>14,d} params{lr}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .eval.benchmarks import load_benchmark
    from .eval.runner import evaluate, format_table, save_report
    from .modeling import LaMEModel

    tasks = load_benchmark(args.benchmark, args.data_root, args.tasks)
    model = LaMEModel.from_pretrained(args.model, device=args.device)
    report = evaluate(model, tasks, batch_size=args.batch_size, cache_dir=args.cache_dir, model_dir=args.model)
    report["model"], report["benchmark"] = str(args.model), args.benchmark
    print(format_table(report))
    output = Path(args.output or Path(args.model) / f"scores-{Path(args.benchmark).name}.json")
    save_report(report, output)
    print(f"scores written to {output}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from .quickstart.run import QuickstartSettings, format_report, run_quickstart

    settings = QuickstartSettings(seed=args.seed)
    report = run_quickstart(Path(args.output), settings)
    print(format_report(report))
    print(f"report: {args.output}/scores.json, {args.output}/quickstart.png, models in {args.output}/*/model")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lame", description="LaME: latent-reasoning multimodal embeddings")
    verbs = parser.add_subparsers(dest="verb", required=True)

    demo = verbs.add_parser("demo", help="embed, search, save and reload a tiny LaME model on digit images (CPU)")
    demo.add_argument("--output", default="lame-demo", help="folder for the saved model (default: lame-demo)")
    demo.add_argument("--backbone", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
    demo.set_defaults(func=_demo)

    train = verbs.add_parser("train", help="run a training recipe (YAML)")
    train.add_argument("recipe", help="recipe file, e.g. configs/tiny-digits.yaml")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set stages.0.steps=50 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint of output_dir")
    train.add_argument("--dry-run", action="store_true",
                       help="validate, build what can be built and print parameter groups; no training")
    train.set_defaults(func=_train)

    quick = verbs.add_parser("quickstart", help="train LaME and the K=0 baseline on digits and compare them (CPU)")
    quick.add_argument("--output", default="runs/quickstart", help="report folder (default: runs/quickstart)")
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(func=_quickstart)

    ev = verbs.add_parser("eval", help="score a model on a benchmark (MMEB-V2, MRMR or a JSONL folder)")
    ev.add_argument("--model", required=True, help="saved LaME model folder")
    ev.add_argument("--benchmark", required=True, help="mmeb-v2, mrmr, or a JSONL benchmark folder")
    ev.add_argument("--data-root", help="folder holding the named benchmark's files")
    ev.add_argument("--tasks", nargs="+", help="only these tasks")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--cache-dir", default=".lame-cache/embeddings", help="embedding cache ('' to disable)")
    ev.add_argument("--output", help="scores JSON (default: MODEL/scores-<benchmark>.json)")
    ev.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    ev.set_defaults(func=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.items import ItemError
    from .training.recipe import RecipeError

    try:
        return args.func(args)
    except (RecipeError, ItemError, FileNotFoundError, ValueError) as exc:
        print(f"lame {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
