"""Where an answer was served, as every front says it: response parameters and HTTP headers.

Contract: ``SERVED_BY`` (edge | cloud | cache; ``edge+cloud`` for a stream continued on the cloud
mid-answer) and ``ROUTE_REASON`` (a ``gateway.routing.Reason``) are response parameters;
``where_served_headers(response)`` turns them into ``X-Edgecloud-Served-By`` /
``X-Edgecloud-Route-Reason`` headers (HTTP fronts).
"""

from __future__ import annotations

from edgecloud.types import InferResponse

__all__ = ["ROUTE_REASON", "ROUTE_REASON_HEADER", "SERVED_BY", "SERVED_BY_HEADER", "where_served_headers"]

SERVED_BY = "served_by"
ROUTE_REASON = "route_reason"
SERVED_BY_HEADER = "X-Edgecloud-Served-By"
ROUTE_REASON_HEADER = "X-Edgecloud-Route-Reason"


def where_served_headers(response: InferResponse | None) -> dict[str, str]:
    if response is None:
        return {}
    headers = {}
    if SERVED_BY in response.parameters:
        headers[SERVED_BY_HEADER] = str(response.parameters[SERVED_BY])
    if ROUTE_REASON in response.parameters:
        headers[ROUTE_REASON_HEADER] = str(response.parameters[ROUTE_REASON])
    return headers
