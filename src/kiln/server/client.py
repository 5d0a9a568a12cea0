"""A small client of Kiln's REST API (standard library only): what ``kiln --server URL
--token T`` uses for ``runs list|show|logs|cancel`` and ``run --queue``.

::

    client = Client("https://kiln.example.com", token)
    run = client.json("POST", "/api/v1/runs", body={"notebook": "report.ipynb"})
    for kind, data in client.events(f"/api/v1/runs/{run['id']}/log?follow=true"):
        ...

An error answer becomes :class:`~kiln.errors.ServerRefused` (4xx) or
:class:`~kiln.errors.ServerError` (5xx, no answer), with the server's ``detail``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from kiln.errors import ServerError, ServerRefused, UsageError
from kiln.store.records import Record, Run

#: seconds to wait for an answer (a followed log waits as long as the run goes on)
TIMEOUT = 60.0


class Client:
    def __init__(self, url: str, token: str | None, *, timeout: float = TIMEOUT) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(
                f"--server: expected a URL such as https://kiln.example.com; got {url!r}"
            )
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        accept: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        query = urllib.parse.urlencode(
            [
                (k, v)
                for k, value in (params or {}).items()
                if value is not None
                for v in (value if isinstance(value, (list, tuple)) else [value])
            ]
        )
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", accept)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise _error(exc, method, path) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"cannot reach the Kiln server at {self.base}: {reason}") from None

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._open(method, path, **kwargs) as answer:
            return json.loads(answer.read() or b"null")

    def text(self, path: str, **kwargs: Any) -> str:
        with self._open("GET", path, accept="text/plain", **kwargs) as answer:
            data: bytes = answer.read()
        return data.decode("utf-8", errors="replace")

    def events(self, path: str, **kwargs: Any) -> Iterator[tuple[str, str]]:
        """Server-Sent Events as (event, data) until the stream ends."""
        with self._open("GET", path, accept="text/event-stream", timeout=3600, **kwargs) as answer:
            kind = "message"
            data: list[str] = []
            for raw in answer:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not line:
                    if data:
                        yield kind, "\n".join(data)
                    kind, data = "message", []
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)


def _error(exc: urllib.error.HTTPError, method: str, path: str) -> ServerError:
    try:
        detail = json.loads(exc.read() or b"{}").get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = f"the server answered {exc.code} to {method} {path}: {detail or exc.reason}"
    if exc.code == 401:
        text += " (give a token: --token or KILN_TOKEN; kiln tokens create USER makes one)"
    cls = ServerRefused if 400 <= exc.code < 500 else ServerError
    return cls(text, status=exc.code, detail=detail)


_TIMES = frozenset({"created_at", "started_at", "ended_at", "lease_expires", "cancel_requested"})


def run_from_json(data: Mapping[str, Any]) -> Run:
    """A :class:`Run` from the API's JSON (what ``kiln runs`` prints locally)."""
    known = {f.name for f in fields(Run)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TIMES and isinstance(value, str):
            values[key] = datetime.fromisoformat(value)
        elif key in known and key != "records_list":
            values[key] = value
    kinds = data.get("record_kinds") or {}
    values["records_list"] = [
        Record(name, str(kinds.get(name, "json")), value)
        for name, value in (data.get("records") or {}).items()
    ]
    # a non-admin is shown the notebook's path within the project, not the server's path
    values.setdefault("notebook_path", str(data.get("notebook") or ""))
    return Run(**values)
