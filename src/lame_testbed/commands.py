"""The verbs the testbed adds to `lame` (entry point ``lame.commands``): ``quickstart`` and ``bench ...``.

Each verb's options are its settings dataclass's fields (:mod:`lame.cli_options`); each handler is a
few lines that run the benchmark and print its report. Importing this module loads no torch.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

from lame.cli_options import add_options, from_options

from .bench import settings as bench


def add_commands(verbs) -> None:
    """Adds ``quickstart`` and ``bench`` to the `lame` parser's verbs."""
    _add_quickstart(verbs)
    benches = verbs.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_verb", required=True)
    for name, settings, handler, text in (
            ("serve", bench.ServeBenchSettings, _bench_serve,
             "requests/s and p50/p99 latency of `lame serve` at several concurrencies, batching on and off"),
            ("speed", bench.SpeedSettings, _bench_speed, "latency and throughput of LaME K=4..32 against "
             "discriminative, sequential latent and explicit CoT embedders on one backbone"),
            ("encode", bench.EncodeSettings, _bench_encode, "LaMEModel.encode against a naive loop, same items"),
            ("padding", bench.PaddingSettings, _bench_padding, "padded fraction of encode and training batches on a "
             "realistic mixed corpus, and packed (padding-free) batches against padded ones"),
            ("train", bench.TrainBenchSettings, _bench_train, "samples/s of lame train against a plain training loop "
             "(same model and batches, per-item featurisation, no prefetch)"),
            ("memory", bench.MemoryBenchSettings, _bench_memory, "the memory planner's estimated peak against the "
             "measured peak of training steps on tiny configs (CPU)"),
            ("index", bench.IndexBenchSettings, _bench_index, "build time, queries/s and recall@10 of FAISS (flat, "
             "HNSW) and Milvus Lite (FLAT, HNSW) on random unit vectors of the 2B model's embedding width")):
        parser = benches.add_parser(name, help=text)
        add_options(parser, settings)
        if name != "serve":
            parser.add_argument("--output", default="runs/bench", help="report folder (default: runs/bench)")
        parser.set_defaults(func=handler)
    _add_quality(benches)
    elastic = benches.add_parser("elastic", help="one elastic LaME model (reason tokens and embedding size chosen at "
                                 "inference) against a model per fixed k, on the shipped digit VLM, over seeds")
    add_options(elastic, bench.ElasticSettings)
    elastic.set_defaults(func=_bench_elastic)


def _add_quickstart(verbs) -> None:
    quick = verbs.add_parser("quickstart", help="train LaME, the discriminative embedder and its position-matched "
                             "control on the shipped digit VLM and compare them (CPU, a few minutes)")
    quick.add_argument("--output", default="runs/quickstart", help="report folder (default: runs/quickstart)")
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(func=_quickstart)


def _quickstart(args) -> int:
    from .quickstart.run import QuickstartSettings, format_report, run_quickstart

    report = run_quickstart(Path(args.output), QuickstartSettings(seed=args.seed))
    print(format_report(report))
    written = ", ".join([f"{args.output}/scores.json", *report["plots"]])
    print(f"report: {written}; models in {args.output}/*/model")
    return 0


def _add_quality(benches) -> None:
    from .quickstart.settings import QuickstartSettings

    quality = benches.add_parser("quality", help="LaME against the discriminative embedder, its position-matched "
                                 "control and the peers on the shipped digit VLM, over seeds, with a data sweep")
    add_options(quality, bench.QualitySettings)
    budget = quality.add_argument_group("budget (defaults: the quickstart's)")
    budget.add_argument("--warmup-steps", type=int, default=QuickstartSettings.warmup_steps,
                        help="stage 1 steps (every method gets the same total)")
    budget.add_argument("--joint-steps", type=int, default=QuickstartSettings.joint_steps)
    budget.add_argument("--train-tasks", nargs="+", metavar="TASK", default=None,
                        help="train on these tasks only (e.g. level0 parity pick position); every task is scored")
    budget.add_argument("--noisy-positives", type=float, default=0.0, metavar="FRACTION",
                        help="give this fraction of the training records another record's positive (their answer "
                        "stays right); validation and test are untouched")
    quality.set_defaults(func=_bench_quality)


