"""API errors as Kubernetes `Status` objects: one exception type, one constructor per reason.

Handlers raise `APIError`; the app turns it into the HTTP code and the `Status` body that
kubectl and client libraries parse (reason, message, details with the offending fields).
"""

from __future__ import annotations

from typing import Any

from dockyard.api.fielderrors import FieldError
from dockyard.api.resources import ResourceInfo


class APIError(Exception):
    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _resource_name(info: ResourceInfo) -> str:
    """`pods` or `deployments.apps`, as Kubernetes names a resource in messages."""
    return f"{info.plural}.{info.group}" if info.group else info.plural


def _details(info: ResourceInfo, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": info.plural}
    if info.group:
        details["group"] = info.group
    return details


def not_found(info: ResourceInfo, name: str) -> APIError:
    return APIError(
        404, "NotFound", f'{_resource_name(info)} "{name}" not found', _details(info, name)
    )


def already_exists(info: ResourceInfo, name: str) -> APIError:
    return APIError(
        409,
        "AlreadyExists",
        f'{_resource_name(info)} "{name}" already exists',
        _details(info, name),
    )


def conflict(info: ResourceInfo, name: str) -> APIError:
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_resource_name(info)} "{name}": the object has been'
        " modified; please apply your changes to the latest version and try again",
        _details(info, name),
    )


def invalid(info: ResourceInfo, name: str, errors: list[FieldError]) -> APIError:
    messages = [e.message() for e in errors]
    summary = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    details = _details(info, name)
    details["kind"] = info.kind
    details["causes"] = [
        {"reason": e.reason, "message": e.message().split(": ", 1)[1], "field": e.field}
        for e in errors
    ]
    return APIError(422, "Invalid", f'{info.kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def forbidden(message: str) -> APIError:
    return APIError(403, "Forbidden", message)


def unauthorized() -> APIError:
    return APIError(401, "Unauthorized", "Unauthorized")


def method_not_allowed() -> APIError:
    return APIError(405, "MethodNotAllowed", "the server does not allow this method on the"
                    " requested resource")


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(
        415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
        f'accepted media types include: application/json, application/yaml (got "{content_type}")'
    )


def too_large() -> APIError:
    return APIError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")


def service_unavailable(message: str) -> APIError:
    return APIError(503, "ServiceUnavailable", message)


def path_not_found(path: str) -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": path}]})
