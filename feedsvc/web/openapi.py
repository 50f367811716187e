"""The OpenAPI 3.1 description of every route, served at ``/api/openapi.json``.

Built as a plain dict from the code that defines what it describes: the event data
schemas are those of :func:`feedsvc.domain.schemas.schema_files` (their ``$defs``
hoisted into ``components/schemas``), and the examples are events of the seed story.
``tests/web/test_openapi.py`` keeps it true: every registered route is in it, it is
valid OpenAPI 3.1, and real answers validate against its response schemas.
"""

from __future__ import annotations

import copy
import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
from aiohttp import web

from feedsvc.domain.events import (
    CURRENT_VERSIONS,
    EVENT_TYPES,
    OCCURRED_PATTERN,
    SLUG_PATTERN,
)
from feedsvc.domain.schemas import schema_files
from feedsvc.ndjson import EXPORT_FIELDS
from feedsvc.web.keys import SETTINGS

OPENAPI_VERSION = "3.1.0"
try:
    _PACKAGE_VERSION = version("feedsvc")
except PackageNotFoundError:  # running from a source tree that is not installed
    _PACKAGE_VERSION = "0+unknown"
_REF = "#/components/schemas/"
PROBLEM = "application/problem+json"
JSON = "application/json"
FEED_FORMATS = ("atom", "rss", "json")
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
    """An event as a client submits it; its data checked by type and schema version."""
    rules = []
    for file_name in schema_files():
        if file_name == "metadata.json":
            continue
        base = file_name.removesuffix(".json")
        type_name, _, version_text = base.rpartition(".v")
        version = int(version_text)
        versions: list[dict[str, Any]] = [
            {"required": ["schema_version"], "properties": {"schema_version": {"const": version}}}
        ]
        if version == CURRENT_VERSIONS[type_name]:
            versions.append({"not": {"required": ["schema_version"]}})
        rules.append(
            {
                "if": {
                    "required": ["type"],
                    "properties": {"type": {"const": type_name}},
                    "anyOf": versions,
                },
                "then": {"properties": {"data": _ref(base)}},
            }
        )
    for type_name in sorted(CURRENT_VERSIONS):
        versions_of = sorted(v for (n, v) in EVENT_TYPES if n == type_name)
        rules.append(
            {
                "if": {"required": ["type"], "properties": {"type": {"const": type_name}}},
                "then": {"properties": {"schema_version": {"enum": versions_of}}},
            }
        )
    return {
        "type": "object",
        "description": (
            "An event as a client submits it. `position`, `version`, `stream` and "
            "`recorded_at` are the server's to set and are refused. Without "
            "`schema_version` the current version of the type is meant. The data must "
            "match the schema of its type and schema version."
        ),
        "required": ["type", "occurred_at", "data"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": "string",
                "format": "uuid",
                "description": "The idempotency key: the same id and content answer the "
                "original result. Generated when left out.",
            },
            "type": {"type": "string", "enum": sorted(CURRENT_VERSIONS)},
            "schema_version": {"type": "integer", "minimum": 1},
            "occurred_at": _ref("OccurredAt"),
            "data": {"type": "object"},
            "metadata": _ref("EventMetadata"),
        },
        "allOf": rules,
    }


