"""``edgecloud model build --model efficientnet``: the image classifier's model directory.

Contract: ``build_image_dir(out_dir)`` returns ``out_dir`` holding model.json (task
``image-classification``, variants ``int8`` (default) and ``fp32``), model.fp32.onnx,
model.int8.onnx, labels.json, report.json and report.txt. Both graphs take UINT8 [N, 224, 224, 3]
and answer FP32 probabilities [N, 1000] (preprocessing and softmax are inside the graph, as in
``edgecloud.image_model.load_torch_classifier``, whose FP32 answers they are checked against).

The INT8 graph is static QDQ, per-channel weights, activations calibrated (MinMax) on crops of the
bundled photographs (``image_corpus``, seed ``CALIBRATION_SEED``). Its recipe comes from a
sensitivity analysis on a separate selection set: every group (the stem, each of the 16 MBConv
blocks, the head, the classifier) is kept in FP32 alone and the answers (top-1 agreement where FP32
is confident, mean KL divergence) and batch-1 latency measured; the groups that help the answers
most are then kept in FP32 one by one until top-1 agreement on the selection set's confident images
(FP32 top-1 >= 0.5) reaches ``SELECTION_TARGET`` or the file would pass the size budget; last, groups
next to the FP32 region are added to it when that makes the model faster (no quantize / dequantize
at the boundary; some INT8 kernels, a 3-channel stem's, are slower here than FP32) without making
its answers worse. The report measures the result on held-out crops (another seed) that
took no part in any choice: top-1 agreement (all, and where FP32 is confident), top-5 overlap,
mean KL, file sizes, and batch-1 / batch-8 latency of torch FP32, ORT FP32 and ORT INT8 measured
side by side. A finished directory is swapped in whole (``staging``); one that exists is kept
unless ``force``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.build.image_corpus import CALIBRATION_SEED, HELDOUT_SEED, SOURCE_FILES, augmented
from edge_agent.build.latency import interleaved, summary
from edge_agent.build.report import MIB, missed_targets, table
from edge_agent.build.staging import staged
from edgecloud.image_model import (IMAGE_INPUT, INPUT_NAME, MODEL_NAME, MODEL_VERSION, OUTPUT_NAME, PROBABILITIES,
                                   TASK, imagenet_labels, load_torch_classifier)

DEFAULT_OUT = Path("models") / MODEL_NAME
SELECTION_SEED = 11
CONFIDENT = 0.5
SELECTION_TARGET = 0.99
"""Top-1 agreement on the selection set's confident images the search stops at (the held-out
target is 0.98: the search aims higher so the held-out figure has room)."""
SIZE_BUDGET = 0.30
SPEED_GAIN = 0.97
"""A group kept in FP32 for speed must take the batch-1 latency under this fraction of what it was."""
QUANTIZED_OPS = ("Conv", "Gemm", "Add", "Clip")
"""Clip (ReLU6) must be among them: it lets the quantizer fold the activation into the conv's
output range ([0, 6], not the conv's raw range)."""
PARITY_TOLERANCE = 1e-4
_GROUP = re.compile(r"^/net/(_conv_stem|_blocks\.\d+|_conv_head|_fc)/")


class ImageBuildError(RuntimeError):
    pass


def classification_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How ``candidate`` probabilities [N, C] agree with ``reference``: top-1 agreement on all rows
    and on rows where the reference is confident (top-1 >= 0.5), mean top-5 overlap, mean KL."""
    top1 = reference.argmax(1) == candidate.argmax(1)
    confident = reference.max(1) >= CONFIDENT
    top5_ref = np.argsort(-reference, axis=1)[:, :5]
    top5_cand = np.argsort(-candidate, axis=1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5_ref, top5_cand)])
    eps = 1e-8
    kl = np.sum(reference * (np.log(reference + eps) - np.log(candidate + eps)), axis=1)
    return {"top1_agreement": float(top1.mean()),
            "top1_agreement_confident": float(top1[confident].mean()) if confident.any() else float("nan"),
            "confident_images": int(confident.sum()), "confident_disagreements": int((~top1 & confident).sum()),
            "top5_overlap": float(overlap), "mean_kl": float(kl.mean()), "images": int(len(reference))}


def _session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # sessions side by side
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predict(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([run(images[i:i + batch]) for i in range(0, len(images), batch)])


def ort_runner(path: Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    session = _session(path, threads)
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def torch_runner(model) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images)).numpy()
    return run


def export_fp32(model, path: Path) -> Path:
    import torch

    example = torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
    torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=17,
                      dynamo=False)
    return path


def node_groups(graph_path: Path) -> dict[str, list[str]]:
    """The quantizable nodes of the exported graph by architectural group, in graph order."""
    import onnx

    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(graph_path), load_external_data=False).graph.node:
        match = _GROUP.match(node.name)
        if match and node.op_type in QUANTIZED_OPS:
            groups.setdefault(match.group(1).lstrip("_"), []).append(node.name)
    return groups


class _Reader:
    """onnxruntime's calibration data reader over a UINT8 image array."""

    def __init__(self, images: np.ndarray, batch: int = 8):
        self._batches = iter([{INPUT_NAME: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # pragma: no cover - the calibrator reads once
        pass


def quantize(prepared: Path, out: Path, calibration: np.ndarray, keep_fp32: list[str]) -> Path:
    """Static QDQ INT8 (per-channel weights, MinMax activations) with the nodes ``keep_fp32`` left out."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(prepared), str(out), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=keep_fp32,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"]})  # logits stay FP32
    return out


class _Steps:
    def __init__(self, progress: Callable[[str], None]):
        self.progress, self.count = progress, 0
        self.started = self._last = time.perf_counter()

    def done(self, what: str, total: int = 7) -> None:
        now = time.perf_counter()
        self.count += 1
        self.progress(f"[{self.count}/{total}] {what} ({now - self._last:.1f}s)")
        self._last = now


def _relative_latency(candidate: Path, reference: Path, image: np.ndarray, rounds: int = 40) -> float:
    """Batch-1 p50 of ``candidate`` over ``reference``, one thread each, called in turn."""
    runs = {"candidate": ort_runner(candidate), "reference": ort_runner(reference)}
    samples = interleaved({name: (lambda run=run: run(image)) for name, run in runs.items()}, rounds)
    return float(np.median(samples["candidate"]) / np.median(samples["reference"]))


def _search(prepared: Path, scratch: Path, calibration: np.ndarray, selection: np.ndarray, reference: np.ndarray,
            fp32_bytes: int, progress: Callable[[str], None]) -> tuple[list[str], list[dict[str, Any]]]:
    """The groups to keep in FP32 and every trial: a sensitivity analysis (each group alone in FP32:
    its effect on the answers and on batch-1 latency), greedy promotion of the groups that help the
    answers most until the selection target holds, then a speed pass: the groups next to the FP32
    region join it when that makes the model faster (no quantize / dequantize at the boundary; some
    INT8 kernels, a 3-channel stem's, are slower here than FP32) without making its answers worse."""
    groups = node_groups(prepared)
    trials: list[dict[str, Any]] = []
    image = np.ascontiguousarray(selection[:1])

    def trial(name: str, kept: list[str], versus: Path | None = None) -> tuple[dict[str, Any], Path]:
        path = quantize(prepared, scratch / f"trial{len(trials)}.onnx", calibration,
                        [n for g in kept for n in groups[g]])
        metrics = classification_agreement(reference, predict(ort_runner(path), selection))
        entry = {"name": name, "fp32_groups": list(kept), "bytes": path.stat().st_size,
                 "size_ratio": path.stat().st_size / fp32_bytes, **metrics}
        if versus is not None:
            entry["latency_vs_base"] = _relative_latency(path, versus, image)
        trials.append(entry)
        return entry, path

    base, base_path = trial("all int8", [])
    base["latency_vs_base"] = 1.0
    progress(f"    all int8: selection top-1 {base['top1_agreement']:.3f}, confident "
             f"{base['top1_agreement_confident']:.3f}, KL {base['mean_kl']:.4f}")
    single: dict[str, dict[str, Any]] = {}
    for group in groups:
        single[group], _ = trial(f"{group} fp32", [group], versus=base_path)
    gains = sorted(((entry["top1_agreement_confident"] - base["top1_agreement_confident"],
                     base["mean_kl"] - entry["mean_kl"], group) for group, entry in single.items()), reverse=True)
    progress("    most sensitive: " + ", ".join(f"{g} (confident +{a:.3f}, KL -{d:.4f})" for a, d, g in gains[:5]))
    kept: list[str] = []
    current, current_path = base, base_path
    for _, gain, group in gains:
        if current["top1_agreement_confident"] >= SELECTION_TARGET or gain <= 0:
            break
        candidate, path = trial(f"+{group}", kept + [group])
        if candidate["size_ratio"] <= SIZE_BUDGET and candidate["mean_kl"] < current["mean_kl"]:
            kept, current, current_path = kept + [group], candidate, path
            progress(f"    +{group}: confident {current['top1_agreement_confident']:.3f}, "
                     f"top-1 {current['top1_agreement']:.3f}, KL {current['mean_kl']:.4f}")
    # Speed pass: widen the FP32 region to its neighbours when that is faster (an INT8 boundary
    # costs a quantize / dequantize, and some INT8 kernels, a 3-channel stem's, are slower here).
    order = list(groups)
    tried: set[str] = set()
    while True:
        neighbours = [order[i + step] for i, group in enumerate(order) if group in kept for step in (-1, 1)
                      if 0 <= i + step < len(order) and order[i + step] not in kept and order[i + step] not in tried]
        if not neighbours:
            break
        group = neighbours[0]
        tried.add(group)
        candidate, path = trial(f"+{group} (speed)", kept + [group], versus=current_path)
        if (candidate["latency_vs_base"] < SPEED_GAIN and candidate["size_ratio"] <= SIZE_BUDGET
                and candidate["top1_agreement_confident"] >= current["top1_agreement_confident"]
                and candidate["mean_kl"] <= current["mean_kl"]):
            kept, current, current_path = kept + [group], candidate, path
            progress(f"    +{group} for speed: {candidate['latency_vs_base']:.2f}x the latency, "
                     f"KL {current['mean_kl']:.4f}")
    return kept, trials


def _latency(runners: dict[str, Callable[[np.ndarray], np.ndarray]], images: np.ndarray,
             iterations: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per batch size, each runtime on one thread (an edge core), called in turn."""
    import torch

    torch.set_num_threads(1)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for batch in (1, 8):
        chunk = np.ascontiguousarray(images[:batch])
        samples = interleaved({name: (lambda run=run: run(chunk)) for name, run in runners.items()},
                              iterations if batch == 1 else max(10, iterations // 4), budget_s=120)
        out[f"batch{batch}"] = {name: summary(values) for name, values in samples.items()}
    return out


def render_text(report: dict[str, Any]) -> str:
    lines = [f"Quantization report: {report['model']} (static INT8, QDQ, per-channel, MinMax)",
             f"built in {report['build_seconds']:.1f} s; {report['corpus']['calibration']} calibration, "
             f"{report['corpus']['selection']} selection, {report['corpus']['heldout']} held-out crops of "
             f"{report['corpus']['photographs']} bundled photographs",
             f"kept in FP32 by the sensitivity search: {', '.join(report['fp32_groups']) or 'nothing'}",
             "\nHeld-out agreement with torch FP32"]
    rows = [[name, m["top1_agreement"], m["top1_agreement_confident"],
             f"{m['confident_images'] - m['confident_disagreements']}/{m['confident_images']}", m["top5_overlap"],
             m["mean_kl"]] for name, m in report["accuracy"].items()]
    lines.append(table(rows, ["variant", "top-1", "top-1 confident", "confident agree", "top-5 overlap", "mean KL"]))
    sizes = report["sizes"]
    lines.append("\nFiles")
    lines.append(table([[k, v / MIB] for k, v in sizes["bytes"].items()] + [["int8 / fp32", sizes["ratio"]]],
                       ["file", "MiB"]))
    lines.append("\nLatency (one thread each, interleaved, ms)")
    rows = [[batch, name, s["p50_ms"], s["p99_ms"]] for batch, by in report["latency"].items() for name, s in by.items()]
    lines.append(table(rows, ["batch", "runtime", "p50", "p99"]))
    lines.append("\nTargets")
    lines.append(table([[t["target"], t["value"], t["met"]] for t in report["targets"]], ["target", "value", "met"]))
    lines.append("\nSensitivity trials (selection set)")
    lines.append(table([[t["name"], t["size_ratio"], t["top1_agreement"], t["top1_agreement_confident"], t["mean_kl"],
                         t.get("latency_vs_base")] for t in report["trials"]],
                       ["trial", "size", "top-1", "confident", "mean KL", "latency x"]))
    return "\n".join(lines) + "\n"


def build_image_dir(out_dir: Path, *, force: bool = False, progress: Callable[[str], None] = print,
                    calibration_images: int = 200, selection_images: int = 200, heldout_images: int = 800,
                    latency_iterations: int = 60) -> Path:
    out_dir = Path(out_dir)
    if (out_dir / "model.json").exists() and not force:
        progress(f"{out_dir} exists (model.json); --force rebuilds it")
        return out_dir
    started = time.perf_counter()
    steps = _Steps(progress)
    with staged(out_dir) as staging:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        model = load_torch_classifier()
        fp32 = export_fp32(model, staging / "model.fp32.onnx")
        torch_run = torch_runner(model)
        calibration = augmented(calibration_images, CALIBRATION_SEED)
        selection = augmented(selection_images, SELECTION_SEED)
        heldout = augmented(heldout_images, HELDOUT_SEED)
        parity = float(np.abs(ort_runner(fp32)(heldout[:8]) - torch_run(heldout[:8])).max())
        if parity > PARITY_TOLERANCE:
            raise ImageBuildError(f"the FP32 ONNX export differs from torch by {parity:.2e}")
        steps.done(f"exported FP32 ONNX (max |ORT - torch| {parity:.1e}); {len(calibration)} calibration, "
                   f"{len(selection)} selection, {len(heldout)} held-out crops")
        scratch = staging / ".scratch"
        scratch.mkdir()
        prepared = scratch / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        selection_ref = predict(torch_run, selection)
        heldout_ref = predict(torch_run, heldout)
        steps.done("graph prepared for quantization; torch FP32 answers computed")
        kept, trials = _search(prepared, scratch, calibration, selection, selection_ref, fp32.stat().st_size, progress)
        steps.done(f"sensitivity search: {len(trials)} trials, kept in FP32: {', '.join(kept) or 'nothing'}")
        groups = node_groups(prepared)
        int8 = quantize(prepared, staging / "model.int8.onnx", calibration, [n for g in kept for n in groups[g]])
        steps.done("INT8 graph written")
        accuracy = {"onnx fp32": classification_agreement(heldout_ref, predict(ort_runner(fp32), heldout)),
                    "onnx int8": classification_agreement(heldout_ref, predict(ort_runner(int8), heldout))}
        steps.done("held-out accuracy measured")
        latency = _latency({"torch fp32": torch_run, "onnx fp32": ort_runner(fp32), "onnx int8": ort_runner(int8)},
                           heldout, latency_iterations)
        steps.done("latency measured")
        sizes = {"bytes": {"model.fp32.onnx": fp32.stat().st_size, "model.int8.onnx": int8.stat().st_size}}
        sizes["ratio"] = sizes["bytes"]["model.int8.onnx"] / sizes["bytes"]["model.fp32.onnx"]
        b1 = latency["batch1"]
        speedup = b1["onnx fp32"]["p50_ms"] / b1["onnx int8"]["p50_ms"]
        int8_acc = accuracy["onnx int8"]
        targets = [
            {"target": "top-1 agreement where FP32 is confident >= 0.98", "value": int8_acc["top1_agreement_confident"],
             "met": int8_acc["top1_agreement_confident"] >= 0.98},
            {"target": "INT8 file <= 30% of FP32", "value": sizes["ratio"], "met": sizes["ratio"] <= SIZE_BUDGET},
            {"target": "batch-1 p50 >= 2x ORT FP32", "value": speedup, "met": speedup >= 2.0},
        ]
        for entry in trials:
            entry.pop("images", None)
        report = {"model": MODEL_NAME, "format": "onnx", "build_seconds": time.perf_counter() - started,
                  "corpus": {"calibration": len(calibration), "selection": len(selection), "heldout": len(heldout),
                             "photographs": len(SOURCE_FILES), "seeds": {"calibration": CALIBRATION_SEED,
                                                                         "selection": SELECTION_SEED,
                                                                         "heldout": HELDOUT_SEED}},
                  "fp32_groups": kept, "accuracy": accuracy, "sizes": sizes, "latency": latency,
                  "speedup_int8_vs_ort_fp32_b1": speedup, "targets": targets, "trials": trials}
        import shutil

        shutil.rmtree(scratch)
        (staging / "labels.json").write_text(json.dumps(list(imagenet_labels())) + "\n", encoding="utf-8")
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        text = render_text(report)
        (staging / "report.txt").write_text(text, encoding="utf-8")
        spec = lambda s: {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}  # noqa: E731
        manifest = {"format": "edgecloud-model/1", "name": MODEL_NAME, "version": MODEL_VERSION, "task": TASK,
                    "variants": {"int8": "model.int8.onnx", "fp32": "model.fp32.onnx"}, "default_variant": "int8",
                    "labels": "labels.json", "inputs": [spec(IMAGE_INPUT)], "outputs": [spec(PROBABILITIES)],
                    "input_alternatives": {IMAGE_INPUT.name: [[d, list(s)] for d, s in IMAGE_INPUT.alternatives]}}
        (staging / "model.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        steps.done("report written")
        progress(text)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibration-images", type=int, default=200,
                        help="efficientnet: crops that calibrate the activations (default: 200)")
    parser.add_argument("--heldout-images", type=int, default=800,
                        help="efficientnet: held-out crops the report measures on (default: 800)")


def run(args: argparse.Namespace) -> int:
    out = build_image_dir(args.out or DEFAULT_OUT, force=args.force, calibration_images=args.calibration_images,
                          heldout_images=args.heldout_images, latency_iterations=args.latency_iterations)
    return missed_targets(out) if getattr(args, "strict", False) else 0
