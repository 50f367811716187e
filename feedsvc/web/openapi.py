"""The OpenAPI 3.1 description of every route, served at ``/api/openapi.json``.

Built as a plain dict from the code that defines what it describes: the event data
schemas are those of :func:`feedsvc.domain.schemas.schema_files` (their ``$defs``
hoisted into ``components/schemas``); the response bodies and query parameters are
the pydantic models of :mod:`feedsvc.web.models` that the handlers build their answers
and parse their queries with, at the limits of the running service's settings; the
examples are events of the packaged seed story. The paths table is written here.
``tests/web/test_openapi.py`` keeps it true: every registered route is in it, it is
valid OpenAPI 3.1, and real answers validate against its response schemas.
"""

from __future__ import annotations

import copy
import functools
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import Any

import orjson
from aiohttp import web
from pydantic.json_schema import models_json_schema

from feedsvc.domain.events import (
    CURRENT_VERSIONS,
    OCCURRED_PATTERN,
    SLUG_PATTERN,
)
from feedsvc.domain.schemas import schema_files
from feedsvc.settings import Settings
from feedsvc.urls import FEED_FORMATS, PARAMETERS, document_routes
from feedsvc.web.keys import SETTINGS
from feedsvc.web.models import (
    ANSWER_MODELS,
    DocumentQuery,
    LiveQuery,
    Query,
    log_query,
    stream_query,
)

OPENAPI_VERSION = "3.1.0"
try:
    _PACKAGE_VERSION = version("feedsvc")
except PackageNotFoundError:  # running from a source tree that is not installed
    _PACKAGE_VERSION = "0+unknown"
