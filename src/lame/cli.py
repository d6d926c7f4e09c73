"""`lame <verb>`: every verb is a few lines that call the library.

Options are declared once: the knobs of a settings dataclass (``ServeSettings``, ``BenchmarkOptions``,
``PlanSettings``) become flags through :mod:`lame.cli_options`. Other packages add verbs through the
``lame.commands`` entry-point group (the testbed adds ``quickstart`` and ``bench``). Building the
parser imports neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from importlib.metadata import entry_points
from pathlib import Path

from .cli_options import add_options, from_options
from .elastic_options import ElasticOptions


def main(argv: list[str] | None = None) -> int:
    """Runs one verb. A :class:`lame.errors.UserError` (bad recipe, item, option or missing path) is
    printed as one line with exit status 2; any other exception is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    from .errors import UserError

    try:
        return args.func(args)
    except UserError as exc:
        # an error every process of a distributed run raises alike is printed once, by the main process
        if not getattr(exc, "every_process", False) or int(os.environ.get("RANK", "0")) == 0:
            print(f"lame {args.verb}: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lame", description="LaME: latent-reasoning multimodal embeddings")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for add in (_add_demo, _add_train, _add_eval, _add_encode, _add_data, _add_index, _add_search, _add_serve):
        add(verbs)
    for entry in sorted(entry_points(group="lame.commands"), key=lambda e: e.name):
        entry.load()(verbs)  # e.g. lame_testbed.commands.add_commands: quickstart, bench ...
    return parser


def tiny_family(value: str) -> str:
    """An argparse type: a backbone family with a tiny config (the registry is read only when given)."""
    from .modeling.adapters import tiny_families

    if value not in tiny_families():
        raise argparse.ArgumentTypeError(f"no tiny config for {value!r}; choose from {', '.join(tiny_families())}")
    return value


# ------------------------------------------------------------------------------------------- demo
def _add_demo(verbs) -> None:
    demo = verbs.add_parser("demo", help="embed, search, save and reload a tiny LaME model on digit images (CPU)")
    demo.add_argument("--output", default="lame-demo", help="folder for the saved model (default: lame-demo)")
    demo.add_argument("--backbone", default="qwen2_vl", type=tiny_family, help="tiny backbone family (default: qwen2_vl)")
    demo.set_defaults(func=_demo)


def _demo(args) -> int:
    from .demo import run_demo

    return 0 if run_demo(Path(args.output), backbone_type=args.backbone)["reload_identical"] else 1


# ------------------------------------------------------------------------------------------ train
def _add_train(verbs) -> None:
    from .training.recipe import PlanSettings

    train = verbs.add_parser("train", help="run a training recipe (YAML)")
    train.add_argument("recipe", help="recipe file, e.g. configs/tiny-digits.yaml")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set stages.0.steps=50 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint of output_dir")
    train.add_argument("--dry-run", action="store_true", help="validate, build what can be built and print parameter "
                       "groups and the estimated peak memory per process and stage; no training")
    add_options(train.add_argument_group("--dry-run memory plan"), PlanSettings)
    train.set_defaults(func=_train)


