"""Regenerate the Python stubs for ``protos/inference.proto``.

Contract: ``python -m protos.generate`` writes ``inference_pb2.py``, ``inference_pb2.pyi`` and
``inference_pb2_grpc.py`` next to the .proto, byte-for-byte reproducible for a given
grpcio-tools version (pinned in ``pyproject.toml``). ``generate_into(dir)`` writes them to
another directory so the staleness test can compare without touching the tree.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent
PROTO_FILES = ("inference.proto",)
GENERATED_FILES = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def generate_into(out_root: Path) -> Path:
    """Generate stubs under ``out_root/protos`` and return that directory."""
    from grpc_tools import protoc  # dev-only dependency

    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as src_root:
        # Compile from a copy rooted at "protos/" so imports read ``from protos import ...``.
        src_protos = Path(src_root) / "protos"
        src_protos.mkdir()
        for name in PROTO_FILES:
            shutil.copy(PROTO_DIR / name, src_protos / name)
        out_root.mkdir(parents=True, exist_ok=True)
        args = [
            "grpc_tools.protoc",
            f"-I{src_root}",
            f"-I{include}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            *[f"protos/{name}" for name in PROTO_FILES],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
    return out_root / "protos"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate_into(Path(tmp))
        for name in GENERATED_FILES:
            shutil.copy(generated / name, PROTO_DIR / name)
            print(f"wrote protos/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
