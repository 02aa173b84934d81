"""What ``validate`` and ``preview`` check before anything runs: each topic's mapping against the
topic's schema (``transforms.schemacheck`` with ``source.topicschemas``).

Problems are configuration errors at their key paths; notes say what could not be checked and why
(a JSON topic, a registry out of reach), once per topic, and never fail a command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from connector.config import Settings
from connector.source.topicschemas import TopicSchemas
from connector.transforms.schemacheck import Problem, check_topic


@dataclass(frozen=True, slots=True)
class Preflight:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_schemas(
    settings: Settings, indexes: Iterable[int] | None = None, *, schemas: TopicSchemas | None = None
) -> Preflight:
    """Every problem of the topics at ``indexes`` (default: all), in topic order."""
    if schemas is None:
        schemas = TopicSchemas(settings)
        try:
            return check_schemas(settings, indexes, schemas=schemas)
        finally:
            schemas.close()
    result = Preflight()
    noted: dict[str, list[str]] = {}  # one line per reason, naming every topic it applies to
    for i in range(len(settings.topics)) if indexes is None else indexes:
        topic = settings.topics[i]
        if topic.transform.mapping is None:
            continue  # code reads what it likes: nothing to check, nothing to fetch
        found = schemas.get(i)
        if found.note is not None:
            noted.setdefault(found.note, []).append(f"topics[{i}] ({topic.name})")
        result.problems.extend(check_topic(topic, i, found.schema))
    result.notes.extend(f"{', '.join(topics)}: {note}" for note, topics in noted.items())
    return result
