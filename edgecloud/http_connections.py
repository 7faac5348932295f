"""Connection-level guards for the REST front, below what an aiohttp handler can see.

Contract: ``GuardedAppRunner(app, max_connections=N)`` is an ``aiohttp.web.AppRunner`` whose
connections
- beyond ``max_connections`` open at once are closed as soon as they are accepted (one warning per
  burst), so slow clients cannot hold every socket of the process;
- log a request aiohttp could not parse (answered 400 by aiohttp) as one line, not a traceback;
- answer a body in a ``Content-Encoding`` aiohttp cannot decode (``br`` without the Brotli package,
  ``zstd``, anything unknown) with 415 and a JSON error naming ``accepted_encodings``, where aiohttp
  answers 400 in plain text with advice to install a package;
- fail the request reading a body when the body turns out malformed after its headers (a bad chunk
  size, a chunk longer than it says): the read raises ``MalformedBody`` at once. aiohttp itself
  only queues its 400 behind the request, which waits for the rest of a body that never comes.
The handler answers and calls ``close_after_response(request)``: the connection closes once that
answer is sent, without aiohttp's lingering read of the rest of the body.

Why: aiohttp 3.14 parses bodies in the connection's ``data_received`` and, on a parse error, queues
an error message for *after* the current request instead of failing the payload that request is
reading. This needs aiohttp's ``RequestHandler`` internals (``_messages``, ``_current_request``);
where they are missing (another aiohttp), the guard does nothing and the body-read timeout of the
REST front still bounds the wait (408).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler

try:  # aiohttp's record of a message it could not parse
    from aiohttp.web_protocol import _ErrInfo as _ParseError
except ImportError:  # pragma: no cover - another aiohttp
    _ParseError = None

__all__ = ["GuardedAppRunner", "MalformedBody", "close_after_response"]

log = logging.getLogger(__name__)

_WARN_EVERY_S = 10.0


class MalformedBody(Exception):
    """The request's body is not valid HTTP framing; ``str()`` says why."""


class _GuardedHandler(RequestHandler):
    __slots__ = ()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        server = self._manager
        if isinstance(exc, ContentEncodingError) and getattr(server, "encoding_error", None) is not None:
            encoding = request.headers.get("Content-Encoding", "")[:32]
            self.logger.info("refused a body in Content-Encoding %r (415)", encoding)
            response = server.encoding_error(encoding)
            response.force_close()
            return response
        return super().handle_error(request, status, exc, message)

    def close_after_response(self) -> None:
        """With a response that does not keep the connection alive: close once the answer is sent,
        without lingering over the rest of the body (aiohttp reads it for up to 10 s first)."""
        self._lingering_time = 0.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        server = self._manager
        limit = getattr(server, "max_connections", None)
        if limit is not None and len(server.connections) > limit:
            server.refused += 1
            now = time.monotonic()
            if now - server.warned_at >= _WARN_EVERY_S:
                server.warned_at = now
                log.warning("http: %d connections open, the limit (server.max_http_connections); refusing "
                            "new ones (%d so far)", limit, server.refused)
            self.force_close()
            transport.close()

    def data_received(self, data: bytes) -> None:
        messages = getattr(self, "_messages", None)
        queued = len(messages) if messages is not None else 0
        super().data_received(data)
        if _ParseError is None or messages is None or len(messages) <= queued:
            return
        error = messages[-1][0]
        request = getattr(self, "_current_request", None)
        if isinstance(error, _ParseError) and request is not None and not request.content.is_eof():
            request.content.set_exception(MalformedBody(str(error.message).strip().splitlines()[0]))


class _OneLineParseErrors(logging.Filter):
    """aiohttp logs each unparsable request with a traceback at ERROR: a client's mistake, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args, record.exc_info = "bad HTTP request answered 400: %s", (
                str(error.message).strip().splitlines()[0] if error.message else type(error).__name__,), None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_PARSE_ERRORS = _OneLineParseErrors()


class _GuardedServer(web.Server):
    max_connections: int | None = None
    encoding_error = None
    refused = 0
    warned_at = float("-inf")

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, max_connections: int | None = None,
                 encoding_error: Callable[[str], web.Response] | None = None, **kwargs):
        """``encoding_error(encoding)`` builds the answer to a body in an encoding that cannot be read."""
        super().__init__(app, **kwargs)
        self._max_connections = max_connections
        self._encoding_error = encoding_error
        server_log = logging.getLogger("aiohttp.server")
        if _PARSE_ERRORS not in server_log.filters:
            server_log.addFilter(_PARSE_ERRORS)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if type(server) is web.Server:  # the same object, guarded (no new state aiohttp would miss)
            server.__class__ = _GuardedServer
            server.max_connections = self._max_connections
            server.encoding_error = self._encoding_error
        return server


def close_after_response(request: web.BaseRequest) -> None:
    """Close ``request``'s connection once its answer is sent (a body that was not read)."""
    closer = getattr(request.protocol, "close_after_response", None)
    if closer is not None:
        closer()
