"""Every gateway error maps to exactly one status and an OpenAI error envelope."""

import inspect

import aiohttp
import pytest

import registry
from server import errors
from server.errors import (
    BackendError,
    GatewayError,
    StructuredOutputError,
    to_gateway_error,
)
from server.resolver import from_registry

EXPECTED = {
    "GatewayError": 500,
    "InvalidRequestError": 400,
    "InvalidSchemaError": 400,
    "UnsupportedSchemaError": 400,
    "AuthenticationError": 401,
    "PermissionDeniedError": 403,
    "AdapterQuarantinedError": 403,
    "ModelNotFoundError": 404,
    "RouteNotFoundError": 404,
    "MethodNotAllowedError": 405,
    "RequestTooLargeError": 413,
    "TooManyRequestsError": 429,
    "BackendError": 502,
    "AdapterLoadError": 502,
    "BackendUnavailableError": 503,
    "AdapterUnderCheckError": 503,
    "RegistryUnavailableError": 503,
}


def _classes():
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, GatewayError) and not name.startswith("_")
    }


def test_mapping_is_complete():
    assert set(_classes()) == set(EXPECTED) | {"StructuredOutputError"}


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED.items()))
def test_envelope(name, status):
    e = _classes()[name]("boom", param="p")
    assert e.status == status
    body = e.body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] == "boom" and body["error"]["param"] == "p"
    if status in (429, 503):
        assert int(e.headers["retry-after"]) >= 1


def test_structured_output_statuses():
    assert StructuredOutputError("x", truncated=True).status == 422
    assert StructuredOutputError("x", truncated=False).status == 502


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (registry.RefNotFoundError("x"), 404),
        (registry.InvalidRefError("x"), 400),
        (registry.AmbiguousRefError("x"), 400),
        (registry.IntegrityError("x"), 500),
        (registry.RegistryError("x"), 500),
        (registry.RegistryUnavailableError("x"), 503),
    ],
)
def test_registry_errors_map_once(exc, status):
    assert from_registry(exc).status == status


@pytest.mark.parametrize("cls", registry.errors.error_classes())
def test_every_registry_error_maps_by_its_own_status(cls):
    """The registry's table decides: 4xx stay 4xx (a client's doing), a registry that does
    not answer is 503 registry_unavailable (with Retry-After), the rest are 500."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, "x")  # some classes take more arguments; the class is what counts
    error = from_registry(exc)
    if cls is registry.RegistryUnavailableError:
        assert (error.status, error.code) == (503, "registry_unavailable")
        assert error.headers["retry-after"] == "5"
    else:
        assert error.status == (cls.http_status if cls.http_status in (400, 404) else 500)
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("exc", "status", "cls"),
    [
        (aiohttp.ServerTimeoutError("slow"), 502, BackendError),
        (aiohttp.ServerDisconnectedError("cut"), 502, BackendError),
        (ValueError("a bug, not the backend's fault"), 500, GatewayError),
        (KeyError("bug"), 500, GatewayError),
    ],
)
def test_anything_met_while_serving_maps_once(exc, status, cls):
    error = to_gateway_error(exc)
    assert isinstance(error, cls) and error.status == status
    assert to_gateway_error(error) is error
