"""What a `lame bench quality` report says, as the command's text table and as markdown tables for the
docs: Hit@1 per task, the paired per-seed gaps to both discriminative controls, decoded accuracy per
family, ms per query from the one interleaved timing, and the data-size sweep."""

from __future__ import annotations

import numpy as np

from lame_testbed.quickstart.settings import METHODS

from .quality import ALL, FAMILY_NAMES, paired_gaps
from .timing import ms_per_query

QUALITY_COLUMNS = (("L0", "hit@1/level0"), ("L1-3", "hit@1/reasoning"),
                   *((name, f"hit@1/{name}") for name in FAMILY_NAMES), ("families", "hit@1/families"))
CONTROLS = ("discriminative", "discriminative-matched")
FAMILIES_KEY = "hit@1/families"


def format_quality(report: dict) -> str:
    """The quality report as the command prints it: a row per method, the paired gaps, the sweep, targets."""
    summary, ms = report["summary"], ms_per_query(report["timing"])
    split = report.get("split", "test")
    lines = [f"{'method':<26}" + "".join(f"{label:>14}" for label, _ in QUALITY_COLUMNS)
             + f"{'decoded fam.':>14}{'ms/q b1':>9}{'b32':>7}"]
    for name, row in summary.items():
        cells = "".join(f"{row[k]['mean']:>8.3f}±{row[k]['std']:.3f}" if k in row else f"{'-':>14}"
                        for _, k in QUALITY_COLUMNS)
        decoded = [row[f"decoded/{f}"]["mean"] for f in FAMILY_NAMES if f"decoded/{f}" in row]
        decoded_text = f"{np.mean(decoded):.3f}" if decoded else "-"
        t = ms.get(name, {})
        lines.append(f"{name:<26}{cells}{decoded_text:>14}{t.get('batch1', float('nan')):>9.2f}"
                     f"{t.get('batch32', float('nan')):>7.2f}")
    lines.append(f"({split} Hit@1, mean ± sample std over seeds {report['seeds']}; L1-3: mean of the "
                 f"arithmetic levels 1-3; families: mean of {', '.join(FAMILY_NAMES)})")
    runs = report.get("runs", [])
    for control in ("discriminative", "discriminative-matched"):
        gaps = {m: paired_gaps(runs, m, control, "hit@1/families", split) for m in summary if m != control}
        gaps = {m: g for m, g in gaps.items() if g}
        if gaps:
            lines.append(f"paired per-seed gap to {control} on the families: " + ", ".join(
                f"{m} {g['mean']:+.3f}±{g['std']:.3f}" for m, g in gaps.items()))
    for method, row in report.get("sweep", {}).items():
        cells = ", ".join(f"{pairs}: " + " ".join(f"{k.split('/')[-1]} {v[k]['mean']:.3f}±{v[k]['std']:.3f}"
                                                   for k in ("hit@1/families", "hit@1/reasoning") if k in v)
                          for pairs, v in row.items())
        lines.append(f"sweep {method:<16} Hit@1 by training pairs: {cells}")
    for name, target in report.get("targets", {}).items():
        lines.append(f"target {name}: {'met' if target['met'] else 'NOT met'}")
    return "\n".join(lines)


def markdown_tables(report: dict) -> str:
    """Markdown: Hit@1 with the paired gaps to both controls; decoded accuracy and speed; the sweep."""
    summary, runs, split = report["summary"], report.get("runs", []), report.get("split", "test")
    ms = ms_per_query(report.get("timing", {}))
    head = ["method", "seeds", *(label for label, _ in QUALITY_COLUMNS),
            *(f"gap to {c} (paired)" for c in CONTROLS)]
    lines = [f"Hit@1 on {split}, mean ± sample std over seeds; gaps: per-seed differences on the families, "
             "mean ± std, in points", "", _row(head), _rule(len(head))]
    for name, row in summary.items():
        cells = [_label(name), str(row[FAMILIES_KEY]["n"] if FAMILIES_KEY in row else "-")]
        cells += [_cell(row.get(key), bold=key == FAMILIES_KEY) for _, key in QUALITY_COLUMNS]
        cells += [_points(paired_gaps(runs, name, c, FAMILIES_KEY, split)) if name != c else "-"
                  for c in CONTROLS]
        lines.append(_row(cells))
    reference = next((c for c in CONTROLS if c in ms), None)
    ratio = f"; ratio to {reference}" if reference else ""
    head = ["method", *(f"decoded {f}" for f in FAMILY_NAMES), "decoded level 0", "ms/query, batch 1",
            "ms/query, batch 32", "train s"]
    lines += ["", f"Decoded accuracy (the fraction of {split} queries whose latents decode to the answer) "
              f"and speed (one process, the models interleaved{ratio})", "",
              _row(head), _rule(len(head))]
    for name, row in summary.items():
        cells = [_label(name)]
        cells += [_cell(row.get(f"decoded/{task}")) for task in (*FAMILY_NAMES, "level0")]
        cells += [_speed(ms, name, reference, batch) for batch in ("batch1", "batch32")]
        cells.append(f"{row['train_seconds']['mean']:.0f}" if "train_seconds" in row else "-")
        lines.append(_row(cells))
    sweep = report.get("sweep") or {}
    if sweep:
        counts = sorted({p for row in sweep.values() for p in row},
                        key=lambda p: (p == ALL, p != ALL and int(p)))
        head = ["method", *(f"{p} pairs" for p in counts)]
        lines += ["", f"Hit@1 on the families ({split}) by training pairs", "", _row(head), _rule(len(head))]
        for name, row in sweep.items():
            lines.append(_row([_label(name), *(_cell(row.get(p, {}).get(FAMILIES_KEY)) for p in counts)]))
    return "\n".join(lines) + "\n"


def _label(name: str) -> str:
    return f"{METHODS[name].label or name} (`{name}`)" if name in METHODS else name


def _cell(stats: dict | None, bold: bool = False) -> str:
    if not stats:
        return "-"
    text = f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"**{text}**" if bold else text


def _points(gap: dict | None) -> str:
    return f"{100 * gap['mean']:+.1f} ± {100 * gap['std']:.1f}" if gap else "-"


def _speed(ms: dict, name: str, reference: str | None, batch: str) -> str:
    value = ms.get(name, {}).get(batch)
    if value is None:
        return "-"
    base = ms.get(reference, {}).get(batch) if reference else None
    return f"{value:.2f} ({value / base:.2f}x)" if base else f"{value:.2f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _rule(columns: int) -> str:
    return "|" + "---|" * columns
