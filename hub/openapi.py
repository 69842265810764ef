"""The hub's API contract (the OpenAPI document) and ``/docs``, which renders it without the internet.

The document says what the hub really does; ``tests/hub/test_contract.py`` holds it to that with
schemathesis against a live hub:

- Request bodies as the handlers decode them: a Struct that forbids unknown fields is
  ``additionalProperties: false`` (:class:`ClosedStructSchemaPlugin`).
- Every answer an operation gives. A handler declares its own (``responses={404: error("no such
  incident")}``); :func:`describe_refusals` adds, once for the whole app, the answers that come from
  elsewhere: the guard's 401 (with ``WWW-Authenticate``), 403 and 503 (the hub is starting) on
  every guarded route and 429 (with ``Retry-After``) on rate-limited ones, ``security: []`` on
  public ones, the body limits' 413 and 400 (``hub.limits``) where a body is taken; and it gives
  every error one shape, :data:`ERROR_SCHEMA` (what ``hub.app._http_error`` writes).

``/docs`` is Swagger UI with its scripts, stylesheet and icon served by the hub from
``hub/static/swagger-ui`` (vendored: see its README), so it renders on a substation or control-room
network that cannot reach a CDN. The page, the document and the assets need a viewer's credential;
a browser sends the dashboard login's cookie.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio.to_thread
import msgspec
from litestar import Request, Router
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin  # no public home in 2.x
from litestar.exceptions import ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (Components, OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, OpenAPIType,
                                   Operation, Reference, Schema, SecurityScheme)
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.utils.scope.state import ScopeState

from hub.auth import VIEWER
from hub.auth.guards import allow, policy_of

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

__all__ = ["ASSETS_PATH", "DOCS_PATH", "ERROR_SCHEMA", "ClosedStructSchemaPlugin", "describe_refusals", "error",
           "openapi_config", "query_time", "strict_json_body"]

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
SWAGGER_UI_VERSION = "5.35.0"
SWAGGER_UI_DIR = Path(__file__).parent / "static" / "swagger-ui"

ERROR_SCHEMA = Schema(
    title="Error", type=OpenAPIType.OBJECT, required=["detail", "status_code"],
    description="Every error the hub answers has this shape.",
    properties={
        "status_code": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING, description="What was wrong, naming the field where one was"),
        "errors": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT),
                         description="For a refused body or parameter: each problem and where it is "
                                     "(key, source, message)"),
    },
)
_ERROR_REF = Reference(ref="#/components/schemas/Error")
_STRING = Schema(type=OpenAPIType.STRING)
_LITESTAR_400 = HTTPStatus(400).description  # what Litestar writes for the 400 it adds to routes with inputs


def error(description: str) -> ResponseSpec:
    """An error answer a handler declares: ``responses={404: error("no such incident")}``. Its body is
    the hub's one error shape (filled in by :func:`describe_refusals`)."""
    return ResponseSpec(data_container=None, description=description)


def openapi_config() -> OpenAPIConfig:
    """``/docs`` (Swagger UI), ``/docs/openapi.json`` and ``/docs/assets/*``, all for viewers, none of
    them part of the API they document."""
    assets = create_static_files_router(path="/assets", directories=[SWAGGER_UI_DIR], name="docs.assets")
    swagger = SwaggerRenderPlugin(
        version=SWAGGER_UI_VERSION, path="/swagger",
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js", css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(
        title="SmartGrid Sentinel hub", version="0.1.0",
        render_plugins=[swagger],
        # the assets inherit the docs' policy from this router
        openapi_router=Router(path=DOCS_PATH, route_handlers=[assets], guards=[allow(VIEWER)],
                              include_in_schema=False),
        components=Components(security_schemes={"bearer": SecurityScheme(
            type="http", scheme="bearer", description="An API key, an edge credential or a login's token")}),
        security=[{"bearer": []}],
    )


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's schema of a msgspec Struct, told the two things it leaves out:

    - a Struct that forbids unknown fields is ``additionalProperties: false`` (its decoder answers
      400 to any other field, so the document must not offer them);
    - a bound of 0 on an optional number (``Meta(gt=0) | None``), which Litestar drops (it tests the
      bound's truth, and 0 is false)."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(info, msgspec.inspect.StructType):
            return schema
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            number = _number_type(field.type)
            prop = (schema.properties or {}).get(field.encode_name)
            if number is None or not isinstance(prop, Schema):
                continue
            for bound, key in (("gt", "exclusive_minimum"), ("ge", "minimum"), ("lt", "exclusive_maximum"),
                               ("le", "maximum")):
                value = getattr(number, bound)
                if value is not None and getattr(prop, key) is None:
                    setattr(prop, key, float(value))
        return schema


def _number_type(t: msgspec.inspect.Type) -> msgspec.inspect.IntType | msgspec.inspect.FloatType | None:
    if isinstance(t, msgspec.inspect.UnionType):  # Optional[...]: the one type that is not None
        rest = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        if len(rest) != 1:
            return None
        t = rest[0]
    if isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    return t if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType) else None