def _schemas() -> dict[str, Any]:
    schemas = event_schemas()
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
            "AppendResult": {
                "type": "object",
                "required": ["stream", "version", "events", "recorded_at", "replayed"],
                "additionalProperties": False,
                "properties": {
                    "stream": _ref("Slug"),
                    "version": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "The stream's version after the append.",
                    },
                    "events": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "position"],
                            "additionalProperties": False,
                            "properties": {
                                "id": {"type": "string", "format": "uuid"},
                                "position": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                    "recorded_at": {"type": "string", "format": "date-time"},
                    "replayed": {
                        "type": "boolean",
                        "description": "True when these events were already appended: "
                        "nothing was written and this is the original result.",
                    },
                },
            },
            "RecordedEvent": {
                "type": "object",
                "description": "An event as the log holds it (the export format).",
                "required": list(EXPORT_FIELDS),
                "additionalProperties": False,
                "properties": {
                    "position": {"type": "integer", "minimum": 1},
                    "id": {"type": "string", "format": "uuid"},
                    "stream": _ref("Slug"),
                    "version": {"type": "integer", "minimum": 1},
                    "type": {"type": "string"},
                    "schema_version": {"type": "integer", "minimum": 1},
                    "occurred_at": _ref("OccurredAt"),
                    "recorded_at": {"type": "string", "format": "date-time"},
                    "data": {
                        "type": "object",
                        "description": "As appended, at its own schema version.",
                    },
                    "metadata": {"type": "object"},
                },
            },
            "EventPage": {
                "type": "object",
                "required": ["events", "next", "head"],
                "additionalProperties": False,
                "properties": {
                    "events": {"type": "array", "items": _ref("RecordedEvent")},
                    "next": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Pass as `after` to read on; it moves past events "
                        "the filters left out.",
                    },
                    "head": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "The log's last position when the page was read.",
                    },
                },
            },
            "StreamPage": {
                "type": "object",
                "required": ["stream", "version", "events", "next"],
                "additionalProperties": False,
                "properties": {
                    "stream": _ref("Slug"),
                    "version": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "The stream's version (also its ETag).",
                    },
                    "events": {"type": "array", "items": _ref("RecordedEvent")},
                    "next": {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "description": "The from_version of the next page; null at the end.",
                    },
                },
            },
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details.",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string", "format": "uri-reference"},
                    "title": {"type": "string"},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "detail": {"type": "string", "description": "What to fix."},
                    "errors": {
                        "type": "array",
                        "description": "Every bad field (by JSON pointer into the body), "
                        "query parameter or header.",
                        "items": {
                            "type": "object",
                            "required": ["detail"],
                            "properties": {
                                "pointer": {"type": "string"},
                                "parameter": {"type": "string"},
                                "header": {"type": "string"},
                                "detail": {"type": "string"},
                            },
                        },
                    },
                    "current_version": {"type": "integer", "minimum": 0},
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"const": "ok"}},
            },
            "Ready": {
                "type": "object",
                "required": ["status", "head", "projection_lag"],
                "additionalProperties": False,
                "properties": {
                    "status": {"const": "ready"},
                    "head": {"type": "integer", "minimum": 0},
                    "projection_lag": {
                        "type": ["integer", "null"],
                        "description": "Events the projections are behind the log.",
                    },
                },
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
            "description": "The story's slug (its stream).",
            "schema": _ref("Slug"),
            "example": "ct-doj-section-1373-compliance",
        },
        "topic": {
            "name": "topic",
            "in": "path",
            "required": True,
            "description": "A topic in URL form (lowercase, hyphens).",
            "schema": _ref("Slug"),
            "example": "federal-grants",
        },
        "fmt": {
            "name": "fmt",
            "in": "path",
            "required": True,
            "description": "atom: Atom 1.0; rss: RSS 2.0; json: JSON Feed 1.1.",
            "schema": {"type": "string", "enum": list(FEED_FORMATS)},
        },
        "page": {
            "name": "page",
            "in": "path",
            "required": True,
            "description": "The archive page (RFC 5005); 1 holds the oldest entries.",
            "schema": {"type": "integer", "minimum": 1},
        },
        "as_of": {
            "name": "as_of",
            "in": "query",
            "required": False,
            "description": "Show what the log knew at this recorded time (RFC 3339).",
            "schema": {"type": "string", "format": "date-time"},
        },
        "after": {
            "name": "after",
            "in": "query",
            "required": False,
            "description": "Read events after this position (the `next` of the last page).",
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
        "limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Most events in the page (at most the configured max_page_size).",
            "schema": {"type": "integer", "minimum": 1, "default": 100},
        },
        "wait": {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": "Long poll: with no event to answer, wait up to this many "
            "seconds for one (capped at the configured max_wait_s).",
            "schema": {"type": "number", "minimum": 0, "default": 0},
        },
        "type": {
            "name": "type",
            "in": "query",
            "required": False,
            "description": "Only events of these types (repeat the parameter).",
            "style": "form",
            "explode": True,
            "schema": {
                "type": "array",
                "items": {"type": "string", "enum": sorted(CURRENT_VERSIONS)},
            },
        },
        "stream": {
            "name": "stream",
            "in": "query",
            "required": False,
            "description": "Only the events of this story.",
            "schema": _ref("Slug"),
        },
        "from_version": {
            "name": "from_version",
            "in": "query",
            "required": False,
            "description": "First stream version to answer.",
            "schema": {"type": "integer", "minimum": 1, "default": 1},
        },
        "If-Match": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": 'The stream\'s expected version as its ETag, e.g. "7"; a '
            "mismatch is 409.",
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
            "description": "The story's stream resource.",
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
    return {
        "get": {
            "tags": ["feeds"],
            "summary": summary,
            "parameters": _params(*params, "as_of"),
            "responses": {
                "200": {
                    "description": "The feed document, with a strong ETag and "
                    "Last-Modified; gzip or brotli on request.",
                    "content": copy.deepcopy(FEED_MEDIA),
                },
                "304": _problem("NotModified"),
                "400": _problem("400"),
                "404": _problem("404"),
            },
        }
    }


