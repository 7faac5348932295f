"""Container health check: is the server's ``grpc.health.v1`` service SERVING?

    python /usr/local/bin/edgecloud-healthcheck HOST:PORT [--service NAME] [--timeout SECONDS]

Exit status 0 when the service answers SERVING; 1 when it answers anything else (NOT_SERVING
during a graceful shutdown), cannot be reached, or does not answer within the timeout. That is
the contract of Docker's HEALTHCHECK and compose's ``service_healthy``.

Python rather than the grpc_health_probe binary: every image already has Python, grpcio and
grpcio-health-checking (core dependencies), and the build then fetches nothing outside the
package indexes. It speaks plaintext only, like the Kubernetes gRPC probe.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 2.0) -> int:
    """Return the exit status for one health check of ``service`` at ``address``."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{address}: {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgecloud-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help='service to ask about ("" = the whole server)')
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    return check(args.address, args.service, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
