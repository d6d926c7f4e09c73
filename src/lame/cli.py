"""`lame <verb>`: a thin command line; every verb calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(Path(args.output), backbone_type=args.backbone)
    return 0 if result["reload_identical"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lame", description="LaME: latent-reasoning multimodal embeddings")
    verbs = parser.add_subparsers(dest="verb", required=True)

    demo = verbs.add_parser("demo", help="embed, search, save and reload a tiny LaME model on digit images (CPU)")
    demo.add_argument("--output", default="lame-demo", help="folder for the saved model (default: lame-demo)")
    demo.add_argument("--backbone", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
