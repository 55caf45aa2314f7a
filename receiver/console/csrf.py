"""What makes a console action (a POST) one the logged-in operator made on a console page.

Three locks, each enough against a page on another site: the session cookie is
SameSite=Strict (not sent with another site's request); the form carries the session's CSRF
token (another site cannot read it); and the request's ``Origin`` (or, without one, its
``Referer``) must be this console's own host.  A request with neither header is refused:
every browser sends ``Origin`` with a POST.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from receiver.console.session import Session, Sessions
from receiver.errors import Forbidden

__all__ = ["check_action", "check_origin"]

FORM_FIELD = "csrf"


def check_origin(headers: Mapping[str, str]) -> None:
    """``Forbidden`` unless the request comes from a page of this host (``Host``)."""
    host = headers.get("host", "").lower()
    origin = headers.get("origin")
    if origin is None:
        origin = headers.get("referer")
        if origin is None:
            raise Forbidden("refused: the request has no Origin (send it from a console page)")
    if origin == "null":
        raise Forbidden("refused: the request comes from an opaque origin (null)")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not host or parts.netloc.lower() != host:
        raise Forbidden("refused: the request comes from another site")


def check_action(
    headers: Mapping[str, str], form: Mapping[str, str], session: Session, sessions: Sessions
) -> None:
    """``Forbidden`` unless the action is same-origin and carries the session's form token."""
    check_origin(headers)
    if not sessions.csrf_matches(session, form.get(FORM_FIELD)):
        raise Forbidden("refused: the form's CSRF token is missing or not this session's")
