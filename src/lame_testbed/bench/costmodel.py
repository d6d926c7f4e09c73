"""A cost model of the speed benchmark: what each method computes and moves, timed by this machine's constants.

Every method shares one prompt pass (vision tower + language-model blocks over the prompt); the peers add
calls that each touch every weight of the language model for a handful of positions:

* LaME / discriminative: ``prep + vision + blocks x pass(L + latent)``: matrix products of
  ``2 x params x tokens`` FLOPs, compute-bound, at the machine's GEMM rate ``F``.
* sequential latent, k steps: the pass, then k one-position calls of every block.
* explicit CoT, N tokens: the pass, then N - 1 decoding calls of every block AND the output layer
  (vocabulary x hidden: 151,936 x 1,536 for Qwen2-VL-2B), reading the growing KV cache, then one cached
  step for ``[EMBED]``.

A call over ``B`` positions of a weight matrix costs ``params x tau(B)``, where ``tau(B)`` (seconds per
parameter) is timed on this machine at that row count: at B = 1 it is the time to stream a weight from
memory (``bytes per parameter / bandwidth``), at large B the GEMM rate (``2 B / F``). Per-call overhead
(Python, operator dispatch, small tensors) is measured separately on the 64-wide model of the same code,
where the arithmetic is negligible, as ``a + b x blocks`` per call kind. Featurisation is the benchmark's
own measured ``prep`` time. Nothing here is fitted to the timed rows: the prediction is a check.

The ratio of a peer to LaME is then ``1 + steps x (cost of a step) / (cost of the pass)``: a step costs
the *bytes* of the weights (batch 1) and the pass their *FLOPs* times the prompt length, so the ratios
follow the machine's FLOP/s-to-bandwidth ratio and the query length (:func:`explain`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Dims:
    """Parameter counts and sizes of one architecture (exact: counted on the meta device)."""

    name: str
    model_type: str
    hidden: int
    vocab: int
    layers: int  # language-model blocks (full depth)
    block_params: int  # one language-model block
    q_dim: int  # heads x head_dim
    kv_dim: int  # key/value heads x head_dim
    vision_layers: int
    vision_hidden: int
    vision_block_params: int
    patch_embed_params: int
    merger_params: int  # the patch merger (applied to patches / merge^2 tokens), deepstack mergers included
    deepstack: int  # extra mergers (Qwen3-VL), applied when their block is kept
    window_patches: int | None  # Qwen2.5-VL windowed vision attention: patches per window (None: full)
    full_attention_blocks: int  # Qwen2.5-VL: blocks with full attention
    merge: int = 2

    @property
    def block_elements(self) -> int:
        """Elements one position writes in element-wise ops of a language-model block (two RMS norms, rotary
        embeddings of q and k, residual adds, the gated activation), approximately."""
        intermediate = (self.block_params - 2 * self.hidden * (self.q_dim + self.kv_dim)) // (3 * self.hidden)
        return 12 * self.hidden + 5 * (self.q_dim + self.kv_dim) + 3 * intermediate

    @property
    def vision_block_elements(self) -> int:
        """The same for one patch in a vision block (two norms, rotary embeddings, residuals, activation)."""
        intermediate = (self.vision_block_params - 4 * self.vision_hidden ** 2) // (2 * self.vision_hidden)
        return 22 * self.vision_hidden + 4 * intermediate

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden


def dims_of(shape: str) -> Dims:
    """The sizes of a shape (:mod:`lame.modeling.shapes`), from its architecture built on the meta device."""
    from lame.modeling.adapters import get_adapter
    from lame.modeling.shapes import architecture, get_shape, shaped_backbone_config

    spec = get_shape(shape)
    config = shaped_backbone_config(spec)
    with torch.device("meta"):
        backbone = get_adapter(config.model_type).model_class(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    text, vision = config.text_config, config.vision_config
    visual = backbone.model.visual
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    raw = architecture(spec.architecture)["vision_config"]
    window = raw.get("window_size")
    return Dims(
        name=shape, model_type=config.model_type, hidden=text.hidden_size, vocab=text.vocab_size,
        layers=text.num_hidden_layers, block_params=count(backbone.model.language_model.layers[0]),
        q_dim=text.num_attention_heads * head_dim, kv_dim=text.num_key_value_heads * head_dim,
        vision_layers=vision.depth, vision_hidden=getattr(vision, "embed_dim", None) or vision.hidden_size,
        vision_block_params=count(visual.blocks[0]), patch_embed_params=count(visual.patch_embed),
        merger_params=count(visual.merger), deepstack=len(getattr(visual, "deepstack_merger_list", [])),
        window_patches=(window // spec.patch_size) ** 2 if window else None,
        full_attention_blocks=len(raw.get("fullatt_block_indexes", [])) if window else vision.depth,
    )


ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class Machine:
    """Constants of one machine and dtype: seconds per weight parameter of a matrix product, by matrix kind
    (``block``: a language-model block's, ``head``: the output layer, ``vision``: a vision block's) and by
    how many rows (positions) the product has; per-call overheads; bandwidth for the KV cache."""

    name: str
    tau: dict[str, dict[int, float]]  # kind -> rows -> seconds per weight parameter
    bandwidth: float  # bytes/s, weight streaming at one row (for reading the KV cache)
    bytes_per_param: int
    overhead: dict = field(default_factory=dict)  # kind -> (a, b): seconds per call = a + b x blocks
    elementwise: float = 0.0  # seconds per element written by an element-wise op (norms, activations, adds)

    def per_param(self, kind: str, rows: int) -> float:
        """Seconds per weight parameter of a product over ``rows`` positions, interpolated log-linearly
        between the timed row counts (the largest one's rate beyond it: the GEMM rate has saturated)."""
        table = self.tau[kind]
        sizes = sorted(table)
        if rows <= sizes[0]:
            return table[sizes[0]] * rows / sizes[0] if rows < sizes[0] else table[sizes[0]]
        if rows >= sizes[-1]:
            return table[sizes[-1]] * rows / sizes[-1]
        hi = next(i for i, r in enumerate(sizes) if r >= rows)
        r0, r1 = sizes[hi - 1], sizes[hi]
        t0, t1 = math.log(table[r0]), math.log(table[r1])
        w = (math.log(rows) - math.log(r0)) / (math.log(r1) - math.log(r0))
        return math.exp(t0 + w * (t1 - t0))

    def gflops(self, kind: str, rows: int) -> float:
        return 2 * rows / self.per_param(kind, rows) / 1e9

    def over(self, kind: str, blocks: int) -> float:
        a, b = self.overhead.get(kind, (0.0, 0.0))
        return a + b * blocks


def _median_time(fn, device: torch.device, repeats: int = 5) -> float:
    """Median seconds of ``fn()``: process CPU time with one torch thread on a CPU (a shared machine's
    other tenants do not count), else wall time (synchronised on a GPU)."""
    from .common import timed

    clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    fn()
    return statistics.median(timed(fn, device, clock) for _ in range(repeats))


def calibrate(dims: Dims, head_rows: tuple[int, ...] = (1, 32), dtype: torch.dtype = torch.float32,
              tiny_family: str | None = None, device: str | torch.device = "cpu", log=None) -> Machine:
    """This machine's constants, timed with the architecture's own matrix shapes (with one torch thread in
    process CPU time). ``head_rows``: the row counts the output layer is used at (the batch sizes).
    ``tiny_family``: also time the per-call overheads on the 64-wide model of that family."""
    device = torch.device(device)
    torch.manual_seed(0)
    size = torch.tensor([], dtype=dtype).element_size()
    shapes = {
        "block": (dims.block_params // (3 * dims.hidden), dims.hidden),  # about one MLP matrix
        "vision": (dims.vision_block_params // (3 * dims.vision_hidden), dims.vision_hidden),
        "head": (dims.vocab, dims.hidden),
    }
    tau = {}
    with torch.inference_mode():
        for kind, shape in shapes.items():
            weight = torch.randn(*shape, dtype=dtype, device=device)
            rows = sorted(set(head_rows) | {1}) if kind == "head" else ROWS
            tau[kind] = {}
            for r in rows:
                x = torch.randn(r, weight.shape[1], dtype=dtype, device=device)
                tau[kind][r] = _median_time(lambda: torch.nn.functional.linear(x, weight), device,
                                            3 if kind == "head" else 5) / weight.numel()
            del weight
        big = torch.randn(4096, 4096, dtype=dtype, device=device)  # 16M elements: past the caches
        elementwise = _median_time(lambda: big * 1.5, device) / big.numel()  # a new tensor, as the model's ops
        del big
    machine = Machine(name=device.type, tau=tau, bandwidth=size / tau["head"][1], bytes_per_param=size,
                      elementwise=elementwise)
    if tiny_family:
        machine.overhead = tiny_overheads(tiny_family, device)
    if log:
        log(f"cost model: matrix products at {machine.gflops('block', 1024):.0f} GFLOP/s (1024 rows), "
            f"{machine.gflops('block', 32):.0f} (32 rows); one row streams weights at "
            f"{machine.bandwidth / 1e9:.1f} GB/s; element-wise ops {machine.elementwise * 1e9:.2f} ns per element")
    return machine


def tiny_overheads(family: str, device: str | torch.device = "cpu") -> dict:
    """Per-call overhead ``(a, b)`` (seconds = a + b x language-model blocks) of a prompt pass, a
    sequential step and a generated token, timed on 64-wide models with 2 and 4 blocks (the arithmetic
    there is a few MFLOP; what remains is Python, dispatch and small-tensor work)."""
    from lame.modeling.adapters import get_adapter
    from lame.modeling.baselines import variant_of
    from lame.modeling.lame import LaMEModel
    from lame.modeling.tiny import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer
    from lame.config import LaMEConfig
    from .common import random_image

    adapter = get_adapter(family)
    out: dict[str, list[tuple[int, float]]] = {"pass": [], "step": [], "token": []}
    for blocks in (2, 4):
        torch.manual_seed(0)
        tokenizer = build_tiny_tokenizer()
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
        backbone = adapter.model_class(adapter.tiny_config(len(tokenizer), ids, layers=blocks)).eval()
        base = LaMEModel.from_components(LaMEConfig(num_reason_tokens=8, use_decoder=False, max_length=4096),
                                         backbone, tokenizer, adapter.tiny_image_processor()).to(device)
        query = [{"text": "find the digit " * 8, "image": random_image(0, 56)}]
        batch = base.collate(base.featurize(query))
        seq = variant_of(base, "sequential", latent_steps=16).eval()
        seq0 = variant_of(base, "sequential", latent_steps=0).eval()
        cot_short = variant_of(base, "cot", cot_max_new_tokens=4).eval()
        cot_long = variant_of(base, "cot", cot_max_new_tokens=20).eval()
        for m in (cot_short, cot_long):
            m.force_length = True
        device = base.device
        with torch.inference_mode():
            forward = _median_time(lambda: base(batch), device)
            steps = _median_time(lambda: seq(batch), device) - _median_time(lambda: seq0(batch), device)
            tokens = _median_time(lambda: cot_long(batch), device) - _median_time(lambda: cot_short(batch), device)
        out["pass"].append((blocks, forward))
        out["step"].append((blocks, steps / 16))
        out["token"].append((blocks, tokens / 16))
    fitted = {}
    for kind, ((n1, t1), (n2, t2)) in out.items():
        b = max(0.0, (t2 - t1) / (n2 - n1))
        fitted[kind] = (max(0.0, t1 - b * n1), b)
    return fitted


def vision_time(d: Dims, m: Machine, patches: int, images: int, blocks: int) -> float:
    """Seconds of the vision tower over ``images`` images of ``patches`` patches each, ``blocks`` blocks kept.
    Matrix products run over every image's patches at once; attention is per image."""
    rows = images * patches
    full = min(blocks, d.full_attention_blocks) if d.window_patches else blocks
    windowed = blocks - full
    attention = images * 4 * d.vision_hidden * patches * (full * patches + windowed * (d.window_patches or patches))
    merged = rows // d.merge**2
    kept_deepstack = min(d.deepstack, blocks)  # squeezed onto the kept blocks (lame.modeling.shapes)
    products = (blocks * d.vision_block_params + d.patch_embed_params) * m.per_param("vision", rows)
    mergers = d.merger_params * (1 + kept_deepstack) * m.per_param("vision", merged)
    elementwise = blocks * rows * d.vision_block_elements * m.elementwise
    return products + mergers + attention / (2 * rows / m.per_param("vision", rows)) + elementwise


def pass_time(d: Dims, m: Machine, tokens: int, batch: int, blocks: int) -> float:
    """Seconds of ``blocks`` language-model blocks over ``batch`` sequences of ``tokens`` (causal attention)."""
    rows = batch * tokens
    rate = 2 * rows / m.per_param("block", rows)  # FLOP/s of this product size
    return blocks * (d.block_params * m.per_param("block", rows) + batch * 2 * tokens * tokens * d.q_dim / rate
                     + rows * d.block_elements * m.elementwise)


@dataclass
class Query:
    tokens: int  # prompt tokens (template, text, visual tokens), latent block not counted
    patches: int  # vision patches of its image (4 x visual tokens); 0 without an image


def predict(d: Dims, m: Machine, family: str, k: int, batch: int, query: Query, blocks: int,
            vision_blocks: int, prep: float = 0.0) -> dict:
    """Predicted seconds of one call of a method (``family``: discriminative, lame, sequential, cot), by part."""
    latent = k + 1 if family == "lame" else 1
    prompt = query.tokens + (0 if family == "cot" else latent)
    parts = {"prep": prep,
             "vision": vision_time(d, m, query.patches, batch, vision_blocks) if query.patches else 0.0,
             "pass": pass_time(d, m, prompt, batch, blocks), "steps": 0.0, "head": 0.0, "cache": 0.0,
             "overhead": m.over("pass", blocks)}
    step = blocks * d.block_params * m.per_param("block", batch)
    if family == "sequential":
        parts["steps"] = k * step
        parts["cache"] = sum(_kv_read(d, m, batch, prompt + j, blocks) for j in range(k))
        parts["overhead"] += k * m.over("step", blocks)
    elif family == "cot":
        # generate: the prompt pass with the logits of its last position, N - 1 decoding calls, then one
        # cached call over the last token and the latent block
        parts["head"] = k * d.head_params * m.per_param("head", batch)
        parts["steps"] = (k - 1) * step + blocks * d.block_params * m.per_param("block", 2 * batch)
        parts["cache"] = sum(_kv_read(d, m, batch, prompt + j, blocks) for j in range(k))
        parts["overhead"] += k * m.over("token", blocks)
    parts["total"] = sum(parts.values())
    return parts


def _kv_read(d: Dims, m: Machine, batch: int, context: int, blocks: int) -> float:
    """Reading the KV cache of ``context`` positions for one new position, every block, every row."""
    return batch * blocks * 2 * context * d.kv_dim * m.bytes_per_param / m.bandwidth


def predicted_ratio(d: Dims, m: Machine, query: Query, batch: int, blocks: int, vision_blocks: int,
                    family: str, steps: int, prep: float = 0.0) -> float:
    """A peer's predicted time over LaME K = 8's, for curves against depth or query length."""
    lame = predict(d, m, "lame", 8, batch, query, blocks, vision_blocks, prep)["total"]
    return predict(d, m, family, steps, batch, query, blocks, vision_blocks, prep)["total"] / lame


def machine_dict(m: Machine) -> dict:
    return asdict(m)


def machine_from_dict(raw: dict) -> Machine:
    raw = dict(raw)
    raw["tau"] = {kind: {int(r): t for r, t in table.items()} for kind, table in raw["tau"].items()}
    raw["overhead"] = {kind: tuple(v) for kind, v in raw.get("overhead", {}).items()}
    return Machine(**raw)


def model_report(rows: list[dict], shape: str, depth: dict, query: Query, machine: Machine,
                 reference: str = "lame-K8", cot_goal: int = 256) -> dict:
    """Predicted times of the benchmark's rows (at the measured depth: the check) and at the full depth,
    and the goal ratios both ways. ``rows``: the speed report's rows (their measured ``preprocess_ms``
    is the featurisation time)."""
    d = dims_of(shape)
    out = {"machine": machine_dict(machine), "query": asdict(query), "dims": asdict(d), "rows": []}
    for full in (False, True):
        blocks = depth["full_layers"] if full else depth["layers"]
        vision = depth["full_vision_layers"] if full else depth["vision_layers"]
        for row in rows:
            p = predict(d, machine, row["family"], row["k"], row["batch_size"], query, blocks, vision,
                        prep=row["preprocess_ms"] / 1000)
            out["rows"].append({"name": row["name"], "batch_size": row["batch_size"], "full_depth": full,
                                "blocks": blocks, "vision_blocks": vision,
                                "predicted_ms": 1000 * p["total"], "parts_ms": {k: 1000 * v for k, v in p.items()},
                                "measured_ms": None if full else row["latency_ms"]})
    for r in out["rows"]:
        ref = next(x for x in out["rows"] if x["name"] == reference and x["batch_size"] == r["batch_size"]
                   and x["full_depth"] == r["full_depth"])
        r["predicted_ratio"] = r["predicted_ms"] / ref["predicted_ms"]
    return out


def format_model(model: dict) -> str:
    rows = model["rows"]
    lines = [f"{'cost model':<16} {'batch':>5} {'measured ms':>12} {'predicted':>10} {'pred/meas':>9} "
             f"{'x ref':>7} | {'full depth ms':>13} {'x ref':>7}"]
    for r in (r for r in rows if not r["full_depth"]):
        full = next(x for x in rows if x["full_depth"] and x["name"] == r["name"] and x["batch_size"] == r["batch_size"])
        lines.append(f"{r['name']:<16} {r['batch_size']:>5} {r['measured_ms']:>12.1f} {r['predicted_ms']:>10.1f} "
                     f"{r['predicted_ms'] / r['measured_ms']:>9.2f} {r['predicted_ratio']:>7.2f} | "
                     f"{full['predicted_ms']:>13.0f} {full['predicted_ratio']:>7.2f}")
    return "\n".join(lines)


def plot_model(report: dict, png) -> object:
    """Two panels from a speed report with a cost model: the goal ratios against the language-model blocks
    kept (vision blocks in proportion; measured points at the run's depth), and against the query's length
    at the full depth (text-only queries, and queries with the run's image)."""
    from lame.extras import pyplot

    plt = pyplot(png.name)
    model = report.get("cost_model")
    if plt is None or not model:
        return None
    d, m = Dims(**model["dims"]), machine_from_dict(model["machine"])
    q = Query(**model["query"])
    depth = report["depth"]
    sizes = sorted({r["batch_size"] for r in report["rows"]})
    prep = {r["batch_size"]: r["preprocess_ms"] / 1000 for r in report["rows"] if r["name"] == report["reference"]}
    goal_cot = report["settings"]["cot_goal_tokens"]
    peers = [("cot", goal_cot, f"CoT({goal_cot}) / LaME(8)"), ("sequential", 8, "sequential(8) / LaME(8)")]
    fig, (by_depth, by_length) = plt.subplots(1, 2, figsize=(13, 4.8))
    full, full_vision = depth["full_layers"], depth["full_vision_layers"]
    blocks = list(range(1, full + 1))
    styles = {"cot": "-", "sequential": "--"}
    for bs in sizes:
        for family, steps, label in peers:
            ys = [predicted_ratio(d, m, q, bs, n, max(1, round(n * full_vision / full)), family, steps, prep[bs])
                  for n in blocks]
            line, = by_depth.plot(blocks, ys, styles[family], label=f"{label}, batch {bs} (model)")
            name = f"cot-N{steps}" if family == "cot" else f"sequential-K{steps}"
            measured = [r["ratio_vs_reference"] for r in report["rows"] if r["name"] == name and r["batch_size"] == bs]
            if measured:
                by_depth.plot([depth["layers"]], measured, "o", color=line.get_color())
    for goal in (report["settings"]["goals"]["cot_over_lame_min"], report["settings"]["goals"]["sequential_over_lame_min"]):
        by_depth.axhline(goal, color="grey", linewidth=0.6, linestyle=":")
        by_length.axhline(goal, color="grey", linewidth=0.6, linestyle=":")
    by_depth.set_xlabel(f"language-model blocks kept of {full} (vision blocks in proportion); dots: measured")
    by_depth.set_ylabel("time / LaME K=8's")
    by_depth.set_yscale("log")
    by_depth.set_title(f"{d.name}, {q.tokens}-token queries ({q.patches} image patches)")
    by_depth.legend(fontsize=7)
    lengths = [16, 32, 64, 128, 256, 512, 1024, 2048]
    for bs in sizes[:1] + sizes[-1:] if len(sizes) > 1 else sizes:
        for patches, kind in ((0, "text only"), (q.patches, f"+ image ({q.patches} patches)")):
            for family, steps, label in peers[:1]:
                ys = [predicted_ratio(d, m, Query(n + (patches // d.merge**2), patches), bs, full, full_vision,
                                      family, steps, prep[bs]) for n in lengths]
                by_length.plot(lengths, ys, "-" if patches else "-.", label=f"{label}, {kind}, batch {bs}")
    by_length.set_xscale("log")
    by_length.set_yscale("log")
    by_length.set_xlabel("text tokens of the query (visual tokens added for image queries)")
    by_length.set_ylabel("time / LaME K=8's (model, full depth)")
    by_length.set_title(f"On this machine ({m.name}): where the ~60x claim holds")
    by_length.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
