"""
Failed targets as the next run's input: a config holding only what did not succeed.

Like S3 Batch Operations' completion report feeding the next job's manifest:
``modelarts-sync report failures REPORT -o retry.yaml`` then ``modelarts-sync
run retry.yaml``. The settings come from the config the report names, re-read
from disk, so endpoint, auth, limits and retry carry over; only ``targets``
changes. Comments of the original file are not kept (PyYAML drops them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
import yaml

from orchestrator import config
from orchestrator.errors import ConfigError, ReportError

log = structlog.get_logger(__name__)

_NOT_DONE = frozenset({"failed", "cancelled"})


def unfinished(document: Mapping[str, Any]) -> list[dict[str, str]]:
    """
    Return the targets that failed or were cancelled, in report order.
    """
    return [
        {"project_id": row["project_id"], "dataset_id": row["dataset_id"]}
        for row in document["results"]
        if row.get("status") in _NOT_DONE
    ]


def write_failures(document: Mapping[str, Any], report_path: Path, out: Path) -> int:
    """
    Write a config of the report's unfinished targets to ``out``; return their count.

    Nothing is written when every target succeeded or was skipped. The written
    file is loaded back through the config checks before this returns.

    Raises:
        ConfigError: the original config is gone and cannot be rebuilt, or the
            result does not pass the config checks.
        ReportError: ``out`` cannot be written.
    """
    targets = unfinished(document)
    if not targets:
        return 0
    settings = _original_settings(document)
    settings["targets"] = targets
    header = (
        f"# The {len(targets)} of {len(document['results'])} targets that did not "
        f"succeed in {report_path};\n# settings from {document['config']['path']}.\n"
    )
    _write_atomically(out, header + yaml.safe_dump(settings, sort_keys=False))
    config.load(out)

    return len(targets)


def _original_settings(document: Mapping[str, Any]) -> dict[str, Any]:
    """
    Return the original config's mapping, or the report's view of it if it is gone.
    """
    facts = document["config"]
    path = Path(facts["path"])
    try:
        raw = path.read_bytes()
    except OSError:
        log.warning("manifest.config_missing", path=str(path))
        return {
            "endpoint": facts["endpoint"],
            "rate_limit": facts["rate_limit"],
            "concurrency": facts["concurrency"],
        }
    if hashlib.sha256(raw).hexdigest() != facts["sha256"]:
        log.warning("manifest.config_changed", path=str(path))
    loaded = yaml.safe_load(raw)
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the config the report names is not a mapping")
    ca_bundle = loaded.get("ca_bundle")
    if isinstance(ca_bundle, str) and not Path(ca_bundle).expanduser().is_absolute():
        # Relative paths are read from the config's folder; the new file may
        # live elsewhere, so it names the bundle absolutely.
        loaded["ca_bundle"] = str((path.parent / ca_bundle).resolve())

    return loaded


def _write_atomically(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except OSError as exc:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temp_name)
        raise ReportError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
