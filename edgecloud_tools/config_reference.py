"""The configuration reference, generated from the config models' field docstrings.

Contract: ``reference_markdown()`` documents every field of the edge, cloud and gateway configs
(path, type, default, description) in one Markdown page; ``docs/config.md`` is its output and a
test fails when they differ (``edgecloud config reference > docs/config.md`` refreshes it).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("pathlib.", "")
    for module in ("edgecloud.config.", "gateway.config.", "gateway.auth.", "gateway.cache.settings.",
                   "cloud_worker.config.", "edge_agent.config."):
        text = text.replace(module, "")
    return text


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{value!r}`"
    if info.default is PydanticUndefined:
        return "**required**"
    return f"`{info.default!r}`"


def _rows(model: type[BaseModel], prefix: str, seen: set) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        doc = (info.description or "").replace("\n", " ").replace("|", "\\|")
        kind = _type_name(info.annotation).replace("|", "\\|")
        rows.append(f"| `{path}` | {kind} | {_default(info)} | {doc} |")
        for sub in _models_in(info.annotation):
            if sub not in seen or sub.__name__ in ("ServerSettings",):
                child = f"{path}[]." if typing.get_origin(info.annotation) in (list,) else f"{path}."
                rows += _rows(sub, child, seen | {sub})
    return rows


def reference_markdown() -> str:
    from cloud_worker.config import CloudConfig
    from edge_agent.config import EdgeConfig
    from gateway.config import GatewayConfig

    parts = ["# Configuration reference",
             "",
             "Generated from the config models (`edgecloud config reference`); every field's text is its",
             "docstring. Each process reads one YAML file (`--config FILE`); environment variables override",
             "fields: `EDGECLOUD_EDGE_`, `EDGECLOUD_CLOUD_` or `EDGECLOUD_GATEWAY_` followed by the path with",
             "`__` between levels, e.g. `EDGECLOUD_GATEWAY_ROUTING__THRESHOLD_MS=250`. `edgecloud config check",
             "FILE --kind KIND` validates a file and names the path of every error.",
             ""]
    for title, model in (("Gateway (`edgecloud serve gateway`)", GatewayConfig),
                         ("Edge agent (`edgecloud serve edge`)", EdgeConfig),
                         ("Cloud worker (`edgecloud serve cloud`)", CloudConfig)):
        parts += [f"## {title}", "", "| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        parts += _rows(model, "", {model})
        parts.append("")
    return "\n".join(parts)


def main() -> int:
    print(reference_markdown())
    return 0