_REF = "#/components/schemas/"
PROBLEM = "application/problem+json"
JSON = "application/json"
FEED_MEDIA = {
    "application/atom+xml": {"schema": {"type": "string"}},
    "application/rss+xml": {"schema": {"type": "string"}},
    "application/feed+json": {"schema": {"$ref": _REF + "JsonFeed"}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {JSON: media}


def _problem(status: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{status}"}


# -- event schemas --------------------------------------------------------------------


def _rewrite_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite_refs(v, names) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = _REF + names[ref[len("#/$defs/") :]]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, names) for v in node]
    return node


def event_schemas() -> dict[str, Any]:
    """Each event type version's data schema (``story.opened.v1`` ...), the metadata
    schema (``EventMetadata``) and the models they share, as component schemas."""
    out: dict[str, Any] = {}
    for file_name, body in schema_files().items():
        schema: dict[str, Any] = orjson.loads(body)
        schema.pop("$schema", None)
        schema.pop("$id", None)
        base = file_name.removesuffix(".json")
        component = "EventMetadata" if base == "metadata" else base
        defs: dict[str, Any] = schema.pop("$defs", {})
        names = {name: name for name in defs}
        for name, definition in defs.items():
            if name in out and out[name] != _rewrite_refs(definition, names):
                names[name] = f"{component}.{name}"  # same model name, other shape
        for name, definition in defs.items():
            out[names[name]] = _rewrite_refs(definition, names)
        out[component] = _rewrite_refs(schema, names)
    return out


def _new_event_schema() -> dict[str, Any]:
    """An event as a client submits it: one variant per event type and schema version,
    its data checked by that version's schema."""
    variants = []
    for file_name in schema_files():
        if file_name == "metadata.json":
            continue
        base = file_name.removesuffix(".json")
        type_name, _, version_text = base.rpartition(".v")
        version = int(version_text)
        current = version == CURRENT_VERSIONS[type_name]
        variants.append(
            {
                "type": "object",
                "title": f"{type_name}, schema version {version}",
                "required": ["type", "occurred_at", "data"]
                + ([] if current else ["schema_version"]),
                "additionalProperties": False,
                "properties": {
                    "id": {
                        "type": "string",
                        "format": "uuid",
                        "description": "The idempotency key: give one to retry safely (the "
                        "same id and content answer the original result). Generated when "
                        "left out.",
                    },
                    "type": {"const": type_name},
                    "schema_version": {"const": version},
                    "occurred_at": _ref("OccurredAt"),
                    "data": _ref(base),
                    "metadata": _ref("EventMetadata"),
                },
            }
        )
    return {
        "description": (
            "An event as a client submits it. `position`, `version`, `stream` and "
            "`recorded_at` are the server's to set and are refused. Without "
            "`schema_version` the current version of the type is meant. The data must "
            "match the schema of its type and schema version."
        ),
        "oneOf": variants,
    }


def answer_schemas() -> dict[str, Any]:
    """The JSON Schemas of every answer model, by model name."""
    _, top = models_json_schema(
        [(model, "serialization") for model in ANSWER_MODELS], ref_template=_REF + "{model}"
    )
    defs: dict[str, Any] = top["$defs"]
    return defs


def query_parameters(model: type[Query]) -> list[dict[str, Any]]:
    """The OpenAPI parameter objects of a query model: one per field, its schema the
    field's (a parameter left out is never null, so null is dropped from it)."""
    schema = model.model_json_schema(ref_template=_REF + "{model}")
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "description")}
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
        if prop.get("default", 0) is None:
            del prop["default"]
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": model.model_fields[name].description or "",
            "schema": prop,
        }
        if prop.get("type") == "array":
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _schemas() -> dict[str, Any]:
    schemas = event_schemas()
    schemas.update(answer_schemas())
    schemas.update(
        {
            "Slug": {"type": "string", "pattern": SLUG_PATTERN, "maxLength": 120},
            "OccurredAt": {
                "type": "string",
                "pattern": OCCURRED_PATTERN,
                "description": "When it happened, as precisely as known: YYYY, YYYY-MM, "
                "YYYY-MM-DD or an RFC 3339 time with an offset.",
                "examples": ["2016-11", "2017-10-12", "2017-10-12T15:30:00-04:00"],
            },
            "NewEvent": _new_event_schema(),
            "AppendRequest": {
                "description": "One event, an array of events (appended atomically), or "
                "the events with the version the stream is expected to be at.",
                "oneOf": [
                    _ref("NewEvent"),
                    {"type": "array", "minItems": 1, "items": _ref("NewEvent")},
                    {
                        "type": "object",
                        "required": ["events"],
                        "additionalProperties": False,
                        "properties": {
                            "expected_version": _ref("ExpectedVersion"),
                            "events": {
                                "type": "array",
                                "minItems": 1,
                                "items": _ref("NewEvent"),
                            },
                        },
                    },
                ],
            },
            "ExpectedVersion": {
                "description": "The stream version the append is checked against: an "
                'exact version (0: no stream), "any" or "no_stream".',
                "oneOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "enum": ["any", "no_stream"]},
                ],
            },
            "JsonFeed": {
                "type": "object",
                "description": "A JSON Feed 1.1 document (https://jsonfeed.org/version/1.1).",
                "required": ["version", "title", "items"],
                "properties": {
                    "version": {"const": "https://jsonfeed.org/version/1.1"},
                    "title": {"type": "string"},
                    "home_page_url": {"type": "string", "format": "uri"},
                    "feed_url": {"type": "string", "format": "uri"},
                    "next_url": {"type": "string", "format": "uri"},
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string"}},
                        },
                    },
                },
            },
            "OpenAPIDocument": {
                "type": "object",
                "required": ["openapi", "info", "paths"],
            },
        }
    )
    return schemas


# -- parameters, headers, responses ---------------------------------------------------


