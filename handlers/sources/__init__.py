"""Built-in sources.

Each vendor lives in its own module and is imported only when a route names it, so a missing
optional dependency of one vendor never stops the others from loading.
"""

from __future__ import annotations

__all__: list[str] = []
