"""OpenAI-style error objects: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

from __future__ import annotations

from ..batching.job import JobTimeout
from ..errors import Gemma4Error, InputError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 504: "timeout"}


class APIError(Exception):
    """An error the server answers with: a status, a message for the client and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body OpenAI clients parse."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for input the client can fix."""
    return APIError(400, message, param=param, code=code)


def as_api_error(exc: BaseException) -> APIError:
    """Any exception → an APIError; only our own errors' messages reach the client, never a traceback."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InputError):
        return bad_request(str(exc))
    if isinstance(exc, JobTimeout):
        return APIError(504, "the request timed out", code="timeout")
    if isinstance(exc, Gemma4Error):
        return APIError(500, str(exc), code="model_error")
    return APIError(500, f"internal server error ({type(exc).__name__}); see the server log", code="internal_error")
