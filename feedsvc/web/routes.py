"""Every route of the service, registered from the table in :mod:`feedsvc.urls`.

Each handler is registered wrapped in :func:`feedsvc.web.ops.observed` (request id,
problem+json errors, metrics, access log), and a last resource catches every request
no route matches, so that its 404 or 405 gets the same; the app has no aiohttp
middleware (cheaper per request: see :mod:`feedsvc.web.ops`).
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import hdrs, web

from feedsvc import urls
from feedsvc.web import api, feeds, openapi, ops
from feedsvc.web.ops import Handler


def setup(app: web.Application) -> None:
    """Register every route of :data:`feedsvc.urls.ROUTES`, in its order, then the
    resource that answers unmatched requests (it must come last: a route registered
    after it under ``/`` would never be reached)."""
    cached = feeds.CachedDocuments(app)
    for route in urls.ROUTES:
        if route.document is None:
            add(app, route.method, route.aiohttp_path, handler(route), allow_head=route.head)
            continue
        path = route.aiohttp_path
        resource = RememberedPaths(path) if "{" in path else web.PlainResource(path)
        app.router.register_resource(resource)
        add(app, route.method, resource, handler(route), fast=cached.answer)
    app.router.register_resource(Unmatched(app))


_MODULES = {"api": api, "feeds": feeds, "openapi": openapi, "ops": ops}


def handler(route: urls.Route) -> Handler:
    """The handler a route names (``module.function`` in :mod:`feedsvc.web`)."""
    module, _, name = route.handler.partition(".")
    found: Handler = getattr(_MODULES[module], name)
    return found


def add(
    app: web.Application,
    method: str,
    path: str | web.Resource,
    handler: Handler,
    *,
    allow_head: bool = True,
    fast: ops.Answer | None = None,
) -> None:
    """Route ``method`` (and HEAD with GET, as aiohttp's ``add_get`` does) at ``path`` to
    ``handler``, wrapped in :func:`~feedsvc.web.ops.observed`."""
    resource = app.router.add_resource(path) if isinstance(path, str) else path
    answer = ops.observed(app, handler, resource.canonical, fast)
    if method == hdrs.METH_GET and allow_head:
        resource.add_route(hdrs.METH_HEAD, answer)
    resource.add_route(method, answer)


class RememberedPaths(web.DynamicResource):
    """A route template that remembers, for the paths it was asked about, whether and
    how each matched: a feed path asked for again (most requests) costs a dictionary
    look-up instead of a regular expression and decoding its parts."""

    MAX_PATHS = 4096

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._matches: dict[str, dict[str, str] | None] = {}
        self._routes_by_method: dict[str, web.ResourceRoute] | None = None
        self._methods: set[str] = set()

    async def resolve(
        self, request: web.Request
    ) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        path = request.rel_url.path_safe
        if path not in self._matches:
            found, allowed = await super().resolve(request)
            if found is not None or not allowed:  # else: the path matched, not the method
                if len(self._matches) >= self.MAX_PATHS:
                    self._matches.clear()
                self._matches[path] = None if found is None else dict(found)
            return found, allowed
        match = self._matches[path]
        if match is None:
            return None, set()
        routes = self._routes_by_method
        if routes is None:  # the router is frozen by now: the routes are all there
            routes = self._routes_by_method = {route.method: route for route in self}
            self._methods = set(routes)
        route = routes.get(request.method) or routes.get(hdrs.METH_ANY)
        if route is None:
            return None, self._methods
        return web.UrlMappingMatchInfo(match, route), self._methods


class Unmatched(web.PlainResource):
    """The last resource, where every request no route matches ends up: the router
    looks under ``/`` last and takes the first resource there that matches, and this one
    matches anything. It answers the 404 or 405 aiohttp would have (with ``Allow``),
    through :func:`~feedsvc.web.ops.observed` like every route."""

    def __init__(self, app: web.Application) -> None:
        super().__init__("/")
        self._router = app.router
        self._route = self.add_route(
            hdrs.METH_ANY, ops.observed(app, self._not_routed, ops.UNMATCHED)
        )

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo, set[str]]:
        return web.UrlMappingMatchInfo({}, self._route), set()

    def raw_match(self, path: str) -> bool:
        return False  # never reused by router.add_resource for a route of its own

    # not a route of the service: listings (router.routes(), the OpenAPI check) skip it
    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[web.ResourceRoute]:
        return iter(())

    async def _not_routed(self, request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in self._router.resources():
            if resource is not self:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()