def _parameters() -> dict[str, Any]:
    return {
        "slug": {
            "name": "slug",
            "in": "path",
            "required": True,
            "description": PARAMETERS["slug"].what,
            "schema": _ref("Slug"),
            "example": "ct-doj-section-1373-compliance",
        },
        "topic": {
            "name": "topic",
            "in": "path",
            "required": True,
            "description": PARAMETERS["topic"].what,
            "schema": _ref("Slug"),
            "example": "federal-grants",
        },
        "fmt": {
            "name": "fmt",
            "in": "path",
            "required": True,
            "description": PARAMETERS["fmt"].what,
            "schema": {"type": "string", "enum": list(FEED_FORMATS)},
        },
        "page": {
            "name": "page",
            "in": "path",
            "required": True,
            "description": PARAMETERS["page"].what,
            "schema": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
        },
        "If-Match": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": 'The stream\'s expected version as its ETag, e.g. "7"; a '
            "mismatch is 412 (Precondition Failed) with the current version.",
            "schema": {"type": "string"},
            "example": '"23"',
        },
        "If-None-Match": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "An ETag you hold; answered 304 when still current.",
            "schema": {"type": "string"},
        },
        "Last-Event-ID": {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "The position of the last event received; the stream resumes "
            "after it (takes precedence over `after`).",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
    }


def _headers() -> dict[str, Any]:
    return {
        "ETag": {
            "description": "The stream's version, quoted.",
            "schema": {"type": "string"},
        },
        "Location": {
            "description": "What was created: the story's stream from the first appended event on.",
            "schema": {"type": "string", "format": "uri"},
        },
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 1},
        },
        "WWW-Authenticate": {
            "description": 'Bearer realm="feedsvc"',
            "schema": {"type": "string"},
        },
        "X-Request-Id": {
            "description": "The request's id (yours, if you sent a sane one); it is in the log.",
            "schema": {"type": "string"},
        },
    }


def _problem_response(description: str, *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM: {"schema": _ref("Problem")}},
    }
    if headers:
        response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return response


def _responses() -> dict[str, Any]:
    return {
        "400": _problem_response(
            "Malformed JSON, or invalid fields, parameters or headers; `errors` lists each."
        ),
        "401": _problem_response(
            "No bearer token, or an unknown or revoked one.", "WWW-Authenticate"
        ),
        "403": _problem_response("The token's scope does not cover this story or opening it."),
        "404": _problem_response("No such story or resource."),
        "409": _problem_response(
            "The stream is not at the expected version (`current_version` says where it "
            "is), the story is already open, or an event id is reused with other content.",
            "ETag",
        ),
        "412": _problem_response(
            "The version named by If-Match is not the stream's (`current_version` says "
            "where it is); nothing was written.",
            "ETag",
        ),
        "413": _problem_response("The body or the number of events is over the limit."),
        "415": _problem_response("The body is not application/json."),
        "429": _problem_response("The token is over its rate; retry later.", "Retry-After"),
        "503": _problem_response("The database cannot take writes now.", "Retry-After"),
        "NotModified": {"description": "Not modified: the ETag you sent is current."},
    }


# -- paths ----------------------------------------------------------------------------


def _params(*names: str) -> list[dict[str, str]]:
    return [{"$ref": f"#/components/parameters/{n}"} for n in names]


def _feed_get(summary: str, *params: str) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "The feed document, with a strong ETag and "
            "Last-Modified; gzip or brotli on request.",
            "content": copy.deepcopy(FEED_MEDIA),
        },
        "304": _problem("NotModified"),
        "400": _problem("400"),
        "404": _problem("404"),
    }
    if "page" in params:
        responses["307"] = {
            "description": "The archive page after the newest full one: it is not full "
            "yet, and its entries are in the subscription document, named by Location.",
            "headers": {
                "Location": {
                    "description": "The subscription document's path.",
                    "schema": {"type": "string", "format": "uri-reference"},
                }
            },
        }
    return {
        "get": {
            "tags": ["feeds"],
            "summary": summary,
            "parameters": [*_params(*params), *query_parameters(DocumentQuery)],
            "responses": dict(sorted(responses.items())),
        }
    }


def _page_get(summary: str, *params: str) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["pages"],
            "summary": summary,
            "parameters": [*_params(*params), *query_parameters(DocumentQuery)],
            "responses": {
                "200": {
                    "description": "An HTML page with feed autodiscovery links.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "304": _problem("NotModified"),
                "400": _problem("400"),
                "404": _problem("404"),
            },
        }
    }


