"""The relay serves the softphone's files, with the right types and headers, and nothing else."""

from __future__ import annotations

import asyncio
import http.client
import json
import re

import pytest

from callbot.signaling.relay import WEB_DIR, Relay

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _get(relay: Relay, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """A GET with `path` sent exactly as given (no client-side normalisation, no proxy)."""
    connection = http.client.HTTPConnection(relay.host, relay.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


async def test_the_page_and_each_of_its_files_are_served(relay: Relay) -> None:
    status, headers, body = await asyncio.to_thread(_get, relay, "/")
    assert status == 200 and headers["Content-Type"] == TYPES[".html"]
    assert body == (WEB_DIR / "index.html").read_bytes()
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    files = sorted(WEB_DIR.iterdir())
    assert {f.suffix for f in files} <= TYPES.keys()
    for file in files:
        status, headers, body = await asyncio.to_thread(_get, relay, f"/{file.name}?v=1")
        assert (status, headers["Content-Type"]) == (200, TYPES[file.suffix]), file.name
        assert body == file.read_bytes() and headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/nope.js",
        "/../pyproject.toml",
        "/..%2fpyproject.toml",
        "/%2e%2e/README.md",
        "/../signaling/relay.py",
        "//etc/passwd",
        "/web/app.js",
        "/app.js/",
        "/App.js",
        "/.app.js",
        "/relay.py",
        "/index.html%00.js",
    ],
)
async def test_nothing_else_is_served(relay: Relay, path: str) -> None:
    status, headers, body = await asyncio.to_thread(_get, relay, path)
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "not_found", "path": path}


def test_the_page_loads_only_its_own_files() -> None:
    """Relative URLs only: nothing is fetched from anywhere but the relay."""
    html = (WEB_DIR / "index.html").read_text()
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert (WEB_DIR / url).is_file(), url
    for module in WEB_DIR.glob("*.js"):
        for specifier in re.findall(r'from "([^"]+)";', module.read_text()):
            assert specifier.startswith("./") and (WEB_DIR / specifier).is_file(), specifier
