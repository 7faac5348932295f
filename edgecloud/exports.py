"""Package exports that resolve on first use, so importing a package stays cheap.

Contract: ``lazy_exports(package, {name: module})`` returns the ``__getattr__`` and ``__dir__`` a
package's ``__init__`` installs: ``package.NAME`` imports ``module`` (only then) and returns its
``NAME``; an unknown name raises ``AttributeError``. The package sets ``__all__ = sorted(exports)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
