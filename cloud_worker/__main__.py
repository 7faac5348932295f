"""``python -m cloud_worker [--config FILE]``: the same as ``edgecloud serve cloud``."""

from __future__ import annotations

import argparse
import sys

from cloud_worker.main import run
from edgecloud.config import ConfigError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m cloud_worker", description="run one cloud worker")
    parser.add_argument("--config", default=None, help="YAML config file (defaults apply without one)")
    args = parser.parse_args()
    try:
        sys.exit(run(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
