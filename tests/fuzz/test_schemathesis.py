"""``docs/openapi.yaml`` against the real REST front: schemathesis generates requests for every
operation (valid by the schema, and invalid on purpose) and sends them to a ``RestFront`` over a
real edge agent's dataplane on port 0.

Checks on every answer: never a server error (5xx; the edge is ready, so even 503 would be a
finding), the status is one the description documents, the Content-Type and body match what it
documents, and a request the schema forbids is refused (4xx). Whether a schema-valid request is
*accepted* is not checked: the description covers the protocol, and most schema-valid requests do
not fit the one model served (``text`` BYTES [-1]), so 400 is their right answer.

Bounded: ``MAX_EXAMPLES`` per operation and thirteen operations (the generate extension's
``generate`` and ``generate_stream`` among them, sent here to the embedding model); about 15-40 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from edgecloud.http_front import TIMEOUT_HEADER
from tests.hostile.servers import InProcessEdgeRest

DESCRIPTION = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
MAX_EXAMPLES = 50


def no_server_error(ctx, response, case):
    """``not_a_server_error``, except the documented 504 of a client that set a deadline the
    server cannot meet (``X-Request-Timeout-Ms: 5e-324``)."""
    if response.status_code == 504 and TIMEOUT_HEADER.lower() in {name.lower() for name in case.headers or {}}:
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def edge_rest(model_dir: Path):
    """The shared REST front over a real edge agent (1 MiB bodies, batches of 64)."""
    rest = InProcessEdgeRest(model_dir, {"max_batch_size": 64}, 1024 * 1024).start()
    yield rest
    rest.stop()


schema = schemathesis.openapi.from_path(DESCRIPTION)
# A request the schema forbids may also be refused as too large (413, documented): a shape over the
# element limit is found before a missing field of a later input.
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]  # a new list: the default is shared


def test_the_description_is_valid_openapi():
    schemathesis.openapi.from_path(DESCRIPTION).validate()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_rest_front_keeps_the_description(case, edge_rest):
    case.call_and_validate(base_url=f"http://127.0.0.1:{edge_rest.port}", checks=CHECKS, timeout=10)
    assert not [record for record in edge_rest.errors if "Error handling request" not in record], edge_rest.errors