def _train(args) -> int:
    from .training import dry_run, load_recipe, train
    from .training.memory import format_dry_run
    from .training.recipe import PlanSettings, missing_paths

    recipe = load_recipe(args.recipe, args.set, check_paths=not args.dry_run)
    if args.dry_run:
        stages = dry_run(recipe, from_options(PlanSettings, args))
        print(format_dry_run(args.recipe, recipe, stages, missing_paths(recipe)))
        return 0
    model_dir = train(recipe, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained model: {model_dir}")
    return 0


# ------------------------------------------------------------------------------------------- eval
def _add_eval(verbs) -> None:
    from .eval.options import BenchmarkOptions

    ev = verbs.add_parser("eval", help="score a model on a benchmark (MMEB-V2, MRMR or a JSONL folder)")
    ev.add_argument("--model", help="saved LaME model folder (required, except with --check-data)")
    ev.add_argument("--benchmark", required=True, help="mmeb-v2, mrmr, or a JSONL benchmark folder")
    ev.add_argument("--data-root", help="folder holding the named benchmark's files")
    ev.add_argument("--tasks", nargs="+", help="only these tasks")
    ev.add_argument("--check-data", metavar="ROOT", help="mmeb-v2 / mrmr: list which parts are under ROOT, which are "
                    "missing and the command that downloads each; nothing is embedded (exit status 1 when a part "
                    "is missing)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--cache-dir", default=".lame-cache/embeddings", help="embedding cache ('' to disable)")
    ev.add_argument("--output", help="scores JSON (default: MODEL/scores-<benchmark>.json)")
    ev.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
    ev.add_argument("--no-card", action="store_true",
                    help="do not write the scores into MODEL/README.md (its model-index and results table)")
    add_options(ev.add_argument_group("protocol (docs/benchmarks.md: which published setting each default follows)"),
                BenchmarkOptions)
    ev.set_defaults(func=_eval)


def _eval(args) -> int:
    from .errors import InvalidInput
    from .eval.loaders import check_benchmark_data
    from .eval.options import BenchmarkOptions
    from .eval.runner import format_table
    from .eval.saved import evaluate_saved_model

    if args.check_data is not None:  # what is there and how to get the rest; no model, no embedding
        parts, report = check_benchmark_data(args.benchmark, args.check_data, args.tasks)
        print(report)
        return 0 if all(p.found for p in parts) else 1
    if not args.model:
        raise InvalidInput("lame eval: --model is required (except with --check-data)")
    report, path = evaluate_saved_model(
        args.model, args.benchmark, args.data_root, args.tasks, from_options(BenchmarkOptions, args).loader_kwargs(),
        args.batch_size, args.cache_dir, args.device, args.output, update_card=not args.no_card)
    print(format_table(report))
    print(f"scores written to {path}")
    return 0


# ------------------------------------------------------------------------------------ encode, data
def _add_encode(verbs) -> None:
    enc = verbs.add_parser("encode", help="embed a JSONL corpus into float32 shards (resumable; data-parallel "
                                          "under accelerate launch / torchrun)")
    enc.add_argument("--model", required=True, help="saved LaME model folder")
    enc.add_argument("--input", required=True, help='JSONL, one {"id", "item"} record a line (or BEIR/MTEB '
                     '{"_id", "title", "text"}, or {"id", "text"} / {"id", "image"}; docs/serving.md)')
    enc.add_argument("--output", required=True, help="folder for the shards, manifest and skipped-items report")
    enc.add_argument("--batch-size", type=int, default=32)
    enc.add_argument("--shard-size", type=int, default=10_000, help="records per shard (default: 10000)")
    enc.add_argument("--max-shards", type=int, help="stop each process after this many new shards (resume later)")
    add_options(enc, ElasticOptions, defaults=ElasticOptions.DEFAULTS)
    enc.set_defaults(func=_encode)


def _encode(args) -> int:
    from accelerate import PartialState

    from .embed import encode_corpus
    from .embed.encode import describe_manifest

    manifest = encode_corpus(args.model, args.input, args.output, batch_size=args.batch_size,
                             shard_size=args.shard_size, max_shards=args.max_shards,
                             **asdict(from_options(ElasticOptions, args)))
    if PartialState().is_main_process:
        print(describe_manifest(manifest, args.output))
    return 0


def _add_data(verbs) -> None:
    from .data.convert_options import ConvertOptions

    data = verbs.add_parser("data", help="training data: convert published training sets to training JSONL")
    convert = data.add_subparsers(dest="data_verb", required=True).add_parser(
        "convert", help="MMEB-train, the VLM2Vec-V2 video and visual-document sources -> training JSONL "
                        "(streamed; image paths checked; a summary of counts and skipped rows)")
    convert.add_argument("format", choices=["mmeb-train", "llavahound-caption", "llavahound-video", "llavahound-qa",
                                            "vidore", "visrag"])
    convert.add_argument("source", help="the local copy: MMEB-train's snapshot folder, a LLaVA-Hound JSONL, or a "
                                        "folder/parquet file of the ColPali or VisRAG set")
    convert.add_argument("output", help="folder for the JSONL files (one per subset or source)")
    add_options(convert, ConvertOptions)
    convert.set_defaults(func=_data_convert)


def _data_convert(args) -> int:
    from dataclasses import asdict

    from .data.convert import convert, describe_summaries
    from .data.convert_options import ConvertOptions

    summaries = convert(args.format, args.source, args.output, **asdict(from_options(ConvertOptions, args)))
    print(describe_summaries(summaries, args.output))
    return 0


# ----------------------------------------------------------------------------- index, search, serve
def _add_index(verbs) -> None:
    from .index.settings import IndexBuildSettings

    index = verbs.add_parser("index", help="index `lame encode` output: FAISS shards in a folder, or a Milvus "
                                           "collection")
    build = index.add_subparsers(dest="index_verb", required=True).add_parser(
        "build", help="build an index (FAISS folder, or Milvus Lite file / server / cluster; docs/serving.md)")
    build.add_argument("--embeddings", required=True, help="folder written by `lame encode`")
    add_options(build, IndexBuildSettings)
    build.set_defaults(func=_index)


def _index(args) -> int:
    from .index import build_index
    from .index.settings import IndexBuildSettings

    settings = from_options(IndexBuildSettings, args)
    index = build_index(args.embeddings, settings)
    if index is None:
        print(f"stopped after {settings.max_batches} batch(es) (--max-batches): run the same command again to go on")
    else:
        where = args.output if settings.backend == "faiss" else str(index.location)
        shards = f" in {len(index.shards)} shard(s)" if settings.backend == "faiss" else ""
        print(f"{index.kind} index of {len(index)} vectors (dim {index.dim}){shards}: {where}")
    return 0


INDEX_HELP = ("an index: a folder written by `lame index build`, or a Milvus collection as URI[#COLLECTION] (a .db "
              "file, or http(s)://host:19530 with its token in $LAME_MILVUS_TOKEN; collection default: lame)")


def _add_search(verbs) -> None:
    se = verbs.add_parser("search", help="top-k ids and scores of one query against an index")
    se.add_argument("--model", required=True, help="saved LaME model folder (the one that encoded the corpus)")
    se.add_argument("--index", required=True, help=INDEX_HELP)
    query = se.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", help="a text query")
    query.add_argument("--image", help="an image file as the query")
    query.add_argument("--json", help='an item as JSON, e.g. \'{"text": "...", "image": "x.png"}\'')
    se.add_argument("--k", type=int, default=10)
    se.add_argument("--json-output", action="store_true", help="print JSON instead of a table")
    se.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
    add_options(se, ElasticOptions, defaults=ElasticOptions.DEFAULTS | {"dimensions": "the index's"})
    se.set_defaults(func=_search)


def _search(args) -> int:
    import json

    from .index import format_hits, open_index, query_item, search
    from .modeling import LaMEModel

    item = query_item(args.query, args.image, args.json)
    index = open_index(args.index)
    model = LaMEModel.from_pretrained(args.model, device=args.device)
    note = index.check_model(model)  # another model or dimension: refused before anything is embedded
    if note:
        print(f"lame search: note: {note}", file=sys.stderr)
    hits = search(model, index, [item], k=args.k, **asdict(from_options(ElasticOptions, args)))[0]
    print(json.dumps(hits) if args.json_output else format_hits(hits))
    return 0


def _add_serve(verbs) -> None:
    from .serve.settings import ServeSettings

    sv = verbs.add_parser("serve", help="OpenAI-compatible embeddings server (FastAPI + uvicorn), see docs/serving.md")
    sv.add_argument("--model", required=True, help="saved LaME model folder")
    sv.add_argument("--index", help=INDEX_HELP.replace("an index:", "enables POST /v1/search on an index:"))
    sv.add_argument("--ui", action="store_true", help="serve a search page at / (query by text and/or image; hits "
                    "with thumbnails; the query's decoded latents)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
    sv.add_argument("--threads", type=int, help="torch CPU threads (default: one per core but one)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_options(sv, ServeSettings)
    add_options(sv.add_argument_group("what a request embeds with unless it says (num_reason_tokens, dimensions)"),
                ElasticOptions, defaults=ElasticOptions.DEFAULTS | {"dimensions": "the full size; /v1/search: "
                                                                                   "the index's"})
    sv.set_defaults(func=_serve)


def _serve(args) -> int:
    from .serve import ServeSettings, load_app, serve

    settings = from_options(ServeSettings, args, model_name=Path(args.model).name,
                            api_key=os.environ.get("LAME_API_KEY"), **asdict(from_options(ElasticOptions, args)))
    serve(load_app(args.model, settings, args.index, device=args.device, ui=args.ui), args.host, args.port,
          args.log_level, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
