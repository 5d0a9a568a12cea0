"""``kiln serve``: the REST API, notebook endpoints and worker processes of a project."""

from __future__ import annotations

import argparse
from typing import Any

from kiln.errors import UsageError


def _duration(text: str) -> float:
    from kiln.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    from kiln.units import parse_size

    try:
        return parse_size(text, minimum=1024)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number; got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535; got {port}")
    return port


def _workers(text: str) -> int:
    from kiln.units import parse_count

    try:
        return parse_count(text, minimum=0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        parents=parents,
        help="serve the project: REST API, notebook endpoints, workers",
        description="Serve the project found as every command finds it (the nearest kiln.yaml, "
        "else the working directory): the REST API under /api/v1 (OpenAPI at /docs), the "
        "notebook endpoints declared in kiln.yaml, and worker processes that run queued runs. "
        "Flags override the server section of kiln.yaml. On the first start with no account, "
        "the user 'admin' is created and its password printed once. SIGTERM drains: running "
        "runs get --grace to finish, then are cancelled.",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port to listen on (default 8000; 0: any free)")
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="worker processes running queued runs (default 2)",
    )
    p.add_argument(
        "--grace",
        type=_duration,
        metavar="DURATION",
        help="on SIGTERM, how long runs may go on before they are cancelled (30s)",
    )
    p.add_argument(
        "--root-path",
        metavar="PATH",
        help="the sub-path a reverse proxy serves Kiln under, e.g. /kiln",
    )
    p.add_argument(
        "--metrics-public",
        action="store_true",
        default=None,
        help="serve /metrics without authentication",
    )
    p.add_argument(
        "--trusted-user-header",
        metavar="HEADER",
        help="accept the user name a reverse proxy authenticated from this header "
        "(e.g. X-Forwarded-User); only when nothing but the proxy reaches Kiln",
    )
    p.add_argument("--log-format", choices=("text", "json"), help="log lines (default text)")
    p.add_argument(
        "--max-body", type=_size, metavar="SIZE", help="largest request body accepted (default 1M)"
    )
    p.set_defaults(handler=handle)


def require_server_packages() -> None:
    """The server's packages are an extra: say how to get them."""
    import importlib.util

    missing = [
        name
        for name in ("fastapi", "uvicorn", "argon2", "prometheus_client", "nbconvert")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise UsageError(
            f"kiln serve needs {', '.join(missing)}: pip install 'kiln-notebooks[server]'"
        )


def handle(args: argparse.Namespace) -> int:
    require_server_packages()
    from kiln.server.settings import load_settings
    from kiln.server.supervisor import serve

    settings = load_settings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        grace=args.grace,
        root_path=args.root_path,
        metrics_public=args.metrics_public,
        trusted_user_header=args.trusted_user_header,
        log_format=args.log_format,
        max_body=args.max_body,
    )
    return serve(settings, out=lambda line: print(line, flush=True))
