"""The OpenAPI document stays true: every route is in it, it is valid OpenAPI 3.1, and
what the server really answers validates against what it promises."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from feedsvc.web.openapi import seed_examples
from tests.conftest import SEED, opened, reported
from tests.web.conftest import SEED_STREAM, Service, Start, new_id

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
DOC_URI = "urn:feedsvc:openapi"
SEED_LINES = [orjson.loads(line) for line in SEED.read_bytes().splitlines()]


async def document(svc: Service) -> dict[str, Any]:
    """The document as the service serves it."""
    response = await svc.client.get("/api/openapi.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


def escape(part: str) -> str:
    """One JSON pointer segment."""
    return part.replace("~", "~0").replace("/", "~1")


def validator(doc: dict[str, Any], *pointer: str) -> Draft202012Validator:
    """A validator of the schema at ``pointer`` in the document, resolving its refs."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    ref = DOC_URI + "#/" + "/".join(escape(p) for p in pointer)
    return Draft202012Validator(
        {"$ref": ref}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (response, parameter, header objects)."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every node of the document with its path."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, str(index)))


async def test_every_route_is_documented_and_every_documented_path_is_served(
    svc: Service,
) -> None:
    doc = await document(svc)
    served = {
        (resource.canonical, route.method.lower())
        for resource in svc.app.router.resources()
        for route in resource
        if route.method not in ("HEAD", "OPTIONS")
    }
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented operations the app does not serve"


async def test_the_document_is_valid_openapi_3_1(svc: Service) -> None:
    doc = await document(svc)
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    operation_ids: list[str] = []
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        template = {part.split("}")[0] for part in path.split("{")[1:]}
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            parameters = [resolve(doc, p) for p in item.get("parameters", [])]
            parameters += [resolve(doc, p) for p in operation.get("parameters", [])]
            in_path = {p["name"] for p in parameters if p["in"] == "path"}
            assert in_path == template, f"{method} {path}: path parameters"
            assert all(p["required"] for p in parameters if p["in"] == "path")
            assert operation["responses"], f"{method} {path}: no responses"
            for status in operation["responses"]:
                assert status == "default" or (status.isdigit() and len(status) == 3)
            if "operationId" in operation:
                operation_ids.append(operation["operationId"])
    assert len(operation_ids) == len(set(operation_ids))

    for where, node in walk(doc):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            assert node["$ref"].startswith("#/"), where
            resolve(doc, node)  # raises if it points nowhere
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert name

    # every example validates against its schema
    for where, node in walk(doc["paths"]):
        if (
            isinstance(node, dict)
            and "schema" in node
            and ("example" in node or "examples" in node)
        ):
            check = validator(doc, "paths", *where, "schema")
            examples = [node["example"]] if "example" in node else []
            examples += [e["value"] for e in node.get("examples", {}).values()]
            for example in examples:
                if isinstance(example, str):
                    continue
                errors = [e.message for e in check.iter_errors(example)]
                assert not errors, f"example at {'/'.join(where)}: {errors}"


def _spec_validator_python() -> str | None:
    base = getattr(sys, "_base_executable", None)
    for candidate in (shutil.which("python3"), "/usr/bin/python3", base):
        if not candidate:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import openapi_spec_validator"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return candidate
    return None