def describe_refusals(app: Litestar, *, max_body_bytes: int, max_json_depth: int) -> None:
    """Complete ``app``'s OpenAPI document with the answers no handler declares, because the guard,
    the body limits or the error handler give them (see the module's docstring). Run once, on the
    app just built: it builds the document and edits it in place."""
    document = app.openapi_schema
    schemas = document.components.schemas = dict(document.components.schemas or {})
    schemas["Error"] = ERROR_SCHEMA
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or (path_item := (document.paths or {}).get(route.path_format)) is None:
            continue
        for method, entry in route.route_handler_map.items():
            handler = entry[0] if isinstance(entry, tuple) else entry
            operation: Operation | None = getattr(path_item, method.lower(), None)
            policy = policy_of(handler)
            if operation is None or policy is None:
                continue
            responses = operation.responses = dict(operation.responses or {})
            mismatch = responses.get("400")
            if isinstance(mismatch, OpenAPIResponse) and mismatch.description == _LITESTAR_400:
                mismatch.description = "a parameter or the body does not match this document (each problem in `errors`)"
            if policy.roles is None:
                operation.security = []  # Litestar writes an empty list as "inherit the document's"
            else:
                _add(responses, 401, "no credential, or an unknown, revoked or expired one",
                     headers={"WWW-Authenticate": OpenAPIHeader(schema=_STRING, required=True,
                                                                description='Bearer realm="sentinel"')})
                _add(responses, 403, f"the caller's role may not do this: it needs {policy.name}")
                _add(responses, 503, "the hub is starting; try again")
                if policy.rate:
                    _add(responses, 429, "over the caller's ingest rate limit")
            if operation.request_body is not None:
                _add(responses, 400, f"the body is not JSON, or is nested deeper than {max_json_depth} levels")
                _add(responses, 413, f"the body is larger than {max_body_bytes} bytes")
            for code, response in responses.items():
                if isinstance(response, OpenAPIResponse) and int(code) >= 400:
                    _one_error_shape(int(code), response)


def _add(responses: dict[str, Any], code: int, why: str, headers: dict[str, Any] | None = None) -> None:
    """Declare ``code`` (or add ``why`` to the reasons it is already declared for)."""
    response = responses.get(str(code))
    if not isinstance(response, OpenAPIResponse):
        responses[str(code)] = OpenAPIResponse(description=why, headers=headers)
        return
    if response.description in ("", HTTPStatus(code).description):
        response.description = why
    elif why not in response.description:
        response.description = f"{response.description}; or {why}"
    if headers:
        response.headers = {**(response.headers or {}), **headers}


def _one_error_shape(code: int, response: OpenAPIResponse) -> None:
    """Litestar's own error schemas (``status_code``, ``detail``, ``extra``) become the hub's: the
    error handler writes ``errors``, never ``extra``. A body the handler declares itself (a
    Reference to a schema of its own, such as the 409 of a sync) is kept."""
    media = (response.content or {}).get("application/json")
    if media is None or not isinstance(media.schema, Reference):
        response.content = {"application/json": OpenAPIMediaType(schema=_ERROR_REF)}
    if code == 429:
        response.headers = {**(response.headers or {}), "Retry-After": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER), required=True, description="seconds to wait")}


def query_time(name: str, value: str | None) -> datetime | None:
    """A ``date-time`` query parameter, held to what the document says: RFC 3339 with a zone (as
    UTC). Declare it ``Annotated[str | None, QueryParameter(format="date-time")]``: Litestar's own
    ``datetime`` parameters also take a number of seconds (``?until=12``). 400 naming it otherwise."""
    if value is None:
        return None

    def bad(why: str) -> ValidationException:
        return ValidationException(detail=f"{name}: {why}", extra=[{"key": name, "source": "query", "message": why}])

    try:
        at = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        raise bad(f"{value[:64]!r} is not an RFC 3339 date-time (2026-03-01T10:00:00Z)") from None
    if at.tzinfo is None:
        raise bad(f"{at.isoformat()} has no time zone; add Z or an offset")
    try:
        return at.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-02:00 is in year 10000 in UTC
        raise bad(f"{at.isoformat()} is out of range in UTC") from None


async def strict_json_body(request: Request) -> None:
    """``before_request``: a JSON body is held to the types the document gives it. Litestar converts
    bodies leniently (``"sent_at": 0`` becomes 1970, ``"window": "32"`` becomes 32); what only that
    leniency would accept is refused here, 400 naming the field. Anything else is left to Litestar
    (it answers, with its own words, what strict decoding refuses too).

    A body that decodes strictly to a struct is decoded once: the struct is left where Litestar
    keeps a request's decoded JSON, and its conversion of the handler's arguments takes a struct of
    the type it wants as it is (an edge's sync of 200 readings was decoded three times: 230 us)."""
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    if field is None or not (body := await request.body()):
        return None
    if len(body) <= _THREAD_ABOVE:
        decoded = _strictly(field.annotation, body)
    else:  # a large sync batch: decoding it takes milliseconds, off the event loop
        decoded = await anyio.to_thread.run_sync(_strictly, field.annotation, body)
    if isinstance(decoded, _Refused):
        raise ValidationException(detail=f"Validation failed for {request.method} {request.url.path}",
                                  extra=[{"key": decoded.key, "source": "body", "message": decoded.message}])
    if isinstance(decoded, msgspec.Struct):
        ScopeState.from_scope(request.scope).json = decoded
    return None


_THREAD_ABOVE = 256 * 1024


class _Refused(NamedTuple):
    key: str
    message: str


def _strictly(t: Any, body: bytes) -> Any:
    """``body`` decoded strictly as a ``t``; a :class:`_Refused` saying where and why if it is a
    ``t`` only to a lenient decoder; None if it is not one even leniently (Litestar answers that)."""
    strict, lax = _decoders(t)
    try:
        return strict.decode(body)
    except msgspec.ValidationError as exc:
        try:
            lax.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        message, _, where = str(exc).partition(" - at `$")
        return _Refused(where.rstrip("`").lstrip(".") or "data", message)
    except msgspec.DecodeError:
        return None


@lru_cache(maxsize=64)
def _decoders(t: Any) -> tuple[msgspec.json.Decoder, msgspec.json.Decoder]:
    return msgspec.json.Decoder(t, strict=True), msgspec.json.Decoder(t, strict=False)
