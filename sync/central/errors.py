"""The two ways a request fails: an `ApiError` answer, or a payload field that does not fit."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An answer with the contract's `Error` shape: a stable code and a short message."""

    def __init__(
        self, status: int, code: str, message: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"error": self.code}
        if self.message:
            body["message"] = self.message
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def unavailable(message: str) -> ApiError:
    """503 with `Retry-After: 1`: a state central leaves by itself (starting, a lost database)."""
    return ApiError(503, "UNAVAILABLE", message, {"Retry-After": "1"})


class Invalid(Exception):
    """A payload field that does not fit the contract; becomes `INVALID_PAYLOAD`."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
