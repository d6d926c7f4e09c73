"""The settings of every `lame bench` command, declared once: their fields are the commands' options.

Kept apart from the benchmarks themselves so that ``lame --help`` can list the options without
importing torch. A field without option metadata is not on the command line (tests and scripts set it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lame.cli_options import option

SHAPES = ("qwen2-vl-2b", "qwen2.5-vl-3b", "qwen3-vl-8b")  # lame.modeling.shapes.SHAPES (not imported here)
DTYPES = ("float32", "bfloat16", "float16")
# Queries of a real shape: one 448 x 448 image (256 visual tokens at patch 14, merge 2; a typical MMEB
# image after the processor's resize holds hundreds) and text, 320 prompt tokens in all.
SHAPE_QUERY_TOKENS = 320
SHAPE_IMAGE_SIZE = 448


def tiny_family(value: str) -> str:
    from lame.cli import tiny_family as check

    return check(value)


def _model() -> dict:
    return option("saved LaME model folder (default: a tiny random model)")


def _backbone() -> dict:
    return option("the tiny model's backbone family when --model is not given", type=tiny_family)


def _shape(help_text: str = "random weights of a real architecture (real widths, vocabulary, vision tower; tiny "
                              "tokenizer), instead of the tiny config") -> dict:
    return option(help_text, choices=SHAPES)


def _threads() -> dict:
    return option("torch CPU threads (default: torch's; 1 on a busy shared CPU)")


def _quick() -> dict:
    return option("small counts, for tests and smoke runs")


def _device() -> dict:
    return option("cpu, cuda, cuda:1 ... (default: cuda if available)")


@dataclass
class SpeedSettings:
    """`lame bench speed`. Fields left at None take their tiny-model default, or with ``shape`` (and no
    ``model``) the real-shape one (:meth:`resolved`)."""

    model: str | None = field(default=None, metadata=_model())
    backbone: str = field(default="qwen2_vl", metadata=_backbone())
    shape: str | None = field(default=None, metadata=_shape())
    layers: int | None = field(default=None, metadata=option("--shape: keep the first N language-model blocks"))
    vision_layers: int | None = field(default=None, metadata=option(
        "--shape: keep the first N vision blocks (default: the same fraction as --layers)"))
    device: str | None = field(default=None, metadata=_device())
    dtype: str = field(default="float32", metadata=option("weights and activations", choices=DTYPES))
    query_tokens: int | None = field(default=None, metadata=option(
        "prompt tokens per query: chat template, text and image tokens, no latent block (default: 128; "
        f"with --shape {SHAPE_QUERY_TOKENS})"))
    image_size: int | None = field(default=None, metadata=option(
        "query image side in pixels, 0: text only (default: 224; with --shape "
        f"{SHAPE_IMAGE_SIZE}: 256 visual tokens at Qwen2-VL's patch 14)"))
    batch_sizes: tuple[int, ...] = field(default=(1, 32), metadata=option("batch sizes timed"))
    lame_k: tuple[int, ...] | None = field(default=None, metadata=option(
        "LaME rows (default: 4 8 16 32; with --shape 8)"))
    sequential_steps: tuple[int, ...] = field(default=(8,), metadata=option("sequential-latent rows"))
    cot_tokens: tuple[int, ...] | None = field(default=None, metadata=option(
        "explicit-CoT rows (default: 64 256 1024; with --shape 64 256)"))
    cot_goal_tokens: int = 256  # the CoT row the ~60x goal is checked on
    warmup: int = field(default=1, metadata=option("warm-up calls per method and batch size"))
    warmup_all_batch_sizes: bool | None = None  # False: at the smallest batch only (default: not with --shape)
    repeats: int = field(default=5, metadata=option("timed rounds; medians are reported"))
    min_round_seconds: float = 0.25  # a fast cell is called repeatedly within a round, for this long
    clock: str = field(default="wall", metadata=option(
        "cpu: process CPU time, for a CPU shared with other jobs (needs --threads 1)", choices=("wall", "cpu")))
    threads: int | None = field(default=None, metadata=_threads())
    quick: bool = field(default=False, metadata=_quick())
    cost_model: bool = True  # `shape` only: predict every row from this machine's constants (costmodel.py)
    goals: dict = field(default_factory=lambda: {"lame_over_discriminative_max": 1.10,
                                                 "cot_over_lame_min": 60.0, "sequential_over_lame_min": 2.0})

    def resolved(self) -> "SpeedSettings":
        """Every None filled in: the real-shape defaults with ``shape`` (and no ``model``), else the tiny ones."""
        shaped = bool(self.shape and not self.model)
        return replace(
            self,
            query_tokens=self.query_tokens or (SHAPE_QUERY_TOKENS if shaped else 128),
            image_size=self.image_size if self.image_size is not None else (SHAPE_IMAGE_SIZE if shaped else 224),
            lame_k=self.lame_k or ((8,) if shaped else (4, 8, 16, 32)),
            cot_tokens=self.cot_tokens or ((64, 256) if shaped else (64, 256, 1024)),
            warmup_all_batch_sizes=(not shaped) if self.warmup_all_batch_sizes is None else self.warmup_all_batch_sizes)

    def quick_version(self) -> "SpeedSettings":
        """Small counts for tests: every method is present, with short queries, batches and rationales."""
        done = self.resolved()
        return replace(done, query_tokens=min(done.query_tokens, 40), image_size=min(done.image_size, 56),
                       batch_sizes=(1, 4), cot_tokens=(4, 8, 16), cot_goal_tokens=8, warmup=1, repeats=1,
                       min_round_seconds=0.0, quick=True)


@dataclass
class EncodeSettings:
    """`lame bench encode`."""

    model: str | None = field(default=None, metadata=_model())
    backbone: str = field(default="qwen2_vl", metadata=_backbone())
    shape: str | None = field(default=None, metadata=_shape())
    layers: int | None = field(default=None, metadata=option(
        "--shape: keep the first N language-model blocks (vision blocks in proportion)"))
    corpus: str = field(default="mixed", metadata=option(
        "mixed: small synthetic items; realistic: MMEB-like sizes (images of hundreds of tokens)",
        choices=("mixed", "realistic")))
    packing: bool = field(default=False, metadata=option("encode with packed (padding-free) batches"))
    device: str | None = field(default=None, metadata=_device())
    dtype: str = field(default="float32", metadata=option("weights and activations", choices=DTYPES))
    items: int = field(default=2000, metadata=option("mixed items: text, single- and multi-image"))
    batch_size: int = field(default=32, metadata=option("items per batch"))
    num_reason_tokens: int = 8  # tiny model only; a saved model keeps its own K
    repeats: int = field(default=3, metadata=option("timed rounds; medians are reported"))
    warmup: int = 1
    seed: int = 0
    threads: int | None = field(default=None, metadata=_threads())
    quick: bool = field(default=False, metadata=_quick())

    def quick_version(self) -> "EncodeSettings":
        return replace(self, items=min(self.items, 96), batch_size=min(self.batch_size, 16), repeats=1, warmup=0)


@dataclass
class PaddingSettings:
    """`lame bench padding`."""

    shape: str = field(default="qwen2-vl-2b", metadata=_shape("the architecture whose tokenizer and image "
                                                               "processor count the positions"))
    pairs: int = field(default=2000, metadata=option("(query, positive) pairs of the corpus"))
    batch_size: int = field(default=32, metadata=option("encode batches and training batches"))
    chunk: int = field(default=16, metadata=option("GradCache chunk"))
    capacity: int | None = field(default=None, metadata=option(
        "positions per packed row (default: the batch's longest item)"))
    seed: int = 0
    time: bool = field(default=False, metadata=option(
        "also time packed against padded forward passes of a random model of --shape"))
    layers: int | None = field(default=2, metadata=option("--time: language-model blocks kept"))
    time_items: int = field(default=64, metadata=option("items of the timed passes"))
    repeats: int = field(default=3, metadata=option("timed rounds; medians are reported"))
    threads: int | None = field(default=None, metadata=_threads())
    device: str | None = field(default=None, metadata=_device())
    quick: bool = field(default=False, metadata=_quick())

    def quick_version(self) -> "PaddingSettings":
        return replace(self, pairs=min(self.pairs, 96), time_items=8, repeats=1)


@dataclass
class TrainBenchSettings:
    """`lame bench train`."""

    shape: str | None = field(default=None, metadata=_shape(
        "a real architecture (random weights) instead of the tiny config"))
    layers: int | None = field(default=2, metadata=option(
        "--shape: language-model blocks kept (vision and decoder in proportion)"))
    backbone: str = field(default="qwen2_vl", metadata=_backbone())
    steps: int = field(default=6, metadata=option("steps per run, the first a warm-up"))
    rounds: int = field(default=2, metadata=option("runs of each loop, alternating", flag="--repeats"))
    batch_size: int = field(default=8, metadata=option("pairs per step"))
    pairs: int = field(default=256, metadata=option("(query, positive) pairs of the corpus"))
    packing: bool = field(default=True, metadata=option("lame train with packed (padding-free) batches"))
    featurize_workers: int = field(default=2, metadata=option("lame train's featurising threads"))
    grad_cache_chunk: int | None = field(default=None, metadata=option("GradCache chunk"))
    seed: int = 0
    threads: int | None = field(default=None, metadata=_threads())
    quick: bool = field(default=False, metadata=_quick())

    def quick_version(self) -> "TrainBenchSettings":
        return replace(self, steps=3, rounds=1, batch_size=4, pairs=24)


@dataclass
class MemoryBenchSettings:
    """`lame bench memory`."""

    items: int = field(default=12, metadata=option("queries (and as many positives) per batch"))
    words: int = 100  # words per text
    image_size: int = 56  # query images' side in pixels
    steps: int = 2  # AdamW steps; the last one is measured
    shape: str | None = field(default=None, metadata=_shape(
        "one block of each tower of a real architecture instead of the tiny config (no full fine-tuning cases)"))
    threads: int | None = field(default=None, metadata=option("torch intra-op threads"))
    quick: bool = field(default=False, metadata=option("two cases only (tests)"))


@dataclass
class ServeBenchSettings:
    """`lame bench serve`: the text scenario (throughput and latency by concurrency) or the images one."""

    model: str | None = field(default=None, metadata=_model())
    scenario: str = field(default="text", metadata=option(
        "text: throughput and latency by concurrency; images: memory and one-word latency while large image "
        "requests run", choices=("text", "images")))
    concurrency: tuple[int, ...] = field(default=(1, 8, 32, 128), metadata=option("concurrency levels (text)"))
    requests: int = field(default=512, metadata=option("requests per concurrency level (text)"))
    max_seconds: float = field(default=20.0, metadata=option("time limit per concurrency level or scenario"))
    max_batch_size: int = field(default=32, metadata=option("of the batching server"))
    max_wait_ms: tuple[float, ...] = field(default=(0.0,), metadata=option(
        "of the batching server; several values: one batching server each, compared level by level"))
    rounds: int = field(default=1, metadata=option(
        "visit the servers this many times per level, in alternating order (for busy machines)"))
    threads: int | None = field(default=None, metadata=option("the servers' torch CPU threads (default: lame serve's)"))
    in_process: bool = field(default=False, metadata=option(
        "run the server in a thread of this process (quick check; lower numbers)"))
    image_format: str = field(default="png", metadata=option("images scenario: image format",
                                                             choices=("png", "jpeg", "webp", "gif")))
    image_side: int = field(default=4096, metadata=option("images scenario: pixels per side of each image"))
    images_per_request: int = field(default=8, metadata=option("images scenario: images per request"))
    heavy_clients: int = field(default=2, metadata=option("images scenario: clients sending large requests"))
    small_concurrency: int = field(default=4, metadata=option("images scenario: clients sending one-word requests"))
    server_flags: str | None = field(default=None, metadata=option(
        "images scenario: extra `lame serve` flags, e.g. '--max-image-pixels 16777216'"))
    json_output: str | None = field(default=None, metadata=option("also write the report as JSON here"))


@dataclass
class QualitySettings:
    """`lame bench quality`: the methods, seeds and data sweep (the budget is the quickstart's)."""

    methods: tuple[str, ...] = field(default=(), metadata=option("methods compared (default: the peers)"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=option("training seeds"))
    sweep_methods: tuple[str, ...] = field(default=("discriminative-matched", "lame"), metadata=option(
        "methods of the sample-efficiency sweep (given with no value: no sweep)", allow_empty=True))
    sweep_pairs: tuple[int, ...] = field(default=(250, 1000, 4000), metadata=option(
        "training pairs of the sweep (the full set is the main grid)", allow_empty=True))
    jobs: int = field(default=1, metadata=option("runs in parallel (each in its own process)"))
    timing_threads: int = field(default=1, metadata=option("torch threads of the side-by-side timing"))
    split: str = field(default="test", metadata=option(
        "the split summarised (every run is scored on both: choose on val, report test)", choices=("val", "test")))
    output: str = field(default="runs/quality", metadata=option("report folder; finished runs are reused"))


@dataclass
class IndexBenchSettings:
    """`lame bench index`: FAISS (flat, HNSW) against Milvus Lite (FLAT, HNSW) on random unit vectors."""

    vectors: int = field(default=100_000, metadata=option("random unit vectors indexed"))
    shape: str = field(default="qwen2-vl-2b", metadata=_shape(
        "the architecture whose embedding width the vectors have"))
    dim: int | None = field(default=None, metadata=option("the vectors' width (default: --shape's hidden size)"))
    queries: int = field(default=100, metadata=option("random unit queries, searched one at a time"))
    k: int = field(default=10, metadata=option("hits per query; recall@k is against exact search"))
    m: int = field(default=32, metadata=option("HNSW links per node"))
    ef_construction: int = field(default=80, metadata=option("HNSW candidates kept while linking a node"))
    ef_search: int = field(default=64, metadata=option("HNSW candidates searched (at least k)"))
    batch_size: int = field(default=1000, metadata=option("Milvus: vectors per insert"))
    threads: int | None = field(default=None, metadata=option(
        "FAISS (OpenMP) and numpy (BLAS) threads (default: the libraries'; 1 on a busy shared CPU)"))
    seed: int = 0
    quick: bool = field(default=False, metadata=_quick())

    def quick_version(self) -> "IndexBenchSettings":
        return replace(self, vectors=min(self.vectors, 2000), dim=min(self.dim or 64, 64),
                       queries=min(self.queries, 20), batch_size=min(self.batch_size, 500))


@dataclass
class ElasticSettings:
    """`lame bench elastic`: one elastic model (reason tokens and embedding size chosen at inference)
    against models trained at each fixed k, on tasks of the digits benchmark, over seeds. Every model
    trains with the same budget (the two stages of the quickstart's recipe, ``warmup_steps`` +
    ``joint_steps`` steps of ``batch_size``)."""

    ks: tuple[int, ...] = field(default=(0, 1, 2, 4, 8), metadata=option(
        "numbers of reason tokens: the elastic model's elastic_k (the last is its K), and one fixed model each"))
    dims: tuple[int, ...] = field(default=(128, 64, 32, 16), metadata=option(
        "the elastic model's Matryoshka sizes, descending; the first is the reference VLM's hidden size"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=option("training seeds"))
    tasks: tuple[str, ...] = field(default=("level0", "level1"), metadata=option(
        "digits tasks trained and scored (their training records only)"))
    warmup_steps: int = field(default=20, metadata=option("stage 1 steps of every model"))
    joint_steps: int = field(default=80, metadata=option("stage 2 steps of every model"))
    batch_size: int = field(default=32, metadata=option("pairs per step"))
    ablations: bool = field(default=False, metadata=option(
        "also an elastic model without Matryoshka sizes and a fixed-K model with them, to tell the two apart"))
    jobs: int = field(default=2, metadata=option("training runs at once, each in its own process"))
    threads: int = field(default=1, metadata=option("torch threads of each training run and of the timing"))
    timing_repeats: int = field(default=5, metadata=option("interleaved timing rounds; medians are reported"))
    queries_per_task: int | None = None  # scored queries per task (None: all of the split's)
    timing_queries: int = 64  # queries encoded one at a time per round
    timing_corpus: int = 256  # corpus items encoded in batches of 32 per round
    split: str = field(default="test", metadata=option("the split scored", choices=("val", "test")))
    output: str = field(default="runs/elastic", metadata=option("report folder; finished runs are reused"))
    quick: bool = field(default=False, metadata=_quick())

    def quick_version(self) -> "ElasticSettings":
        """A few steps and two k, for tests: every part of the report is there, the numbers mean nothing."""
        return replace(self, ks=(0, 2), dims=(128, 32), seeds=(0,), warmup_steps=1, joint_steps=2, batch_size=4,
                       jobs=1, timing_repeats=1, queries_per_task=6, timing_queries=2, timing_corpus=4,
                       quick=True)
