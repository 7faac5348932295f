"""Reading a model directory: the built reference model or any ONNX model.

Contract: ``load_model_dir(path)`` returns a ``ModelDirSpec``. A directory with ``model.json`` of
format ``edgecloud-model/1`` describes a sentence-embedding model (task ``sentence-embedding``:
tokenizer + ONNX variants), a raw ONNX model (task ``raw``) or a text-generation model (task
``text-generation``: each variant an onnxruntime-genai directory; ``cloud`` names the torch
checkpoint directory for the cloud worker, ``context_length`` the tokens it holds) or an image classifier
(task ``image-classification``: ONNX variants taking UINT8 [N, 224, 224, 3], ``labels`` a JSON list
of class names); a directory without it must hold
exactly one ``*.onnx`` file, served raw with inputs and outputs read from the graph. A variant
whose file is absent is left out (a device carries only the one it serves); the default variant
must be there unless another is asked for (``variant``). Problems raise ``ModelDirError`` naming
the directory entry, never half-load. ``pack_variant(src, out, variant)`` writes a directory that
holds only one variant (what to ship to a device: ~23-29 MB, as built, instead of ~109 MB for the reference model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecloud.datatypes import DATATYPES
from edgecloud.types import TensorSpec

MODEL_FORMAT = "edgecloud-model/1"
TASKS = ("sentence-embedding", "raw", "text-generation", "image-classification")
DIRECTORY_TASKS = ("text-generation",)
"""Tasks whose variants are directories (an onnxruntime-genai model: graph, weights, genai_config.json,
tokenizer), not single ONNX files."""


class ModelDirError(ValueError):
    pass


@dataclass(frozen=True)
class ModelDirSpec:
    path: Path
    name: str
    version: str
    task: str
    variants: dict[str, Path]
    default_variant: str
    tokenizer: Path | None = None
    max_sequence_length: int = 256
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def onnx_file(self, variant: str | None = None) -> Path:
        chosen = variant or self.default_variant
        if chosen not in self.variants:
            raise ModelDirError(f"{self.path.name}: no variant {chosen!r}; has {sorted(self.variants)}")
        return self.variants[chosen]


def _specs(entries: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(entries, list):
        raise ModelDirError(f"{where}: must be a list")
    specs = []
    for index, entry in enumerate(entries):
        try:
            name, datatype, shape = entry["name"], entry["datatype"], entry["shape"]
        except (KeyError, TypeError):
            raise ModelDirError(f"{where}[{index}]: needs name, datatype and shape") from None
        if datatype not in DATATYPES:
            raise ModelDirError(f"{where}[{index}].datatype: unknown datatype {datatype!r}")
        specs.append(TensorSpec(str(name), datatype, tuple(int(d) for d in shape)))
    return tuple(specs)


def load_model_dir(path: str | Path, variant: str | None = None) -> ModelDirSpec:
    root = Path(path)
    if not root.is_dir():
        raise ModelDirError(f"{root}: not a directory")
    manifest = root / "model.json"
    if not manifest.exists():
        onnx_files = sorted(root.glob("*.onnx"))
        if len(onnx_files) != 1:
            raise ModelDirError(f"{root}: without model.json the directory must hold exactly one .onnx file")
        return ModelDirSpec(root, root.name, "1", "raw", {"default": onnx_files[0]}, "default")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{manifest}: unreadable ({exc})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ModelDirError(f"{manifest}: format must be {MODEL_FORMAT!r}")
    task = meta.get("task", "raw")
    if task not in TASKS:
        raise ModelDirError(f"{manifest}: task must be one of {TASKS}")
    variants_raw = meta.get("variants") or ({"default": meta["onnx_file"]} if "onnx_file" in meta else {})
    if not variants_raw:
        raise ModelDirError(f"{manifest}: needs variants (or onnx_file)")
    present = Path.is_dir if task in DIRECTORY_TASKS else Path.is_file
    variants = {name: root / filename for name, filename in variants_raw.items() if present(root / filename)}
    default_variant = meta.get("default_variant") or next(iter(variants_raw))
    wanted = variant or default_variant
    if wanted not in variants:
        filename = variants_raw.get(wanted)
        why = f"{filename} is missing" if filename else f"no such variant; has {sorted(variants_raw)}"
        raise ModelDirError(f"{manifest}: variants.{wanted}: {why}")
    if default_variant not in variants:
        default_variant = wanted
    tokenizer = None
    if task == "sentence-embedding":
        tokenizer = root / meta.get("tokenizer", "tokenizer.json")
        if not tokenizer.is_file():
            raise ModelDirError(f"{manifest}: tokenizer file {tokenizer.name} is missing")
    known = {"format", "name", "version", "task", "variants", "onnx_file", "default_variant", "tokenizer",
             "max_sequence_length", "inputs", "outputs"}
    return ModelDirSpec(
        path=root,
        name=str(meta.get("name", root.name)),
        version=str(meta.get("version", "1")),
        task=task,
        variants=variants,
        default_variant=default_variant,
        tokenizer=tokenizer,
        max_sequence_length=int(meta.get("max_sequence_length", 256)),
        inputs=_specs(meta.get("inputs", []), f"{manifest.name}: inputs"),
        outputs=_specs(meta.get("outputs", []), f"{manifest.name}: outputs"),
        extra={k: v for k, v in meta.items() if k not in known},
    )


def pack_variant(src: str | Path, out: str | Path, variant: str | None = None) -> Path:
    """Copy the model directory ``src`` to ``out`` with only ``variant`` (default: the default one):
    its ONNX file(s), the tokenizer, the reports, and a ``model.json`` naming just that variant."""
    import shutil

    spec = load_model_dir(src, variant)
    chosen = variant or spec.default_variant
    root, target = Path(src), Path(out)
    if target.exists() and any(target.iterdir()):
        raise ModelDirError(f"{target}: exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    meta = json.loads((root / "model.json").read_text(encoding="utf-8"))
    onnx = spec.onnx_file(chosen)
    meta["variants"], meta["default_variant"] = {chosen: onnx.name}, chosen
    meta.pop("onnx_file", None)
    keep = [onnx, *root.glob(onnx.name + ".data")]  # external weights travel with their graph
    if isinstance(meta.get("labels"), str) and (root / meta["labels"]).is_file():
        keep.append(root / meta["labels"])
    if spec.tokenizer is not None:
        keep.append(spec.tokenizer)
    keep += [p for p in root.glob("report.*") if p.is_file()]
    meta.pop("cloud", None)  # the torch checkpoint stays with the cloud
    for file in keep:
        if file.is_dir():
            shutil.copytree(file, target / file.name)
        else:
            shutil.copy2(file, target / file.name)
    (target / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return target
