"""The gateway's exceptions, and their one mapping to an OpenAI error envelope.

    GatewayError                      (500 internal_error)
    ├── InvalidRequestError           400 invalid_request_error   (carries `param`)
    │   └── InvalidSchemaError        400 invalid_request_error   code invalid_json_schema
    │       └── UnsupportedSchemaError 400 invalid_request_error  code unsupported_json_schema
    ├── AuthenticationError           401 authentication_error
    ├── PermissionDeniedError         403 permission_error        code model_not_allowed
    │   └── AdapterQuarantinedError   403 permission_error        code adapter_quarantined
    ├── ModelNotFoundError            404 not_found_error         code model_not_found
    ├── RouteNotFoundError            404 not_found_error         code unknown_route
    ├── MethodNotAllowedError         405 invalid_request_error   code method_not_allowed
    ├── RequestTooLargeError          413 invalid_request_error   code request_too_large
    ├── StructuredOutputError         422 / 502 structured_output_error
    │     truncated (the token budget ran out mid-object): 422, code json_truncated
    │     invalid (not JSON, or breaks the schema):        502, code json_schema_violation
    ├── TooManyRequestsError          429 rate_limit_error        (Retry-After)
    ├── BackendError                  502 backend_error           code backend_failed | timeout
    ├── BackendUnavailableError       503 service_unavailable     (Retry-After)
    │   └── AdapterUnderCheckError    503 service_unavailable     code adapter_under_check
    └── RegistryUnavailableError      503 service_unavailable     code registry_unavailable
          (Retry-After; a name this gateway never resolved while its registry is down)

Every failure leaves the gateway as `{"error": {"message", "type", "param", "code"}}`
with the status above; nothing else chooses a status. `to_gateway_error` is the one
mapping of everything else met while serving (transport failures, bugs) onto this tree;
registry failures are mapped where the registry is called, `server.resolver.from_registry`.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    type = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidSchemaError(InvalidRequestError):
    code = "invalid_json_schema"


class UnsupportedSchemaError(InvalidSchemaError):
    """A valid JSON Schema the gateway cannot enforce: a feature the grammar backend
    refuses, or references that recurse forever or leave no finite value
    (server/schema_refs.py)."""

    code = "unsupported_json_schema"


class AuthenticationError(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class AdapterQuarantinedError(PermissionDeniedError):
    code = "adapter_quarantined"


class ModelNotFoundError(GatewayError):
    status = 404
    type = "not_found_error"
    code = "model_not_found"


class RouteNotFoundError(GatewayError):
    status = 404
    type = "not_found_error"
    code = "unknown_route"


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class StructuredOutputError(GatewayError):
    """A constrained result that the gateway refused to return as a success."""

    type = "structured_output_error"

    def __init__(self, message: str, *, truncated: bool):
        super().__init__(message, param="response_format")
        self.truncated = truncated
        self.status = 422 if truncated else 502
        self.code = "json_truncated" if truncated else "json_schema_violation"

    @property
    def reason(self) -> str:
        return "truncated" if self.truncated else "invalid"


class _RetryAfter(GatewayError):
    retry_after_s = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class TooManyRequestsError(_RetryAfter):
    status = 429
    type = "rate_limit_error"
    code = "too_many_requests"


class BackendError(GatewayError):
    status = 502
    type = "backend_error"
    code = "backend_failed"


class AdapterLoadError(BackendError):
    """vLLM has the adapter's files but will not load them (most often a rank above its
    --max-lora-rank): nothing the client can change; other adapters serve as before."""

    code = "adapter_load_failed"


class BackendUnavailableError(_RetryAfter):
    status = 503
    type = "service_unavailable"
    code = "backend_unavailable"
    retry_after_s = 5


class AdapterUnderCheckError(BackendUnavailableError):
    code = "adapter_under_check"
    retry_after_s = 30


class RegistryUnavailableError(_RetryAfter):
    """The registry does not answer and this gateway knows nothing cached for the request
    (names it resolved before keep serving: server/route_cache.py)."""

    status = 503
    type = "service_unavailable"
    code = "registry_unavailable"
    retry_after_s = 5


def to_gateway_error(e: Exception) -> GatewayError:
    """Any exception met while serving, as the error the client gets."""
    import aiohttp

    if isinstance(e, GatewayError):
        return e
    if isinstance(e, TimeoutError):
        return BackendError("the vLLM backend timed out", code="timeout")
    if isinstance(e, aiohttp.ClientError):
        return BackendError(f"the vLLM backend connection failed: {e}", code="backend_failed")
    return GatewayError(f"internal error ({type(e).__name__}); see the gateway log")
