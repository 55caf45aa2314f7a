"""``python -m receiver`` plus one thing: on SIGUSR1, print the journal's group-commit counters.

Used by ``bench/ingest.py --journal-stats``.  It runs the real CLI (``hookdock serve ...``)
unchanged; it only notes the ``Runtime`` when it starts and installs a SIGUSR1 handler that
writes one line to stdout:

    JOURNAL_STATS {"commits": 1234, "jobs": 20000}

``jobs / commits`` is the mean number of journal operations (ingest appends, and the in-process
dispatcher's claims and finishes) that shared one commit, that is one fsync.
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType
from typing import Any

from receiver import cli
from receiver.journal import SqlJournal
from receiver.runtime import Runtime

_runtimes: list[Runtime] = []
_original_start = Runtime.start


async def _start(self: Runtime) -> None:
    _runtimes.append(self)
    await _original_start(self)


def _report(signum: int, frame: FrameType | None) -> None:
    stats: dict[str, Any] = {"commits": 0, "jobs": 0}
    for runtime in _runtimes:
        if isinstance(runtime.journal, SqlJournal):
            commits, jobs = runtime.journal.stats
            stats["commits"] += commits
            stats["jobs"] += jobs
    print("JOURNAL_STATS " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    Runtime.start = _start  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _report)
    sys.exit(cli.main())
