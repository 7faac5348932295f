"""Building a model directory without ever leaving a half-built one behind.

Contract: ``with staged(out_dir) as staging:`` yields a fresh hidden directory beside ``out_dir``;
when the block ends normally it replaces ``out_dir`` by renames (a reader never sees a half-built
directory, and the old one stays in place until then); when it raises, is interrupted (Ctrl-C) or
the process gets SIGTERM (turned into ``SystemExit`` while the block runs, from the main thread),
the staging directory is removed and the old ``out_dir`` is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["staged", "swap_in"]


def swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with the finished ``staging`` directory by renames."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".building", dir=out_dir.parent))
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield staging
        swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
