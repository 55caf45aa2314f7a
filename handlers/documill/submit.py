"""Posting a Documill Dynamo batch, validated first; what ``hookdock documill submit`` does.

A batch is a template reference (or, in a multipart request, an embedded template file),
1 to 1,000 tasks each with ``params.id`` (the record the document is for), and an optional
``integration`` object (``type``, ``sessionID``, ``serverURL`` for Salesforce).  In a multipart
request, JSON parts named ``param.<name>`` are merged into the params of the tasks whose
``partParams`` name them (``partName``: ``<name>``, ``paramName``: where in the params).

``check_batch`` finds every problem before anything is sent, each naming the task and the key
(``tasks[3].params.id: missing``); ``submit_batch`` posts and returns what Dynamo answered, the
task ids paired with the records they are for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers.documill.client import DynamoClient

__all__ = ["MAX_TASKS", "BatchInvalid", "Submitted", "check_batch", "submit_batch"]

MAX_TASKS = 1000
_PART_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class BatchInvalid(ValueError):
    """The batch would be refused: ``problems`` names each, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Submitted:
    batch_id: str
    tasks: dict[str, str | None]
    """Dynamo's task id -> the ``params.id`` of the task posted in that position."""
    answer: dict[str, Any] = field(default_factory=dict)


def check_batch(
    data: Mapping[str, Any], *, has_template_file: bool, parts: Mapping[str, Any]
) -> list[str]:
    """Every problem of the batch ``data`` (the JSON body, or the multipart ``data`` part)."""
    problems: list[str] = []
    template = data.get("template")
    if not has_template_file and (not isinstance(template, str) or not template):
        problems.append("template: missing (a template id, or a template file to embed)")
    if has_template_file and template is not None:
        problems.append("template: give a template id or a template file, not both")
    for name in parts:
        if not name or not set(name) <= _PART_NAME_CHARS:
            problems.append(f"parts: {name!r} is not a part name (letters, digits, _ - .)")
    integration = data.get("integration")
    if integration is not None and not isinstance(integration, dict):
        problems.append("integration: must be an object (type, sessionID, serverURL)")
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        problems.append("tasks: missing (a list of 1 to 1000 tasks)")
        return problems
    if not 1 <= len(tasks) <= MAX_TASKS:
        problems.append(f"tasks: {len(tasks)} tasks; a batch has 1 to {MAX_TASKS}")
    used: set[str] = set()
    for index, task in enumerate(tasks):
        where = f"tasks[{index}]"
        if not isinstance(task, dict):
            problems.append(f"{where}: must be an object with params")
            continue
        params = task.get("params")
        if not isinstance(params, dict):
            problems.append(f"{where}.params: missing (an object with at least id)")
        elif params.get("id") in (None, ""):
            problems.append(f"{where}.params.id: missing (the record the document is for)")
        elif not isinstance(params["id"], str | int):
            problems.append(f"{where}.params.id: must be text or a number")
        problems += _part_params(where, task.get("partParams"), parts, used)
    for name in sorted(set(parts) - used):
        problems.append(f"parts: part {name!r} is named by no task's partParams")
    return problems


def _part_params(where: str, value: Any, parts: Mapping[str, Any], used: set[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [f"{where}.partParams: must be a list of {{partName, paramName}}"]
    problems = []
    known = ", ".join(sorted(parts)) or "none"
    for n, entry in enumerate(value):
        at = f"{where}.partParams[{n}]"
        if not isinstance(entry, dict):
            problems.append(f"{at}: must be an object with partName and paramName")
            continue
        part, param = entry.get("partName"), entry.get("paramName")
        if not isinstance(part, str) or not part:
            problems.append(f"{at}.partName: missing")
        elif part not in parts:
            problems.append(f"{at}.partName: {part!r} names no part (parts given: {known})")
        else:
            used.add(part)
        if not isinstance(param, str) or not param:
            problems.append(f"{at}.paramName: missing")
    return problems


async def submit_batch(
    client: DynamoClient,
    data: Mapping[str, Any],
    *,
    template: tuple[str, bytes] | None = None,
    parts: Mapping[str, Any] | None = None,
) -> Submitted:
    """Check, then post the batch; ``BatchInvalid`` without sending if it has problems."""
    problems = check_batch(data, has_template_file=template is not None, parts=parts or {})
    if problems:
        raise BatchInvalid(problems)
    answer = await client.post_batch(dict(data), template=template, parts=dict(parts or {}))
    batch_id, task_ids = answer.get("id"), answer.get("tasks")
    if not isinstance(batch_id, str | int) or not isinstance(task_ids, list):
        raise BatchInvalid(["Dynamo's answer has no batch id or task ids"])
    records = [t["params"]["id"] for t in data["tasks"]]
    pairs = {
        str(task_id): (str(records[n]) if n < len(records) else None)
        for n, task_id in enumerate(task_ids)
    }
    return Submitted(str(batch_id), pairs, answer)
