"""
The work list: the config's targets in order, each pair once.
"""

from __future__ import annotations

import structlog

from orchestrator.config import Settings, Target

log = structlog.get_logger(__name__)


def plan(settings: Settings) -> tuple[Target, ...]:
    """
    Return the targets to sync, in file order, with repeated pairs merged.

    A repeat is logged as a warning naming both lines; the first one stays.
    """
    first_line: dict[Target, int | None] = {}
    for target in settings.targets:
        if target in first_line:
            log.warning(
                "config.duplicate_target_merged",
                project_id=target.project_id,
                dataset_id=target.dataset_id,
                path=str(settings.path),
                line=target.line,
                first_line=first_line[target],
            )
            continue
        first_line[target] = target.line

    return tuple(first_line)
