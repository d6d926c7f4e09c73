"""`lame <verb>`: a thin command line; every verb calls the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import DTYPES


def _demo(args: argparse.Namespace) -> int:
    from .experiments.demo import run_demo

    result = run_demo(Path(args.output), backbone_type=args.backbone)
    return 0 if result["reload_identical"] else 1


def _train(args: argparse.Namespace) -> int:
    from .training import dry_run, load_recipe, train
    from .training.recipe import missing_paths

    recipe = load_recipe(args.recipe, args.set or [], check_paths=not args.dry_run)
    if not args.dry_run:
        model_dir = train(recipe, resume=args.resume)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"trained model: {model_dir}")
        return 0
    missing = missing_paths(recipe)
    print(f"recipe {args.recipe}: valid ({len(recipe.stages)} stages)")
    for line in missing:
        print(f"  not on this machine: {line}")
    if any(line.startswith("model.") for line in missing):
        print("  model folders missing: architecture from lame's copy of their config.json, no weights (meta device)")
    from .training.memory import PlanSettings, format_plan

    plan = PlanSettings(world=args.processes, seq_len=args.seq_len, image_tokens=args.image_tokens,
                        gpu_memory_gib=args.gpu_memory)
    for stage in dry_run(recipe, plan):
        print(f"stage {stage['stage']!r}: {stage['steps']} steps")
        for row in stage["groups"]:
            lr = f"  lr {row['lr']:.1e}" if row["lr"] else ""
            print(f"  {row['pattern']:<50} {row['parameters']:>14,d} params{lr}")
        print(format_plan(stage["memory"]))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .errors import InvalidInput
    from .eval.loaders import check_benchmark_data, load_benchmark
    from .eval.runner import evaluate, format_table, save_report

    if args.check_data is not None:  # what is there and how to get the rest; no model, no embedding
        parts, report = check_benchmark_data(args.benchmark, args.check_data, args.tasks)
        print(report)
        return 0 if all(p.found for p in parts) else 1
    if not args.model:
        raise InvalidInput("lame eval: --model is required (except with --check-data)")
    from .modeling import LaMEModel

    tasks = load_benchmark(args.benchmark, args.data_root, args.tasks, **_benchmark_options(args))
    model = LaMEModel.from_pretrained(args.model, device=args.device)
    report = evaluate(model, tasks, batch_size=args.batch_size, cache_dir=args.cache_dir, model_dir=args.model)
    report["model"], report["benchmark"] = str(args.model), args.benchmark
    print(format_table(report))
    output = Path(args.output or Path(args.model) / f"scores-{Path(args.benchmark).name}.json")
    save_report(report, output)
    print(f"scores written to {output}")
    if not args.no_card:
        from .integrations.card import add_eval_results

        try:
            card = add_eval_results(args.model, report, Path(args.benchmark).name)
        except OSError as exc:  # a read-only model folder: the scores file is written, the card is not
            print(f"lame eval: the model card was not updated ({exc}); --no-card skips it", file=sys.stderr)
        else:
            print(f"model card updated: {card} (model-index and table for {Path(args.benchmark).name})")
    return 0


def _benchmark_options(args: argparse.Namespace) -> dict:
    """The loader options given on the command line (None: not given, the loader's default applies)."""
    from .errors import InvalidInput

    eval_type = None
    if args.eval_type:
        eval_type = {}
        for pair in args.eval_type:
            name, sep, value = pair.partition("=")
            if not sep:
                raise InvalidInput(f"--eval-type takes TASK=local or TASK=global, got {pair!r}")
            eval_type[name] = value
    return {
        "num_frames": args.num_frames, "num_clip_frames": args.num_clip_frames, "num_samples": args.num_samples,
        "pad_frames": True if args.pad_frames else None, "eval_type": eval_type,
        "candidate_instruction": args.candidate_instruction, "moment_positives": args.moment_positives,
        "label_pool": args.label_pool, "items": args.mrmr_items, "extract_dir": args.image_cache,
    }


def _frames(value: str) -> int | str:
    """--num-frames: a positive count, or "all" (every saved frame)."""
    if value == "all":
        return value
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {value!r}")
    return number


def _quickstart(args: argparse.Namespace) -> int:
    from .experiments.quickstart.run import QuickstartSettings, format_report, run_quickstart

    report = run_quickstart(Path(args.output), QuickstartSettings(seed=args.seed))
    print(format_report(report))
    written = ", ".join([f"{args.output}/scores.json", *report["plots"]])
    print(f"report: {written}; models in {args.output}/*/model")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .embed import encode_corpus

    manifest = encode_corpus(args.model, args.input, args.output, batch_size=args.batch_size,
                             shard_size=args.shard_size, max_shards=args.max_shards)
    if PartialState().is_main_process:
        if manifest is None:
            print(f"stopped early (--max-shards): run the same command again to resume {args.output}")
        else:
            duplicates = f", {manifest['duplicates']} of them duplicate ids" if manifest.get("duplicates") else ""
            print(f"{manifest['count']} embeddings in {len(manifest['shards'])} shards under {args.output}; "
                  f"{manifest['skipped']} skipped{duplicates} (listed in {Path(args.output) / manifest['report']})")
    return 0


def _data_convert(args: argparse.Namespace) -> int:
    from .data.convert import VLM2VEC_V2_MIXTURE, convert

    summaries = convert(args.format, args.source, args.output, image_root=args.image_root,
                        video_root=args.video_root, subsets=args.subsets, split=args.split or None,
                        max_rows=args.max_rows, published_caps=args.published_caps, num_frames=args.num_frames,
                        name=args.name)
    for summary in summaries:
        print(summary.line())
    weights = {m.name: m.weight for m in VLM2VEC_V2_MIXTURE}
    print(f"summary: {Path(args.output) / 'convert-summary.json'}; as recipe data sources "
          "(weights of the VLM2Vec-V2 mixture where it has the source):")
    for summary in summaries:
        print(f"    - {{path: {summary.output}, weight: {weights.get(summary.name, 1.0)}}}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from .index import VectorIndex

    index = VectorIndex.build(args.embeddings, args.output, kind=args.kind, nlist=args.nlist, m=args.m,
                              shard_size=args.shard_size)
    print(f"{index.kind} index of {len(index)} vectors (dim {index.dim}) in {len(index.shards)} shard(s): {args.output}")
    return 0


def _search(args: argparse.Namespace) -> int:
    import json

    from .index import VectorIndex, format_hits, query_item, search
    from .modeling import LaMEModel

    item = query_item(args.query, args.image, args.json)
    index = VectorIndex.load(args.index)
    model = LaMEModel.from_pretrained(args.model, device=args.device)
    note = index.check_model(model)  # another model or dimension: refused before anything is embedded
    if note:
        print(f"lame search: note: {note}", file=sys.stderr)
    hits = search(model, index, [item], k=args.k)[0]
    print(json.dumps(hits) if args.json_output else format_hits(hits))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import ServeSettings, load_app, serve

    settings = ServeSettings(
        model_name=args.served_model_name or Path(args.model).name, max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, api_key=args.api_key,
        max_body_bytes=args.max_body_bytes, max_items=args.max_items, max_images_per_item=args.max_images_per_item,
        max_image_pixels=args.max_image_pixels, allow_image_url_hosts=tuple(args.allow_image_url_host or ()),
        decode_workers=args.decode_workers, max_inflight_bytes=args.max_inflight_bytes,
        cors_origins=tuple(args.cors_origin or ()),
    )
    serve(load_app(args.model, settings, args.index, device=args.device, ui=args.ui), args.host, args.port,
          args.log_level, threads=args.threads)
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    import shlex

    from .experiments.bench.serve import bench_serve, bench_serve_images, format_images_report, format_report, save_report

    if args.scenario == "images":
        report = bench_serve_images(args.model, image_format=args.image_format, image_side=args.image_side,
                                    images_per_request=args.images_per_request, heavy_clients=args.heavy_clients,
                                    small_concurrency=args.small_concurrency, seconds=args.max_seconds,
                                    max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms[0],
                                    threads=args.threads, server_flags=shlex.split(args.server_flags or ""),
                                    in_process=args.in_process)
        print(format_images_report(report))
        if args.json_output:
            save_report(report, args.json_output)
        return 0
    report = bench_serve(args.model, tuple(args.concurrency), requests=args.requests, max_seconds=args.max_seconds,
                         max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, threads=args.threads,
                         in_process=args.in_process, rounds=args.rounds)
    print(format_report(report))
    if args.json_output:
        save_report(report, args.json_output)
    return 0


def _bench_speed(args: argparse.Namespace) -> int:
    from .experiments.bench.speed import SHAPE_IMAGE_SIZE, SHAPE_QUERY_TOKENS, SpeedSettings, format_speed, run_speed

    defaults = SpeedSettings()
    shaped = bool(args.shape and not args.model)
    settings = SpeedSettings(
        model=args.model, backbone=args.backbone, shape=args.shape, layers=args.layers,
        vision_layers=args.vision_layers, device=args.device, dtype=args.dtype,
        query_tokens=args.query_tokens or (SHAPE_QUERY_TOKENS if shaped else defaults.query_tokens),
        image_size=args.image_size if args.image_size is not None else (
            SHAPE_IMAGE_SIZE if shaped else defaults.image_size),
        batch_sizes=tuple(args.batch_sizes), warmup=args.warmup, warmup_all_batch_sizes=not shaped,
        lame_k=tuple(args.lame_k or ((8,) if shaped else defaults.lame_k)),
        sequential_steps=tuple(args.sequential_steps or defaults.sequential_steps),
        cot_tokens=tuple(args.cot_tokens or ((64, 256) if shaped else defaults.cot_tokens)),
        repeats=args.repeats or defaults.repeats, threads=args.threads, clock=args.clock, quick=args.quick)
    report = run_speed(settings, Path(args.output))
    print(format_speed(report))
    print(f"report: {args.output}/speed.json, {args.output}/speed.png")
    return 0


def _bench_quality(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .experiments.bench.quality import format_quality, run_quality
    from .experiments.quickstart.settings import QuickstartSettings

    base = replace(QuickstartSettings(), warmup_steps=args.warmup_steps, joint_steps=args.joint_steps)
    report = run_quality(Path(args.output), args.methods, args.seeds, jobs=args.jobs, base=base,
                         sweep_methods=args.sweep_methods, sweep_pairs=args.sweep_pairs,
                         timing_threads=args.timing_threads, split=args.split)
    print(format_quality(report))
    print(f"written: {args.output}/quality.json " + " ".join(report["plots"]))
    return 0


def _bench_encode(args: argparse.Namespace) -> int:
    from .experiments.bench.encode import EncodeSettings, format_encode, run_encode_bench

    settings = EncodeSettings(model=args.model, backbone=args.backbone, shape=args.shape, layers=args.layers,
                              corpus=args.corpus, packing=args.packing, device=args.device, dtype=args.dtype,
                              items=args.items, batch_size=args.batch_size,
                              repeats=args.repeats or EncodeSettings.repeats, threads=args.threads, quick=args.quick)
    report = run_encode_bench(settings, Path(args.output))
    print(format_encode(report))
    print(f"report: {args.output}/encode.json")
    return 0 if report["allclose"] else 1


def _bench_memory(args: argparse.Namespace) -> int:
    from .experiments.bench.memory import MemoryBenchSettings, format_memory, run_memory_bench

    settings = MemoryBenchSettings(items=args.items, shape=args.shape, threads=args.threads, quick=args.quick)
    report = run_memory_bench(settings, Path(args.output))
    print(format_memory(report))
    print(f"report: {args.output}/memory.json")
    return 0


def _shape_names() -> list[str]:
    return ["qwen2-vl-2b", "qwen2.5-vl-3b", "qwen3-vl-8b"]  # lame.modeling.shapes.SHAPES (not imported here)


def _bench_padding(args: argparse.Namespace) -> int:
    from .experiments.bench.padding import PaddingSettings, format_padding, run_padding

    settings = PaddingSettings(shape=args.shape or "qwen2-vl-2b", pairs=args.pairs, batch_size=args.batch_size,
                               chunk=args.chunk, capacity=args.capacity, time=args.time, layers=args.layers,
                               time_items=args.time_items, repeats=args.repeats or PaddingSettings.repeats,
                               threads=args.threads, device=args.device, quick=args.quick)
    report = run_padding(settings, Path(args.output))
    print(format_padding(report))
    print(f"report: {args.output}/padding.json")
    return 0 if report.get("timing", {}).get("allclose", True) else 1


def _bench_train(args: argparse.Namespace) -> int:
    from .experiments.bench.train import TrainBenchSettings, format_train, run_train_bench

    settings = TrainBenchSettings(shape=args.shape, layers=args.layers, backbone=args.backbone, steps=args.steps,
                                  rounds=args.repeats or TrainBenchSettings.rounds, batch_size=args.batch_size,
                                  pairs=args.pairs, packing=not args.no_packing,
                                  featurize_workers=args.featurize_workers, grad_cache_chunk=args.grad_cache_chunk,
                                  threads=args.threads, quick=args.quick)
    report = run_train_bench(settings, Path(args.output))
    print(format_train(report))
    print(f"report: {args.output}/train.json")
    return 0


def _tiny_family(value: str) -> str:
    """An argparse type: a backbone family with a tiny config. The registry imports the model code,
    so it is read only when the option is given (``lame --help`` stays light)."""
    from .modeling.adapters import tiny_families

    if value not in tiny_families():
        raise argparse.ArgumentTypeError(f"no tiny config for {value!r}; choose from {', '.join(tiny_families())}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lame", description="LaME: latent-reasoning multimodal embeddings")
    verbs = parser.add_subparsers(dest="verb", required=True)

    demo = verbs.add_parser("demo", help="embed, search, save and reload a tiny LaME model on digit images (CPU)")
    demo.add_argument("--output", default="lame-demo", help="folder for the saved model (default: lame-demo)")
    demo.add_argument("--backbone", default="qwen2_vl", type=_tiny_family,
                      help="tiny backbone family (default: qwen2_vl)")
    demo.set_defaults(func=_demo)

    train = verbs.add_parser("train", help="run a training recipe (YAML)")
    train.add_argument("recipe", help="recipe file, e.g. configs/tiny-digits.yaml")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set stages.0.steps=50 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint of output_dir")
    train.add_argument("--dry-run", action="store_true",
                       help="validate, build what can be built and print parameter groups and the estimated peak "
                            "memory per process and stage; no training")
    plan = train.add_argument_group("--dry-run memory plan")
    plan.add_argument("--gpu-memory", type=float, metavar="GIB",
                      help="memory per process (GiB): print the largest GradCache chunk that fits")
    plan.add_argument("--processes", type=int, default=1, help="processes the run will use (default: 1)")
    plan.add_argument("--seq-len", type=int, default=512,
                      help="positions per item, latent block included (default: 512)")
    plan.add_argument("--image-tokens", type=int, default=256,
                      help="visual tokens per item (default: 256; 0: text only)")
    train.set_defaults(func=_train)

    quick = verbs.add_parser("quickstart", help="train LaME and the discriminative embedder on the shipped digit "
                                "VLM and compare them (CPU, a few minutes)")
    quick.add_argument("--output", default="runs/quickstart", help="report folder (default: runs/quickstart)")
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(func=_quickstart)

    ev = verbs.add_parser("eval", help="score a model on a benchmark (MMEB-V2, MRMR or a JSONL folder)")
    ev.add_argument("--model", help="saved LaME model folder (required, except with --check-data)")
    ev.add_argument("--benchmark", required=True, help="mmeb-v2, mrmr, or a JSONL benchmark folder")
    ev.add_argument("--data-root", help="folder holding the named benchmark's files")
    ev.add_argument("--tasks", nargs="+", help="only these tasks")
    ev.add_argument("--check-data", metavar="ROOT",
                    help="mmeb-v2 / mrmr: list which parts are under ROOT, which are missing and the command that "
                         "downloads each missing part; nothing is embedded (exit status 1 when a part is missing)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--cache-dir", default=".lame-cache/embeddings", help="embedding cache ('' to disable)")
    ev.add_argument("--image-cache", metavar="DIR",
                    help="mmeb-v2 / mrmr: where images stored inside data files are extracted "
                         "(default: $LAME_CACHE/images, i.e. ~/.cache/lame/images)")
    ev.add_argument("--output", help="scores JSON (default: MODEL/scores-<benchmark>.json)")
    ev.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    ev.add_argument("--no-card", action="store_true",
                    help="do not write the scores into MODEL/README.md (its model-index and results table)")
    proto = ev.add_argument_group("MMEB-V2 protocol (docs/benchmarks.md: which published setting each default follows)")
    proto.add_argument("--num-frames", type=_frames, metavar="N|all",
                       help="frames sampled per video, evenly spaced (default 64, the leaderboard's; VLM2Vec's "
                            "public configs: 8); 'all': every saved frame")
    proto.add_argument("--num-clip-frames", type=_frames, metavar="N|all",
                       help="frames per candidate clip of QVHighlight / Charades-STA (default 8, as published)")
    proto.add_argument("--num-samples", type=int, metavar="N",
                       help="only the first N records of each task (num_sample_per_subset; SmthSmthV2 is always "
                            "cut to 1,000)")
    proto.add_argument("--pad-frames", action="store_true",
                       help="sample short videos with repetition up to --num-frames (VLM2Vec main since June "
                            "2026; default: their saved frames as they are, the leaderboard's reference)")
    proto.add_argument("--eval-type", action="append", metavar="TASK=local|global",
                       help="rank a task's own candidate lists (local) or its whole pool (global) (repeatable)")
    proto.add_argument("--candidate-instruction", choices=("none", "upstream"),
                       help="none (default, the leaderboard's reference) or upstream: VLM2Vec's target "
                            "instructions on candidates (tgt_inst, TASK_INST_TGT)")
    proto.add_argument("--moment-positives", choices=("last", "all"),
                       help="QVHighlight / Charades-STA: one relevant clip per query, the last positive folder "
                            "listed (last, default: VLM2Vec's published evaluation code) or every positive clip "
                            "(all)")
    proto.add_argument("--label-pool", choices=("fixed", "test"),
                       help="global video classification ranks the published label lists (fixed, default) or "
                            "only the labels of the test file (test)")
    mrmr = ev.add_argument_group("MRMR")
    mrmr.add_argument("--mrmr-items", choices=("official", "interleaved"),
                      help="official (default): text with its <image N> placeholders plus the image column, as "
                           "MRMR's evaluation code; interleaved: text pieces and the numbered images in order")
    ev.set_defaults(func=_eval)

    enc = verbs.add_parser("encode", help="embed a JSONL corpus into float32 shards (resumable; data-parallel "
                                          "under accelerate launch / torchrun)")
    enc.add_argument("--model", required=True, help="saved LaME model folder")
    enc.add_argument("--input", required=True, help='JSONL, one {"id": ..., "item": ITEM} a line; also BEIR/MTEB '
                                                    '{"_id", "title", "text"} and {"id", "text"/"image"} lines')
    enc.add_argument("--output", required=True, help="folder for the shards, manifest and skipped-items report")
    enc.add_argument("--batch-size", type=int, default=32)
    enc.add_argument("--shard-size", type=int, default=10_000, help="records per shard (default: 10000)")
    enc.add_argument("--max-shards", type=int, help="stop each process after this many new shards (resume later)")
    enc.set_defaults(func=_encode)

    data = verbs.add_parser("data", help="training data: convert published training sets to training JSONL")
    data_convert = data.add_subparsers(dest="data_verb", required=True).add_parser(
        "convert", help="MMEB-train, the VLM2Vec-V2 video and visual-document sources -> training JSONL "
                        "(streamed; image paths checked; a summary of counts and skipped rows)")
    data_convert.add_argument("format", choices=["mmeb-train", "llavahound-caption", "llavahound-video",
                                                 "llavahound-qa", "vidore", "visrag"])
    data_convert.add_argument("source", help="the local copy: MMEB-train's snapshot folder, a LLaVA-Hound JSONL, "
                                             "or a folder/parquet file of the ColPali or VisRAG set")
    data_convert.add_argument("output", help="folder for the JSONL files (one per subset or source)")
    data_convert.add_argument("--image-root", help="mmeb-train: the folder its image paths are relative to "
                                                   "(default: SOURCE)")
    data_convert.add_argument("--video-root", help="llavahound-*: the folder of frame folders, one per video")
    data_convert.add_argument("--subsets", nargs="+", help="mmeb-train: only these subsets")
    data_convert.add_argument("--split", default="original", help="mmeb-train: parquet split (default: original)")
    data_convert.add_argument("--max-rows", type=int, help="at most this many records per output file")
    data_convert.add_argument("--published-caps", action="store_true",
                              help="the per-source row caps of the VLM2Vec-V2 mixture")
    data_convert.add_argument("--num-frames", type=int, default=8, help="llavahound-*: frames per video (default 8)")
    data_convert.add_argument("--name", help="output file stem (default: the source's name in the mixture)")
    data_convert.set_defaults(func=_data_convert)

    index = verbs.add_parser("index", help="build a FAISS index over `lame encode` output")
    index_build = index.add_subparsers(dest="index_verb", required=True).add_parser("build", help="build an index")
    index_build.add_argument("--embeddings", required=True, help="folder written by `lame encode`")
    index_build.add_argument("--output", required=True, help="index folder")
    index_build.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"],
                             help="flat: exact inner product (default); ivf: inverted lists; hnsw: graph")
    index_build.add_argument("--nlist", type=int, help="IVF lists (default: about 4 sqrt(n))")
    index_build.add_argument("--m", type=int, default=32, help="HNSW links per node (default: 32)")
    index_build.add_argument("--shard-size", type=int, help="vectors per index shard (default: one shard)")
    index_build.set_defaults(func=_index)

    se = verbs.add_parser("search", help="top-k ids and scores of one query against an index")
    se.add_argument("--model", required=True, help="saved LaME model folder (the one that encoded the corpus)")
    se.add_argument("--index", required=True, help="folder written by `lame index build`")
    query = se.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", help="a text query")
    query.add_argument("--image", help="an image file as the query")
    query.add_argument("--json", help='an item as JSON, e.g. \'{"text": "...", "image": "x.png"}\'')
    se.add_argument("--k", type=int, default=10)
    se.add_argument("--json-output", action="store_true", help="print JSON instead of a table")
    se.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    se.set_defaults(func=_search)

    sv = verbs.add_parser("serve", help="OpenAI-compatible embeddings server (FastAPI + uvicorn), see docs/serving.md")
    sv.add_argument("--model", required=True, help="saved LaME model folder")
    sv.add_argument("--index", help="index folder: enables POST /v1/search")
    sv.add_argument("--ui", action="store_true",
                    help="serve a search page at / (query by text and/or image; hits with thumbnails; the query's "
                         "decoded latents)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--served-model-name", help="`model` in responses when a request names none (default: folder name)")
    sv.add_argument("--max-batch-size", type=int, default=32, help="items per model forward; 1 turns batching off")
    sv.add_argument("--max-wait-ms", type=float, default=0.0,
                    help="how long a batch waits for more requests (default: 0; whatever queued while the model "
                         "ran still shares the next batch)")
    sv.add_argument("--max-queue", type=int, default=256, help="waiting requests before 503 + Retry-After")
    sv.add_argument("--api-key", default=os.environ.get("LAME_API_KEY"),
                    help="require 'Authorization: Bearer KEY' on /v1/* (default: $LAME_API_KEY)")
    sv.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    sv.add_argument("--max-items", type=int, default=256, help="inputs per request")
    sv.add_argument("--max-images-per-item", type=int, default=8)
    sv.add_argument("--max-image-pixels", type=int,
                    help="pixels one image may decode to (a JPEG decodes at 1/2..1/8 scale when the model reads "
                         "less); default: 4x what the model's image processor keeps, within 1024^2..4096^2")
    sv.add_argument("--decode-workers", type=int, default=2, help="images decoded at once (default: 2)")
    sv.add_argument("--max-inflight-bytes", type=int, default=1024**3,
                    help="memory for request bodies and decoded images of requests not yet answered; beyond it, "
                         "503 + Retry-After (default: 1 GiB)")
    sv.add_argument("--allow-image-url-host", action="append", metavar="HOST",
                    help="fetch http(s) image URLs from this host (repeatable); otherwise only data: URIs")
    sv.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                    help="let browser pages from ORIGIN (e.g. https://app.example.com, or *) call the API (repeatable)")
    sv.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    sv.add_argument("--threads", type=int, help="torch CPU threads (default: one per core but one)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.set_defaults(func=_serve)

    bench = verbs.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench_verb", required=True)
    bs = benches.add_parser(
        "serve", help="requests/s and p50/p99 latency of `lame serve` at several concurrencies, batching on and off")
    bs.add_argument("--model", help="saved LaME model folder (default: a tiny random model)")
    bs.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    bs.add_argument("--requests", type=int, default=512, help="requests per concurrency level")
    bs.add_argument("--max-seconds", type=float, default=20.0, help="time limit per concurrency level")
    bs.add_argument("--max-batch-size", type=int, default=32, help="of the batching server")
    bs.add_argument("--max-wait-ms", type=float, nargs="+", default=[0.0],
                    help="of the batching server; several values: one batching server each, compared level by level")
    bs.add_argument("--rounds", type=int, default=1,
                    help="visit the servers this many times per level, in alternating order (for busy machines)")
    bs.add_argument("--threads", type=int, help="the servers' torch CPU threads (default: lame serve's)")
    bs.add_argument("--in-process", action="store_true",
                    help="run the server in a thread of this process (quick check; lower numbers)")
    bs.add_argument("--json-output", help="also write the report as JSON here")
    bs.add_argument("--scenario", default="text", choices=["text", "images"],
                    help="text: throughput and latency by concurrency (default); images: memory and one-word "
                         "latency while large image requests run")
    images = bs.add_argument_group("--scenario images")
    images.add_argument("--image-format", default="png", choices=["png", "jpeg", "webp", "gif"])
    images.add_argument("--image-side", type=int, default=4096, help="pixels per side of each image (default: 4096)")
    images.add_argument("--images-per-request", type=int, default=8)
    images.add_argument("--heavy-clients", type=int, default=2, help="clients sending large requests")
    images.add_argument("--small-concurrency", type=int, default=4, help="clients sending one-word requests")
    images.add_argument("--server-flags", help="extra `lame serve` flags, e.g. '--max-image-pixels 16777216'")
    bs.set_defaults(func=_bench_serve)

    common = argparse.ArgumentParser(add_help=False)  # what `bench speed` and `bench encode` share
    common.add_argument("--model", help="saved LaME model folder (default: a tiny random model)")
    common.add_argument("--backbone", default="qwen2_vl", type=_tiny_family,
                        help="the tiny model's backbone family when --model is not given (default: qwen2_vl)")
    common.add_argument("--shape", choices=_shape_names(),
                        help="random weights of a real architecture (real widths, vocabulary, vision tower; "
                             "tiny tokenizer), instead of the tiny config")
    common.add_argument("--layers", type=int, help="--shape: keep the first N language-model blocks (CPU runs)")
    common.add_argument("--vision-layers", type=int,
                        help="--shape: keep the first N vision blocks (default: the same fraction as --layers)")
    common.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    common.add_argument("--dtype", default="float32", choices=DTYPES)
    common.add_argument("--repeats", type=int, help="timed rounds; medians are reported (default: speed 5, encode 3)")
    common.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 on a busy shared CPU)")
    common.add_argument("--quick", action="store_true", help="small counts, for tests and smoke runs")
    common.add_argument("--output", default="runs/bench", help="report folder (default: runs/bench)")
    sp = benches.add_parser("speed", parents=[common], help="latency and throughput of LaME K=4..32 against "
                            "discriminative, sequential latent and explicit CoT embedders on one backbone")
    sp.add_argument("--query-tokens", type=int,
                    help="prompt tokens per query (default: 128; with --shape 320)")
    sp.add_argument("--image-size", type=int,
                    help="query image side in pixels, 0: text only (default: 224; with --shape 448: 256 visual "
                         "tokens at Qwen2-VL's patch 14)")
    sp.add_argument("--lame-k", type=int, nargs="+", help="LaME rows (default: 4 8 16 32; with --shape 8)")
    sp.add_argument("--sequential-steps", type=int, nargs="+", help="sequential-latent rows (default: 8)")
    sp.add_argument("--cot-tokens", type=int, nargs="+",
                    help="explicit-CoT rows (default: 64 256 1024; with --shape 64 256)")
    sp.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    sp.add_argument("--warmup", type=int, default=1, help="warm-up calls per method and batch size")
    sp.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: process CPU time, for a CPU shared with other jobs (needs --threads 1)")
    sp.set_defaults(func=_bench_speed)
    be = benches.add_parser("encode", parents=[common], help="LaMEModel.encode against a naive loop, same items")
    be.add_argument("--items", type=int, default=2000, help="mixed items: text, single- and multi-image")
    be.add_argument("--batch-size", type=int, default=32)
    be.add_argument("--corpus", default="mixed", choices=["mixed", "realistic"],
                    help="mixed: small synthetic items; realistic: MMEB-like sizes (images of hundreds of tokens)")
    be.add_argument("--packing", action="store_true", help="encode with packed (padding-free) batches")
    be.set_defaults(func=_bench_encode)
    bp = benches.add_parser("padding", parents=[common], help="padded fraction of encode and training batches on "
                            "a realistic mixed corpus, and packed (padding-free) batches against padded ones")
    bp.add_argument("--pairs", type=int, default=2000, help="(query, positive) pairs of the corpus")
    bp.add_argument("--batch-size", type=int, default=32)
    bp.add_argument("--chunk", type=int, default=16, help="GradCache chunk")
    bp.add_argument("--capacity", type=int, help="positions per packed row (default: the batch's longest item)")
    bp.add_argument("--time", action="store_true",
                    help="also time packed against padded forward passes of a random model of --shape")
    bp.add_argument("--time-items", type=int, default=64, help="items of the timed passes")
    bp.set_defaults(func=_bench_padding, layers=2)
    bt = benches.add_parser("train", parents=[common], help="samples/s of lame train against a plain training loop "
                            "(same model and batches, per-item featurisation, no prefetch)")
    bt.add_argument("--steps", type=int, default=6, help="steps per run, the first a warm-up (default: 6)")
    bt.add_argument("--batch-size", type=int, default=8)
    bt.add_argument("--pairs", type=int, default=256, help="(query, positive) pairs of the corpus")
    bt.add_argument("--no-packing", action="store_true", help="lame train with padded batches")
    bt.add_argument("--featurize-workers", type=int, default=2)
    bt.add_argument("--grad-cache-chunk", type=int)
    bt.set_defaults(func=_bench_train, layers=2)
    bm = benches.add_parser("memory", help="the memory planner's estimated peak against the measured peak of "
                            "training steps on tiny configs (CPU)")
    bm.add_argument("--items", type=int, default=12, help="queries (and positives) per batch (default: 12)")
    bm.add_argument("--shape", choices=_shape_names(),
                    help="one block of each tower of a real architecture instead of the tiny config (no full "
                         "fine-tuning cases)")
    bm.add_argument("--threads", type=int, help="torch intra-op threads")
    bm.add_argument("--quick", action="store_true", help="two cases only (tests)")
    bm.add_argument("--output", default="runs/bench", help="report folder (default: runs/bench)")
    bm.set_defaults(func=_bench_memory)
    from .experiments.quickstart.settings import METHODS, PEERS, QuickstartSettings  # light: no torch

    bq = benches.add_parser("quality", help="LaME against discriminative, sequential-latent and explicit-CoT "
                            "embedders on the shipped digit VLM, over seeds, with a training-data sweep")
    bq.add_argument("--methods", nargs="+", default=list(PEERS), choices=sorted(METHODS))
    bq.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    bq.add_argument("--sweep-methods", nargs="*", default=["discriminative", "lame"], choices=sorted(METHODS),
                    help="methods of the sample-efficiency sweep (none: no sweep)")
    bq.add_argument("--sweep-pairs", type=int, nargs="*", default=[250, 1000, 4000],
                    help="training pairs of the sweep (the full set is the main grid)")
    bq.add_argument("--jobs", type=int, default=1, help="runs in parallel (each in its own process)")
    bq.add_argument("--timing-threads", type=int, default=1, help="torch threads of the side-by-side timing")
    bq.add_argument("--split", default="test", choices=["val", "test"],
                    help="the split summarised (every run is scored on both: choose on val, report test)")
    bq.add_argument("--output", default="runs/quality", help="report folder; finished runs are reused")
    regime = bq.add_argument_group("budget (defaults: the quickstart's)")
    regime.add_argument("--warmup-steps", type=int, default=QuickstartSettings.warmup_steps,
                        help="stage 1 steps (every method gets the same total)")
    regime.add_argument("--joint-steps", type=int, default=QuickstartSettings.joint_steps)
    bq.set_defaults(func=_bench_quality)
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
