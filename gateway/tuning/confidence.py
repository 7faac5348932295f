"""``edgecloud tune confidence``: the bar of confidence escalation (``min_confidence`` or ``min_margin``), from a set
of images or a recorded trace of edge answers with cloud answers.

    edgecloud tune confidence --edge HOST:PORT --cloud HOST:PORT --images DIR [--record trace.jsonl]
    edgecloud tune confidence --edge HOST:PORT --cloud HOST:PORT --sample 600   (bundled photo crops)
    edgecloud tune confidence --trace trace.jsonl [--target 0.995] [--yaml F] [--plot F]

Contract:
- A trace is JSON lines ``{"edge": {"top1": p, "top2": p, "class": i}, "cloud": {"class": i}}``, one
  per image (``--record`` writes it while measuring; the gateway never has to be involved).
- ``curve(pairs)``: for every candidate bar (each edge top-1 seen, plus 0 and 1), the share of
  images escalated (edge top-1 under the bar) and the share whose returned answer (the cloud's when
  escalated, else the edge's) agrees with the cloud's.
- ``recommend(pairs, target, rule)``: the lowest bar whose agreement reaches ``target``, i.e. the
  least escalation that does, for ``min_confidence`` (the edge's top-1) or ``min_margin`` (its top-1
  minus top-2); ``best_rule`` picks the one of the two that escalates fewer images (``--rule``). The images are split in two by position (``holdout``, default half): the bar
  is chosen on the first part and reported on the second, which took no part in choosing it.
- ``run(args)`` prints the table, writes a YAML snippet, a PNG (matplotlib) and JSON; exit 0 when
  the held-out agreement reaches the target, 2 when not, 1 for unusable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

__all__ = ["RULES", "Pairs", "add_arguments", "best_rule", "curve", "evaluate", "recommend", "run"]

EXIT_OK, EXIT_INPUT, EXIT_TARGET_MISSED = 0, 1, 2
MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class Pairs:
    """Per image: the edge's top-1 probability, top-2 probability and class, and the cloud's class."""

    top1: np.ndarray
    top2: np.ndarray
    edge_class: np.ndarray
    cloud_class: np.ndarray

    def __len__(self) -> int:
        return len(self.top1)

    def part(self, index: slice) -> Pairs:
        return Pairs(self.top1[index], self.top2[index], self.edge_class[index], self.cloud_class[index])

    @classmethod
    def from_lines(cls, lines) -> Pairs:
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                rows.append((float(entry["edge"]["top1"]), float(entry["edge"].get("top2", 0.0)),
                             int(entry["edge"]["class"]), int(entry["cloud"]["class"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"line {number}: not an edge/cloud answer pair ({exc})") from None
        if not rows:
            raise ValueError("no answer pairs")
        columns = list(zip(*rows))
        return cls(np.array(columns[0]), np.array(columns[1]), np.array(columns[2]), np.array(columns[3]))

    def lines(self) -> list[str]:
        return [json.dumps({"edge": {"top1": float(a), "top2": float(b), "class": int(c)}, "cloud": {"class": int(d)}})
                for a, b, c, d in zip(self.top1, self.top2, self.edge_class, self.cloud_class)]


RULES = {"confidence": "min_confidence", "margin": "min_margin"}
"""The bars escalation has: the edge's top-1 probability, or its top-1 minus top-2."""


def _scores(pairs: Pairs, rule: str) -> np.ndarray:
    return pairs.top1 if rule == "confidence" else pairs.top1 - pairs.top2


def evaluate(pairs: Pairs, bar: float, rule: str = "confidence") -> tuple[float, float]:
    """(share escalated, share of returned answers agreeing with the cloud) with the ``rule``'s bar at ``bar``."""
    escalated = _scores(pairs, rule) < bar
    agrees = escalated | (pairs.edge_class == pairs.cloud_class)
    return float(escalated.mean()), float(agrees.mean())


def curve(pairs: Pairs, rule: str = "confidence") -> list[tuple[float, float, float]]:
    """``(bar, share escalated, agreement)`` for every distinct bar that changes the answer, ascending."""
    bars = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], np.nextafter(_scores(pairs, rule), 2.0)]))
    return [(float(bar), *evaluate(pairs, float(bar), rule)) for bar in bars]


def recommend(pairs: Pairs, target: float, rule: str = "confidence") -> tuple[float, float, float]:
    """The lowest bar of ``rule`` reaching ``target`` agreement: ``(bar, share escalated, agreement)``."""
    for bar, _, agreement in curve(pairs, rule):
        if agreement >= target:
            bar = min(1.0, math.ceil(bar * 1e4) / 1e4)  # a bar an operator can write, never below the exact one
            return (bar, *evaluate(pairs, bar, rule))
    return 1.0, 1.0, 1.0  # pragma: no cover - escalating everything always agrees


def best_rule(pairs: Pairs, target: float, rules=tuple(RULES)) -> tuple[str, float, float, float]:
    """The rule (and its recommendation) that reaches ``target`` escalating the fewest images."""
    options = [(rule, *recommend(pairs, target, rule)) for rule in rules]
    return min(options, key=lambda option: (option[2], -option[3]))


def measure(edge: str, cloud: str, images: list, model: str = MODEL, timeout_s: float = 30.0) -> Pairs:
    """Classify ``images`` on the edge and the cloud servers (gRPC, one at a time)."""
    from gateway.client import Client

    rows = []
    with Client(edge, timeout_s=timeout_s) as edge_client, Client(cloud, timeout_s=timeout_s) as cloud_client:
        for image in images:
            mine = edge_client.classify([image], top_k=2, model=model).classes[0]
            theirs = cloud_client.classify([image], top_k=1, model=model).classes[0]
            rows.append((mine[0].score, mine[1].score, mine[0].index, theirs[0].index))
    columns = list(zip(*rows))
    return Pairs(*(np.array(column) for column in columns))


