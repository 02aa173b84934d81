"""``moengage-connector catalogue show | seed``: the claims log from the command line.

``show`` reads the log to its end and prints the account's catalogue as the guard sees it (one
JSON object: topic, caps, sizes, names). ``seed`` writes the names of a seed file that the log
does not hold yet as one seed claim, as ``catalogue.seed_file`` does at start-up, without
running the connector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.catalogue.guard import CatalogueGuard, load_seed
from connector.config import Settings


async def show(settings: Settings, workspace_id: str) -> dict[str, Any]:
    guard = CatalogueGuard(settings, workspace_id)
    try:
        await guard.log.start()
        return _summary(guard)
    finally:
        await guard.close()


async def seed(settings: Settings, workspace_id: str, path: Path) -> dict[str, Any]:
    names = load_seed(path)
    guard = CatalogueGuard(settings, workspace_id)
    try:
        await guard.log.start()
        added = await guard.seed(names)
        return {**_summary(guard), "seeded": added.as_json()}
    finally:
        await guard.close()


def _summary(guard: CatalogueGuard) -> dict[str, Any]:
    cat = guard.catalogue
    return {
        "topic": guard.log.topic,
        "caps": guard.caps(),
        "sizes": cat.sizes(),
        "names": {
            "user_attributes": sorted(cat.user_attributes),
            "events": {e: sorted(a) for e, a in sorted(cat.events.items())},
        },
    }
