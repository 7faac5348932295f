"""Calling third-party build tools (exporters, optimizers, quantizers) quietly.

Contract: ``with quiet():`` silences stdout, Python warnings and ``logging`` for the block and
restores all three after it. The tools narrate every step and warn about their own internals;
none of it is actionable here, and pytest turns warnings into errors.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings


@contextlib.contextmanager
def quiet():
    """Silence stdout, warnings and logging for the block (see the module docstring)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
