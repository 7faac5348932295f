"""The SDK's public surface is what ``__all__`` says, and it imports without the heavy runtimes."""

from __future__ import annotations

import subprocess
import sys

import gateway.client


def test_all_lists_exactly_the_public_names():
    public = {name for name in vars(gateway.client) if not name.startswith("_")}
    modules = {"async_client", "calls", "generation", "inputs", "results", "retry", "settings", "sync_client", "tls"}
    assert set(gateway.client.__all__) == public - modules
    assert sorted(gateway.client.__all__) == gateway.client.__all__


def test_both_clients_have_the_same_api():
    def api(cls):
        return {name for name in vars(cls) if not name.startswith("_")}

    assert api(gateway.client.Client) == api(gateway.client.AsyncClient)


def test_imports_without_torch_or_onnxruntime():
    code = ("import sys, gateway.client; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnxruntime', 'tokenizers'}); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