def _paths(settings: Settings) -> dict[str, Any]:
    opened, reported, quoted = seed_examples()
    submitted = [_as_submitted(e) for e in (reported, quoted)]
    stream = opened["stream"]
    head = len(_seed_lines())  # the seed story's version, and the log's head
    return {
        "/api/stories/{slug}/events": {
            "parameters": _params("slug"),
            "post": {
                "tags": ["append"],
                "operationId": "appendEvents",
                "summary": "Append events to a story",
                "description": "Appends one event or an array of events atomically. "
                "Needs a bearer token whose scope covers the story (opening a new story "
                "needs append:* or admin).\n\n"
                "**Retrying safely.** Give every event an `id` (a UUID you generate "
                "before the first attempt) and send the same body again after a timeout "
                "or a lost answer: if the first attempt was written, the retry answers "
                "the original result with 200 and writes nothing; if not, it is appended "
                "now (201). Without ids a retry cannot be told from a new append. The "
                "same id with other content is refused (409).",
                "security": [{"bearer": []}],
                "parameters": _params("If-Match"),
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": _ref("AppendRequest"),
                            "examples": {
                                "one": {
                                    "summary": "One event",
                                    "value": _as_submitted(quoted),
                                },
                                "several": {
                                    "summary": "A development and its quote, atomically",
                                    "value": submitted,
                                },
                                "expected": {
                                    "summary": "With the version the story must be at",
                                    "value": {"expected_version": head, "events": submitted},
                                },
                            },
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "Appended.",
                        "headers": {
                            "Location": {"$ref": "#/components/headers/Location"},
                            "ETag": {"$ref": "#/components/headers/ETag"},
                        },
                        "content": _json(
                            _ref("AppendResult"),
                            {
                                "stream": stream,
                                "version": head + 2,
                                "events": [
                                    {"id": reported["id"], "position": head + 1},
                                    {"id": quoted["id"], "position": head + 2},
                                ],
                                "recorded_at": reported["recorded_at"],
                                "replayed": False,
                                "warnings": [],
                            },
                        ),
                    },
                    "200": {
                        "description": "A replay: these events were appended before; "
                        "the original result.",
                        "headers": {"Location": {"$ref": "#/components/headers/Location"}},
                        "content": _json(_ref("AppendResult")),
                    },
                    **{
                        status: _problem(status)
                        for status in (
                            "400",
                            "401",
                            "403",
                            "404",
                            "409",
                            "412",
                            "413",
                            "415",
                            "429",
                            "503",
                        )
                    },
                },
            },
            "get": {
                "tags": ["follow"],
                "operationId": "readStream",
                "summary": "Read one story's stream",
                "parameters": [
                    *query_parameters(stream_query(settings)),
                    *_params("If-None-Match"),
                ],
                "responses": {
                    "200": {
                        "description": "The stream's events from from_version on.",
                        "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
                        "content": _json(
                            _ref("StreamPage"),
                            {"stream": stream, "version": head, "events": [opened], "next": 2},
                        ),
                    },
                    "304": _problem("NotModified"),
                    "400": _problem("400"),
                    "404": _problem("404"),
                },
            },
        },
        "/api/events": {
            "get": {
                "tags": ["follow"],
                "operationId": "readLog",
                "summary": "Read the log after a position",
                "description": "Pages of the global log in position order. Reading from 0 "
                "by `next` gives every event exactly once, also while writers append. "
                "With `wait`, an empty page waits for the next event (long poll).",
                "parameters": query_parameters(log_query(settings)),
                "responses": {
                    "200": {
                        "description": "A page of events.",
                        "content": _json(
                            _ref("EventPage"),
                            {"events": [opened], "next": 1, "head": head},
                        ),
                    },
                    "400": _problem("400"),
                    "503": _problem("503"),
                },
            }
        },
        "/api/events/live": {
            "get": {
                "tags": ["follow"],
                "operationId": "tailLog",
                "summary": "Follow the log live (Server-Sent Events)",
                "description": "Each SSE event has the event's position as id, its type as "
                "event and its export JSON as data; comments are heartbeats. Reconnecting "
                "with Last-Event-ID resumes with no gap and no duplicate. Without `after` "
                "or Last-Event-ID, the stream starts at the current head.",
                "parameters": [*query_parameters(LiveQuery), *_params("Last-Event-ID")],
                "responses": {
                    "200": {
                        "description": "An endless text/event-stream.",
                        "content": {
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                "example": f"id: 1\nevent: story.opened\ndata: "
                                f"{orjson.dumps(opened).decode()}\n\n",
                            }
                        },
                    },
                    "400": _problem("400"),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "tags": ["operate"],
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": _json(_ref("OpenAPIDocument")),
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "tags": ["operate"],
                "operationId": "healthz",
                "summary": "Liveness: the process answers",
                "responses": {"200": {"description": "Alive.", "content": _json(_ref("Health"))}},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operate"],
                "operationId": "readyz",
                "summary": "Readiness: the database answers and projections keep up",
                "responses": {
                    "200": {"description": "Ready.", "content": _json(_ref("Ready"))},
                    "503": _problem_response("Not ready: `detail` says why.", "Retry-After"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operate"],
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        **{
            r.template: (_feed_get if r.document in ("feed", "archive") else _page_get)(
                r.what, *r.parameters
            )
            for r in document_routes()
        },
    }


def _as_submitted(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded event back in the form a client submits it."""
    keep = ("id", "type", "schema_version", "occurred_at", "data", "metadata")
    return {k: recorded[k] for k in keep}


@functools.lru_cache(maxsize=8)
def _document(settings: Settings) -> bytes:
    return orjson.dumps(build_document(settings))


def build_document(settings: Settings) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of a service running with ``settings``: its
    public base URL as the server, its limits in the parameters."""
    base_url = settings.public_base_url
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "feedsvc",
            "version": _PACKAGE_VERSION,
            "summary": "An event-sourced news feed service.",
            "description": "Newsrooms append the developments of news stories as events; "
            "readers get Atom, RSS and JSON Feed; services follow the log. Reads are "
            "public; appends need a bearer token. Errors are RFC 9457 problem details.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": base_url.rstrip("/") or "/"}],
        "tags": [
            {"name": "append", "description": "Write events to a story."},
            {"name": "follow", "description": "Read the log and follow it."},
            {"name": "feeds", "description": "Atom 1.0, RSS 2.0 and JSON Feed 1.1."},
            {"name": "pages", "description": "HTML pages for people."},
            {"name": "operate", "description": "Health, readiness, metrics, this document."},
        ],
        "paths": _paths(settings),
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(),
            "headers": _headers(),
            "responses": _responses(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `feedsvc token create`; scopes: admin, "
                    "append:*, append:<slug>[,<slug>...].",
                }
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: this document."""
    body = _document(request.app[SETTINGS])
    return web.Response(
        body=body,
        content_type=JSON,
        headers={"Cache-Control": "public, max-age=300"},
    )


SEED_LOG = files("feedsvc") / "seed" / "ct-doj-1373.ndjson"
"""The seed story's log, packaged with feedsvc."""


@functools.cache
def _seed_lines() -> tuple[dict[str, Any], ...]:
    return tuple(orjson.loads(line) for line in SEED_LOG.read_bytes().splitlines() if line)


def seed_examples() -> list[dict[str, Any]]:
    """The examples of the document, events of the packaged seed story as the log holds
    them: the story's opening, the first quote and the development it belongs to."""
    lines = _seed_lines()
    opened = next(e for e in lines if e["type"] == "story.opened")
    quoted = next(e for e in lines if e["type"] == "quote.attributed")
    reported = next(
        e
        for e in lines
        if e["type"] == "development.reported"
        and e["data"]["development_id"] == quoted["data"]["development_id"]
    )
    return [copy.deepcopy(e) for e in (opened, reported, quoted)]
