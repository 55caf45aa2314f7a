"""The operators' web console under ``/admin``: pages over the operator service, for a browser.

It reads and acts only through ``receiver.operator.Operator`` (what the admin API and the CLI
call), and starts bulk replays through the same ``BulkReplays`` the API uses.  The modules:

* ``session``: login with an ``[admin]`` token, a signed, expiring session cookie;
* ``csrf``: every action needs the session's form token and a same-origin request;
* ``security``: the headers on every response (a strict Content-Security-Policy: no inline
  script or style; no framing);
* ``render``: the Jinja2 environment (autoescaped; invisible and bidirectional controls in
  what a vendor sent are shown as codes, not obeyed);
* ``charts``: the overview's charts as server-rendered SVG;
* ``pages``: what each page shows (GET), ``actions``: what each button does (POST);
* ``app``: the routes, the guard in front of them, the static files.
"""

from receiver.console.app import console_app

__all__ = ["console_app"]
