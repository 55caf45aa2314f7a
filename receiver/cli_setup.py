"""``hookdock secret`` (make URL tokens, admin tokens and signing secrets) and ``hookdock urls``
(the webhook URLs of a configuration, tokens masked unless asked)."""

from __future__ import annotations

import argparse
import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from receiver.auth import UrlTokenAuth
from receiver.config import Config
from receiver.defaults import DEFAULT_DATA_DIR, TOKEN_FILE
from receiver.errors import NotFound

__all__ = ["register", "webhook_urls"]

Command = Callable[[str, str], argparse.ArgumentParser]
Resolve = Callable[[argparse.Namespace], tuple[Config, Path, bool]]


def webhook_urls(config: Config, base: str, *, show_tokens: bool) -> list[tuple[str, str, str]]:
    """(route, auth type, URL) for each route; a URL token is masked unless ``show_tokens``."""
    out: list[tuple[str, str, str]] = []
    for route in config.routes:
        url = f"{base}/hooks/{route.name}"
        if isinstance(route.auth, UrlTokenAuth):
            token = route.auth.token.get_secret_value()
            url += "/" + (token if show_tokens else f"{token[:4]}…{'*' * 8}")
        out.append((route.name, str(route.auth.type), url))
    return out


def _base(config: Config, host: str | None, port: int | None) -> str:
    host = host or config.server.host
    shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    return f"http://{shown}:{port if port is not None else config.server.port}"


def _cmd_secret(args: argparse.Namespace) -> int:
    if args.kind == "signing":
        # Standard Webhooks: whsec_ and the base64 of 24 to 64 random bytes; 32 here.
        print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    else:
        # URL-safe (RFC 3986 unreserved characters only), 43 characters: for url-token routes
        # and for [admin] tokens.
        print(secrets.token_urlsafe(32))
    return 0


def register(command: Command, resolve: Resolve) -> None:
    secret = command("secret", "make a random secret: a signing secret, or a token")
    secret.add_argument(
        "kind",
        nargs="?",
        choices=["signing", "token"],
        default="signing",
        help="signing: a Standard Webhooks whsec_ secret (HTTP sink, standard-webhooks auth);"
        " token: a URL token or admin token (default: signing)",
    )
    secret.set_defaults(run=_cmd_secret)

    def run_urls(args: argparse.Namespace) -> int:
        if not (args.config or os.environ.get("HOOKDOCK_CONFIG")):
            # The embedded defaults make their token on first start: from the wrong folder,
            # URLs made up on the spot would name a token no server knows.
            data_dir = Path(args.data_dir or os.environ.get("HOOKDOCK_DATA") or DEFAULT_DATA_DIR)
            if not (data_dir / TOKEN_FILE).is_file():
                raise NotFound(
                    f"there is no URL token at {data_dir.resolve() / TOKEN_FILE}: run"
                    " `hookdock serve` once to make one, or pass --data-dir or --config"
                )
        config, _, _ = resolve(args)
        rows = webhook_urls(config, _base(config, args.host, args.port), show_tokens=args.show)
        width = max(len(name) for name, _, _ in rows)
        kinds = max(len(kind) for _, kind, _ in rows)
        for name, kind, url in rows:
            print(f"{name:{width}}  {kind:{kinds}}  {url}")
        if not args.show and any(kind == "url-token" for _, kind, _ in rows):
            print("(tokens masked: --show prints them; keep them secret)")
        return 0

    urls = command("urls", "print the webhook URLs of the configuration")
    urls.add_argument("--host", help="the host name callers use (default: [server] host)")
    urls.add_argument("--port", type=int, help="the port callers use (default: [server] port)")
    urls.add_argument("--show", action="store_true", help="print URL tokens in full")
    urls.set_defaults(run=run_urls)