def _page_get(summary: str, *params: str) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["pages"],
            "summary": summary,
            "parameters": _params(*params, "as_of"),
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


def _paths() -> dict[str, Any]:
    opened, reported, quoted = SEED_EXAMPLES
    submitted = [_as_submitted(e) for e in (reported, quoted)]
    stream = opened["stream"]
    return {
        "/api/stories/{slug}/events": {
            "parameters": _params("slug"),
            "post": {
                "tags": ["append"],
                "operationId": "appendEvents",
                "summary": "Append events to a story",
                "description": "Appends one event or an array of events atomically. "
                "Needs a bearer token whose scope covers the story (opening a new story "
                "needs append:* or admin). A replay of the same event ids with the same "
                "content answers the original result with 200 and writes nothing.",
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
                                    "value": {"expected_version": 7, "events": submitted},
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
                                "version": 25,
                                "events": [
                                    {"id": reported["id"], "position": 24},
                                    {"id": quoted["id"], "position": 25},
                                ],
                                "recorded_at": "2017-10-12T16:00:24.000000Z",
                                "replayed": False,
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
                "parameters": _params("from_version", "limit", "If-None-Match"),
                "responses": {
                    "200": {
                        "description": "The stream's events from from_version on.",
                        "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
                        "content": _json(
                            _ref("StreamPage"),
                            {"stream": stream, "version": 23, "events": [opened], "next": 2},
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
                "parameters": _params("after", "limit", "wait", "type", "stream"),
                "responses": {
                    "200": {
                        "description": "A page of events.",
                        "content": _json(
                            _ref("EventPage"),
                            {"events": [opened], "next": 1, "head": 23},
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
                "parameters": _params("after", "type", "stream", "Last-Event-ID"),
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
        "/": _page_get("Index page: every story"),
        "/stories/{slug}": _page_get("A story's readable timeline", "slug"),
        "/topics/{topic}": _page_get("The stories of one topic", "topic"),
        "/feeds/all.{fmt}": _feed_get("Feed of all stories", "fmt"),
        "/feeds/stories/{slug}.{fmt}": _feed_get("Feed of one story", "slug", "fmt"),
        "/feeds/topics/{topic}.{fmt}": _feed_get("Feed of one topic", "topic", "fmt"),
        "/feeds/all/archive/{page}.{fmt}": _feed_get(
            "Archive page of the feed of all stories", "page", "fmt"
        ),
        "/feeds/stories/{slug}/archive/{page}.{fmt}": _feed_get(
            "Archive page of one story's feed", "slug", "page", "fmt"
        ),
        "/feeds/topics/{topic}/archive/{page}.{fmt}": _feed_get(
            "Archive page of one topic's feed", "topic", "page", "fmt"
        ),
    }


FEED_PATHS = frozenset(
    {
        "/",
        "/stories/{slug}",
        "/topics/{topic}",
        "/feeds/all.{fmt}",
        "/feeds/stories/{slug}.{fmt}",
        "/feeds/topics/{topic}.{fmt}",
        "/feeds/all/archive/{page}.{fmt}",
        "/feeds/stories/{slug}/archive/{page}.{fmt}",
        "/feeds/topics/{topic}/archive/{page}.{fmt}",
    }
)
"""The paths of the feed and page routes, which their own module registers."""


def _as_submitted(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded event back in the form a client submits it."""
    keep = ("id", "type", "schema_version", "occurred_at", "data", "metadata")
    return {k: recorded[k] for k in keep}


@functools.lru_cache(maxsize=8)
def _document(base_url: str) -> bytes:
    return orjson.dumps(build_document(base_url))


def build_document(base_url: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, with ``base_url`` as its server."""
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
        "paths": _paths(),
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
    body = _document(request.app[SETTINGS].public_base_url)
    return web.Response(
        body=body,
        content_type=JSON,
        headers={"Cache-Control": "public, max-age=300"},
    )


# Events of the seed story (positions 1, 8 and 9 of events/seed/ct-doj-1373.ndjson),
# the examples above; a test checks they are still exactly the seed's.
SEED_EXAMPLES: list[dict[str, Any]] = [
    {
        "position": 1,
        "id": "a79b0316-2010-5769-bffd-ad530b4b8526",
        "stream": "ct-doj-section-1373-compliance",
        "version": 1,
        "type": "story.opened",
        "schema_version": 1,
        "occurred_at": "2017-10-12",
        "recorded_at": "2017-10-12T16:00:00.000000Z",
        "data": {
            "slug": "ct-doj-section-1373-compliance",
            "title": (
                "Justice Department finds Connecticut in compliance with federal immigration law"
            ),
            "summary": (
                "The U.S. Department of Justice told Connecticut on Thursday, Oct. 12,"
                " 2017, that it found no evidence the state is out of compliance with"
                " Section 1373 of Title 8 of the U.S. Code, so Connecticut is not violating"
                " federal immigration law and should be eligible for a federal law"
                " enforcement grant. The state, mistakenly labeled a “sanctuary state”"
                " after President Donald Trump’s inauguration, had argued that its 2013"
                " Trust Act does not violate federal law and should not cost it a $1.7"
                " million JAG grant. The department is still seeking more information from"
                " New York, Chicago, Philadelphia, New Orleans, and Cook County, Illinois."
            ),
            "topics": [
                "immigration",
                "Connecticut",
                "federal grants",
                "sanctuary jurisdictions",
                "law enforcement",
            ],
            "places": [
                "Connecticut",
                "Hartford",
            ],
        },
        "metadata": {
            "actor": "feedsvc seed",
            "source": "ctnewsjunkie.com",
        },
    },
    {
        "position": 8,
        "id": "66b6359d-30f7-5541-a14c-31d3cdc74d01",
        "stream": "ct-doj-section-1373-compliance",
        "version": 8,
        "type": "development.reported",
        "schema_version": 2,
        "occurred_at": "2017-10-12",
        "recorded_at": "2017-10-12T16:00:07.000000Z",
        "data": {
            "development_id": "doj-finds-connecticut-compliant-section-1373",
            "headline": (
                "Justice Department finds no evidence Connecticut is out of compliance with"
                " section 1373"
            ),
            "body": (
                "The U.S. Department of Justice told Connecticut in a letter on Thursday,"
                " Oct. 12, 2017, that it has found no evidence that the state is currently"
                " out of compliance with section 1373. Connecticut is not violating federal"
                " immigration law and should be eligible for a federal law enforcement"
                " grant.\n\nTitle 8, Section 1373 is the part of the U.S. Code dealing with"
                " immigration. It does not require local and state law enforcement to"
                " gather information, but it prohibits local governments from preventing"
                " communication with the federal government.\n\nThe department said New"
                " York, Chicago, Philadelphia, New Orleans, and Cook County, Illinois,"
                " “may” have policies that violate federal law, and it is seeking more"
                " information from those jurisdictions before reaching a decision."
            ),
            "kind": "letter",
            "sources": [
                {
                    "url": (
                        "https://ctnewsjunkie.com/2017/10/12/justice_connecticut_is_not_violating_federal_immigration_laws_10_12_2017/"
                    ),
                    "title": "Justice: Connecticut Is Not Violating Federal Immigration Laws",
                    "publisher": "CT News Junkie",
                },
            ],
            "organizations": [
                "U.S. Department of Justice",
            ],
            "places": [
                "Connecticut",
                "New York",
                "Chicago",
                "Philadelphia",
                "New Orleans",
                "Cook County, Illinois",
            ],
            "topics": [
                "immigration",
                "Connecticut",
                "federal grants",
                "sanctuary jurisdictions",
                "law enforcement",
            ],
        },
        "metadata": {
            "actor": "feedsvc seed",
            "source": "ctnewsjunkie.com",
        },
    },
    {
        "position": 9,
        "id": "cef6954f-8323-5def-89d5-3759dd30c34e",
        "stream": "ct-doj-section-1373-compliance",
        "version": 9,
        "type": "quote.attributed",
        "schema_version": 1,
        "occurred_at": "2017-10-12",
        "recorded_at": "2017-10-12T16:00:08.000000Z",
        "data": {
            "quote_id": "doj-no-evidence-out-of-compliance",
            "development_id": "doj-finds-connecticut-compliant-section-1373",
            "speaker": "U.S. Department of Justice",
            "text": (
                "the Department has found no evidence that the State of Connecticut is"
                " currently out of compliance with section 1373."
            ),
        },
        "metadata": {
            "actor": "feedsvc seed",
            "source": "ctnewsjunkie.com",
        },
    },
]
