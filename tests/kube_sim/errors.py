"""Kubernetes API errors and their v1 Status bodies.

Every error the simulated API server returns is an :class:`ApiError`; the server renders it
as the ``Status`` object a real kube-apiserver sends (``kind: Status``, ``status: Failure``,
``message``, ``reason``, ``details``, ``code``).
"""


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status`` with an HTTP status code."""

    def __init__(self, status, reason, message, details=None):
        super().__init__(message)
        self.status = int(status)
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self):
        """The v1 Status body of this error."""
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.status,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _qualified(kind_plural, group):
    """The resource name as the apiserver prints it: ``pods``, ``deployments.apps``."""
    return "%s.%s" % (kind_plural, group) if group else kind_plural


def not_found(plural, group, name, kind=None):
    """404 NotFound: ``deployments.apps "x" not found``."""
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(404, "NotFound", '%s "%s" not found' % (_qualified(plural, group), name), details)


def already_exists(plural, group, name):
    """409 AlreadyExists: ``configmaps "x" already exists``."""
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (_qualified(plural, group), name),
                    details)


def conflict(plural, group, name, why):
    """409 Conflict, e.g. a stale resourceVersion on update."""
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    message = 'Operation cannot be fulfilled on %s "%s": %s' % (_qualified(plural, group), name, why)
    return ApiError(409, "Conflict", message, details)


def stale_conflict(plural, group, name):
    """409 Conflict for an update carrying an out-of-date resourceVersion."""
    return conflict(plural, group, name,
                    "the object has been modified; please apply your changes to the latest version "
                    "and try again")


def invalid(kind, group, name, causes):
    """422 Invalid with field causes: ``Deployment.apps "x" is invalid: spec.selector: ...``.

    ``causes`` is a list of ``(field, type, message)``; ``type`` is a CauseType such as
    ``FieldValueInvalid``, ``FieldValueRequired`` or ``FieldValueNotSupported``.
    """
    parts = []
    status_causes = []
    for field, cause_type, message in causes:
        status_causes.append({"reason": cause_type, "message": message, "field": field})
        parts.append("%s: %s" % (field, message))
    qualified = "%s.%s" % (kind, group) if group else kind
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {"name": name or "", "group": group, "kind": kind, "causes": status_causes}
    if not group:
        details.pop("group")
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (qualified, name or "", summary), details)


def bad_request(message):
    """400 BadRequest with a plain message."""
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message="the server does not allow this method on the requested resource"):
    """405 MethodNotAllowed."""
    return ApiError(405, "MethodNotAllowed", message)


def gone(message):
    """410 Gone (expired resourceVersion)."""
    return ApiError(410, "Expired", message)


def unsupported_media_type(content_type):
    """415 UnsupportedMediaType for a PATCH content type the server does not know."""
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml, application/strategic-merge-patch+json")


# HTTP status code -> StatusReason, for injected faults and generic errors.
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