def _bench_quality(args) -> int:
    from .bench.quality import run_quality
    from .bench.quality_report import format_quality
    from .quickstart.settings import PEERS, QuickstartSettings

    settings = from_options(bench.QualitySettings, args)
    base = replace(QuickstartSettings(), warmup_steps=args.warmup_steps, joint_steps=args.joint_steps,
                   train_tasks=tuple(args.train_tasks) if args.train_tasks else None,
                   noisy_positives=args.noisy_positives)
    report = run_quality(Path(settings.output), list(settings.methods or PEERS), list(settings.seeds),
                         jobs=settings.jobs, base=base, sweep_methods=settings.sweep_methods,
                         sweep_pairs=settings.sweep_pairs, timing_threads=settings.timing_threads, split=settings.split)
    print(format_quality(report))
    print(f"written: {settings.output}/quality.json " + " ".join(report["plots"]))
    return 0


def _bench_serve(args) -> int:
    from .bench.serve import bench_serve, bench_serve_images, format_images_report, format_report, save_report

    s = from_options(bench.ServeBenchSettings, args)
    if s.scenario == "images":
        report = bench_serve_images(s.model, image_format=s.image_format, image_side=s.image_side,
                                    images_per_request=s.images_per_request, heavy_clients=s.heavy_clients,
                                    small_concurrency=s.small_concurrency, seconds=s.max_seconds,
                                    max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms[0], threads=s.threads,
                                    server_flags=shlex.split(s.server_flags or ""), in_process=s.in_process)
        text = format_images_report(report)
    else:
        report = bench_serve(s.model, s.concurrency, requests=s.requests, max_seconds=s.max_seconds,
                             max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms, threads=s.threads,
                             in_process=s.in_process, rounds=s.rounds)
        text = format_report(report)
    print(text)
    if s.json_output:
        save_report(report, s.json_output)
    return 0


def _bench_speed(args) -> int:
    from .bench.speed import format_speed, run_speed

    report = run_speed(from_options(bench.SpeedSettings, args), Path(args.output))
    print(format_speed(report))
    print(f"report: {args.output}/speed.json, {args.output}/speed.png")
    return 0


def _bench_encode(args) -> int:
    from .bench.encode import format_encode, run_encode_bench

    report = run_encode_bench(from_options(bench.EncodeSettings, args), Path(args.output))
    print(format_encode(report))
    print(f"report: {args.output}/encode.json")
    return 0 if report["allclose"] else 1


def _bench_padding(args) -> int:
    from .bench.padding import format_padding, run_padding

    report = run_padding(from_options(bench.PaddingSettings, args), Path(args.output))
    print(format_padding(report))
    print(f"report: {args.output}/padding.json")
    return 0 if report.get("timing", {}).get("allclose", True) else 1


def _bench_train(args) -> int:
    from .bench.train import format_train, run_train_bench

    report = run_train_bench(from_options(bench.TrainBenchSettings, args), Path(args.output))
    print(format_train(report))
    print(f"report: {args.output}/train.json")
    return 0


def _bench_memory(args) -> int:
    from .bench.memory import format_memory, run_memory_bench

    report = run_memory_bench(from_options(bench.MemoryBenchSettings, args), Path(args.output))
    print(format_memory(report))
    print(f"report: {args.output}/memory.json")
    return 0


def _bench_index(args) -> int:
    from .bench.index import format_index, run_index_bench

    report = run_index_bench(from_options(bench.IndexBenchSettings, args), Path(args.output))
    print(format_index(report))
    print(f"report: {args.output}/index.json")
    return 0


def _bench_elastic(args) -> int:
    from .bench.elastic import run_elastic
    from .bench.elastic_report import format_elastic

    settings = from_options(bench.ElasticSettings, args)
    report = run_elastic(settings.quick_version() if settings.quick else settings)
    print(format_elastic(report))
    print(f"written: {settings.output}/elastic.json " + " ".join(report["plots"]))
    return 0
