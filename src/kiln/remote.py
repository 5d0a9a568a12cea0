"""Notebooks at URLs: ``https://`` read with the standard library, everything else with fsspec.

``kiln run s3://bucket/in.ipynb s3://bucket/out.ipynb`` works as papermill's does: the input is
read before anything starts (its bytes are what runs and what the run records), the output is
written locally as the run goes (atomic saves in the run folder) and uploaded when it ends.
fsspec and its filesystem packages (s3fs, gcsfs, ...) are optional: a URL that needs one says
what to install.
"""

from __future__ import annotations

import re
from typing import Any

from kiln.errors import UsageError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: the largest notebook fetched from a URL
MAX_BYTES = 512 * 1024 * 1024


def is_url(text: str | None) -> bool:
    """``s3://b/k``, ``https://h/p``, ``file:///x``: not a local path."""
    return bool(text) and _URL.match(str(text)) is not None


def read_bytes(url: str, *, timeout: float = 60.0) -> bytes:
    """The bytes at ``url`` (a usage error, naming the URL, when they cannot be read)."""
    if url.startswith(("http://", "https://")):
        return _read_http(url, timeout)
    fs, path = _filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            data: bytes = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"cannot read {url}: no such file") from None
    except Exception as exc:  # filesystems raise their own errors (botocore, gcsfs, ...)
        raise UsageError(f"cannot read {url}: {type(exc).__name__}: {exc}") from None
    return _bounded(url, data)


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` at ``url`` in one piece (object stores make it appear whole)."""
    if url.startswith(("http://", "https://")):
        raise UsageError(f"cannot write {url}: http(s) URLs are read-only; use s3://, gs://, ...")
    fs, path = _filesystem(url)
    try:
        with fs.open(path, "wb") as handle:
            handle.write(data)
    except Exception as exc:
        raise UsageError(f"cannot write {url}: {type(exc).__name__}: {exc}") from None


def _read_http(url: str, timeout: float) -> bytes:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "kiln"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _bounded(url, response.read(MAX_BYTES + 1))
    except urllib.error.HTTPError as exc:
        raise UsageError(f"cannot read {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot read {url}: {reason}") from None


def _bounded(url: str, data: bytes) -> bytes:
    if len(data) > MAX_BYTES:
        raise UsageError(f"{url} is larger than {MAX_BYTES // 2**20} MiB")
    return data


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise UsageError(
            f"{url}: reading and writing URLs needs fsspec: pip install 'kiln-notebooks[remote]'"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        hint = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
        package = hint.get(scheme)
        extra = f": pip install {package}" if package else ""
        raise UsageError(f"{url}: no filesystem for {scheme}:// ({exc}){extra}") from None
    return fs, path