async def test_openapi_spec_validator_accepts_the_document(svc: Service) -> None:
    python = _spec_validator_python()
    if python is None:
        pytest.skip("openapi-spec-validator is not installed in any python here")
    doc = await document(svc)
    checker = await asyncio.create_subprocess_exec(
        python,
        "-c",
        "import json, sys\n"
        "from openapi_spec_validator import validate\n"
        "validate(json.load(sys.stdin))",
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await checker.communicate(json.dumps(doc).encode())
    assert checker.returncode == 0, stderr.decode()[-3000:]


async def test_real_answers_validate_against_the_documented_schemas(svc: Service) -> None:
    doc = await document(svc)
    scoped = await svc.token("scoped", "append:some-other-story")
    stream = f"/api/stories/{SEED_STREAM}/events"
    replayable = [{**reported("documented"), "id": new_id()}]
    json_type = {"Content-Type": "application/json"}
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("get", "/healthz", "/healthz", {}),
        ("get", "/readyz", "/readyz", {}),
        ("get", "/metrics", "/metrics", {}),
        ("get", "/api/openapi.json", "/api/openapi.json", {}),
        ("get", "/api/events", "/api/events?limit=3", {}),
        ("get", "/api/events", "/api/events?limit=0", {}),
        ("get", "/api/stories/{slug}/events", stream + "?from_version=20&limit=2", {}),
        ("get", "/api/stories/{slug}/events", stream, {"headers": {"If-None-Match": '"23"'}}),
        ("get", "/api/stories/{slug}/events", "/api/stories/nope/events", {}),
        ("post", "/api/stories/{slug}/events", stream, {"json": replayable}),
        ("post", "/api/stories/{slug}/events", stream, {"json": replayable}),
        ("post", "/api/stories/{slug}/events", stream, {"json": {"type": "x"}}),
        ("post", "/api/stories/{slug}/events", stream, {"json": opened(SEED_STREAM)}),
        ("post", "/api/stories/{slug}/events", "/api/stories/nope/events", {"json": reported("a")}),
        (
            "post",
            "/api/stories/{slug}/events",
            stream,
            {"data": b"x", "headers": {"Content-Type": "text/plain"}},
        ),
        (
            "post",
            "/api/stories/{slug}/events",
            stream,
            {"json": [reported(f"n{i}") for i in range(1001)]},
        ),
        ("get", "/feeds/all.{fmt}", "/feeds/all.json", {}),
        ("get", "/feeds/stories/{slug}.{fmt}", f"/feeds/stories/{SEED_STREAM}.atom", {}),
        ("get", "/", "/", {}),
    ]
    seen: set[int] = set()
    for method, template, url, kwargs in calls:
        headers = {**svc.auth(), **json_type} if method == "post" else {}
        headers.update(kwargs.pop("headers", {}))
        response = await svc.client.request(method, url, headers=headers, **kwargs)
        body = await response.read()
        operation = doc["paths"][template][method]
        status = str(response.status)
        assert status in operation["responses"], f"{method} {url}: {status} is not documented"
        seen.add(response.status)
        documented = resolve(doc, operation["responses"][status])
        if not body or response.status == 304:
            continue
        media = response.content_type
        assert media in documented.get("content", {}), f"{method} {url}: {media} undocumented"
        if not media.endswith("json"):
            continue
        ref = operation["responses"][status].get("$ref")
        pointer = (
            ref.removeprefix("#/").split("/")
            if ref
            else ["paths", template, method, "responses", status]
        )
        check = validator(doc, *pointer, "content", media, "schema")
        errors = [
            f"{'/'.join(map(str, e.path))}: {e.message}"
            for e in check.iter_errors(orjson.loads(body))
        ]
        assert not errors, f"{method} {url} ({status}): {errors[:5]}"
    # a forbidden and an unauthenticated append are documented too
    stream_template = "/api/stories/{slug}/events"
    for headers in ({"Authorization": f"Bearer {scoped}"}, {}):
        response = await svc.client.post(stream, json=reported("x"), headers=headers)
        assert str(response.status) in doc["paths"][stream_template]["post"]["responses"]
        check = validator(doc, "components", "schemas", "Problem")
        check.validate(await response.json(content_type=None))
        seen.add(response.status)
    assert seen >= {200, 201, 304, 400, 401, 403, 404, 409, 413, 415}


def test_the_examples_are_the_seed_story() -> None:
    examples = seed_examples()
    assert [e["type"] for e in examples] == [
        "story.opened",
        "development.reported",
        "quote.attributed",
    ]
    assert all(SEED_LINES[e["position"] - 1] == e for e in examples)


async def test_the_event_schemas_accept_the_seed_and_refuse_server_fields(svc: Service) -> None:
    doc = await document(svc)
    for line in SEED_LINES:
        data = validator(doc, "components", "schemas", f"{line['type']}.v{line['schema_version']}")
        data.validate(line["data"])
        validator(doc, "components", "schemas", "RecordedEvent").validate(line)
    submitted = {
        k: SEED_LINES[7][k] for k in ("id", "type", "schema_version", "occurred_at", "data")
    }
    request = validator(doc, "components", "schemas", "AppendRequest")
    request.validate(submitted)
    request.validate([submitted, submitted])
    request.validate({"expected_version": "no_stream", "events": [submitted]})
    assert not request.is_valid({**submitted, "position": 8})
    assert not request.is_valid({**submitted, "data": {**submitted["data"], "headline": ""}})
    assert not request.is_valid({**submitted, "type": "story.opened"})


async def test_documented_limits_are_the_running_services(start: Start) -> None:
    svc = await start(max_page_size=50, max_wait_s=2.0)
    doc = await document(svc)
    parameters = {p["name"]: p for p in doc["paths"]["/api/events"]["get"]["parameters"]}
    limit = parameters["limit"]["schema"]
    assert (limit["default"], limit["maximum"]) == (50, 50)
    assert "at most 2;" in parameters["wait"]["description"]
    assert (await svc.client.get("/api/events", params={"limit": 50})).status == 200
    too_many = await svc.client.get("/api/events", params={"limit": 51})
    assert too_many.status == 400
    body = await too_many.json(content_type="application/problem+json")
    assert body["errors"][0]["parameter"] == "limit"
    stream = doc["paths"]["/api/stories/{slug}/events"]["get"]["parameters"]
    assert next(p["schema"] for p in stream if p.get("name") == "limit")["maximum"] == 50
