"""``python -m cloud_worker [--config FILE]``: the same as ``edgecloud serve cloud``."""

from __future__ import annotations

import sys

from edgecloud.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "cloud", *sys.argv[1:]]))
