"""When a request's client stops waiting, however it said so.

Contract: ``MAX_DEADLINE_S`` caps every deadline (a day is forever here; larger ones, such as
``grpc-timeout: 99999999H``, overflow downstream). ``with_timeout_parameter(deadline, request)``
brings ``deadline`` (monotonic, or None) forward to the request's ``timeout`` parameter when it
has one: microseconds from now, as tritonclient's ``timeout=`` sends it on gRPC and HTTP alike,
and as a multiplexing gateway sets it per request. Any other value of the parameter is ignored.
"""

from __future__ import annotations

import time

from edgecloud.codec import TIMEOUT_PARAMETER

__all__ = ["MAX_DEADLINE_S", "with_timeout_parameter"]

MAX_DEADLINE_S = 86_400.0


def with_timeout_parameter(deadline: float | None, request) -> float | None:
    timeout_us = request.parameters.get(TIMEOUT_PARAMETER)
    if type(timeout_us) is not int or timeout_us <= 0:
        return deadline
    ends = time.monotonic() + min(timeout_us / 1e6, MAX_DEADLINE_S)
    return ends if deadline is None or ends < deadline else deadline
