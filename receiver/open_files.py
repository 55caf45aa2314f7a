"""The process's limit of open files: its soft limit raised to the hard one at start.

The folder sink writes as many files at once as it has slots (256 by default), each file and
each new folder open until the batch's fsyncs are done, beside every HTTP connection and the
journal's files.  A soft limit of 1,024, still a common default, is within reach of that; the
hard limit is the operator's ceiling, and a process may raise its soft limit up to it, as
servers commonly do at start.
"""

from __future__ import annotations

import logging
import resource

__all__ = ["CAP", "LOW", "raise_open_files_limit"]

log = logging.getLogger("hookdock")

CAP = 1 << 20
"""Never asked for more than this, whatever the hard limit (which may be unlimited)."""
LOW = 4096
"""Below this, one line at start says the limit may be met under load."""


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one (at most ``CAP``); the soft limit
    now.  Where it cannot be raised, it is left as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = CAP if hard == resource.RLIM_INFINITY else min(hard, CAP)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.debug("cannot raise the limit of open files from %d: %s", soft, exc)
    if soft != resource.RLIM_INFINITY and soft < LOW:
        log.warning(
            "this process may open at most %d files (its hard limit): under load the folder"
            " sink and the listener may meet it; raise it (LimitNOFILE, ulimit -Hn)",
            soft,
        )
    return soft