def _images(args: argparse.Namespace) -> list:
    if args.images:
        files = sorted(p for p in Path(args.images).iterdir()
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        if not files:
            raise ValueError(f"{args.images}: no .jpg / .png / .webp files")
        return [str(p) for p in files]
    from edge_agent.build.image_corpus import augmented

    return list(augmented(args.sample, args.seed))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", help="a recorded trace (JSON lines of edge and cloud answers)")
    source.add_argument("--images", help="a folder of .jpg / .png / .webp images, classified on --edge and --cloud")
    source.add_argument("--sample", type=int, help="this many crops of the bundled photographs (edgecloud[build])")
    parser.add_argument("--edge", help="the edge agent's gRPC address (with --images / --sample)")
    parser.add_argument("--cloud", help="a cloud worker's gRPC address (with --images / --sample)")
    parser.add_argument("--model", default=MODEL, help=f"the classifier (default {MODEL})")
    parser.add_argument("--seed", type=int, default=99, help="--sample's crops (default 99)")
    parser.add_argument("--record", help="also write the measured answers as a trace (JSON lines)")
    parser.add_argument("--rule", choices=("best", *RULES), default="best",
                        help="which bar to recommend: min_confidence, min_margin (top-1 minus top-2), or best: "
                             "the one that escalates fewer images at the target (default)")
    parser.add_argument("--target", type=float, default=0.995,
                        help="agreement with the cloud the bar must reach (default 0.995)")
    parser.add_argument("--holdout", type=float, default=0.5,
                        help="share of the images kept out of choosing, to report on (default 0.5)")
    parser.add_argument("--yaml", default="tune-confidence.yaml", help="the routing: snippet ('-' for none)")
    parser.add_argument("--plot", default="tune-confidence.png", help="the PNG ('-' for none)")
    parser.add_argument("--json", help="also write the curve and the figures as JSON")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if args.trace:
            pairs = Pairs.from_lines(Path(args.trace).read_text(encoding="utf-8").splitlines())
        else:
            if not (args.edge and args.cloud):
                raise ValueError("--images / --sample need --edge and --cloud")
            pairs = measure(args.edge, args.cloud, _images(args), args.model)
            if args.record:
                Path(args.record).write_text("\n".join(pairs.lines()) + "\n", encoding="utf-8")
        if not 0 <= args.holdout < 1:
            raise ValueError("--holdout must be in [0, 1)")
    except (OSError, ValueError) as exc:
        print(f"edgecloud tune confidence: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - an unreachable server, say
        print(f"edgecloud tune confidence: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    cut = len(pairs) - int(round(len(pairs) * args.holdout))
    chosen_on, held_out = pairs.part(slice(0, cut)), pairs.part(slice(cut, None))
    rule, bar, share, agreement = best_rule(chosen_on, args.target,
                                            tuple(RULES) if args.rule == "best" else (args.rule,))
    key = RULES[rule]
    check = held_out if len(held_out) else chosen_on
    held_share, held_agreement = evaluate(check, bar, rule)
    never = evaluate(pairs, 0.0)[1]
    print(f"{len(pairs)} images: edge and cloud agree on {never:.1%} without escalation", file=out)
    curves = {name: curve(chosen_on, name) for name in RULES}
    for name, rows in curves.items():
        print(f"{RULES[name]:>15} {'escalated':>10} {'agreement':>10}", file=out)
        step = max(1, len(rows) // 8)
        for row_bar, row_share, row_agreement in rows[::step]:
            print(f"{row_bar:>15.3f} {row_share:>10.1%} {row_agreement:>10.2%}", file=out)
    print(f"recommended {key} {bar} (chosen on {len(chosen_on)} images: {share:.1%} escalated, "
          f"{agreement:.2%} agree); held out ({len(check)} images): {held_share:.1%} escalated, "
          f"{held_agreement:.2%} agree", file=out)
    figures = {"images": len(pairs), "chosen_on": len(chosen_on), "held_out": len(held_out), "target": args.target,
               "rule": key, "bar": bar, "escalated": share, "agreement": agreement,
               "held_out_escalated": held_share, "held_out_agreement": held_agreement,
               "agreement_without_escalation": never}
    if args.yaml and args.yaml != "-":
        Path(args.yaml).write_text(f"routing:\n  escalation:\n    {args.model}:\n      {key}: {bar}\n",
                                   encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "curves": curves}, indent=2) + "\n", encoding="utf-8")
    if args.plot and args.plot != "-":
        _plot(args.plot, curves, rule, bar, share, agreement, args.target)
    return EXIT_OK if held_agreement >= args.target else EXIT_TARGET_MISSED


def _plot(path: str, curves, rule: str, bar: float, share: float, agreement: float, target: float) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("edgecloud tune confidence: no plot (matplotlib is missing: pip install 'edgecloud[tune]')",
              file=sys.stderr)
        return
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    for (name, rows), colour in zip(curves.items(), ("tab:blue", "tab:green")):
        ax.plot([r[1] * 100 for r in rows], [r[2] * 100 for r in rows], color=colour, label=f"{RULES[name]} sweep")
    ax.axhline(target * 100, color="grey", linestyle=":", label=f"target {target:.1%}")
    ax.scatter([share * 100], [agreement * 100], color="tab:red", zorder=3, label=f"recommended {RULES[rule]} {bar}")
    ax.set_xlabel("images escalated to the cloud (%)")
    ax.set_ylabel("answers agreeing with the cloud (%)")
    ax.legend(loc="lower right")
    fig.savefig(path)
