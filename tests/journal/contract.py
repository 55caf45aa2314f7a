"""``JournalContract``: what every journal backend must mean, method by method.

Subclass it and provide a ``journal`` fixture (an opened ``SqlJournal``, closed after the
test) to run it on a backend; ``test_contract.py`` runs it on SQLite, ``MemoryJournal`` and
PostgreSQL.  A few tests reach the database through ``_write`` to set up what only an older
hookdock could have written (a send without a stored event) or to look at rows no method
returns (attempts, pruned events).

Time: no test waits for the clock.  A lease of ``-1`` seconds has lapsed as soon as it is
taken, a retry ``at=0`` is due at once and one ``at=FUTURE`` is not due for decades.
"""

from __future__ import annotations

from tests.journal.contract_admin import AdminContract
from tests.journal.contract_hot import HotPathContract
from tests.journal.contract_operator import OperatorContract
from tests.journal.helpers import FUTURE, event, execute, file_info, raw, routed, rows

__all__ = ["FUTURE", "JournalContract", "event", "execute", "file_info", "raw", "routed", "rows"]


class JournalContract(HotPathContract, AdminContract, OperatorContract):
    """Every method of ``Journal`` and ``JournalAdmin``, as each backend must implement it."""
