"""The console's templates: Jinja2 with autoescaping on for everything, strict undefined.

Everything a vendor sent is hostile: autoescaping makes markup text, and ``reveal`` (run on
every ``{{ value }}``) shows the invisible and direction-changing characters as their codes
(``<U+202E>``), so a display name cannot hide text or make it read backwards.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.responses import HTMLResponse

__all__ = ["page", "pretty_json", "reveal"]

# Bidirectional embeddings, overrides and isolates, zero-width characters, the BOM and other
# format characters, and C0/C1 controls but for tab and newline.
_HIDDEN = re.compile(
    "[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)


def reveal(value: Any) -> Any:
    # Markup is a macro's output, made of values each revealed and escaped already.
    if isinstance(value, str) and not isinstance(value, Markup):
        return _HIDDEN.sub(lambda m: f"<U+{ord(m.group()):04X}>", value)
    return value


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


_env = Environment(
    loader=PackageLoader("receiver.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    finalize=reveal,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["pretty_json"] = pretty_json


def page(name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(context), status_code=status)
