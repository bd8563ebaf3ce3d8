"""The rule files on disk: when they changed, and which content is in force.

Rules change by editing files, outside the API; the rules service reloads them when a file's
modification time moves, and writes the reload (or its refusal) to the audit log with a digest
of the files' content, so the log shows when the rule set changed.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from ioc.core.settings import Settings
from ioc.rules.language import DEFAULT_PACK, RuleSet, load_rules, rule_files


def rules_path(settings: Settings) -> Path:
    return settings.rules_dir if settings.rules_dir is not None else DEFAULT_PACK


class RuleFiles:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtimes = self._read_mtimes()

    def load(self) -> RuleSet:
        """Every rule file; raises :class:`ioc.rules.language.RuleErrors` naming each problem."""
        return load_rules(self.path)

    def changed(self) -> bool:
        """A file was added, removed or modified since the last call (or construction)."""
        mtimes = self._read_mtimes()
        if mtimes == self._mtimes:
            return False
        self._mtimes = mtimes
        return True

    def digest(self) -> str:
        h = hashlib.sha256()
        with contextlib.suppress(OSError):
            for f in sorted(rule_files(self.path)):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        return f"{self.path} sha256:{h.hexdigest()[:16]}"

    def _read_mtimes(self) -> dict[Path, float]:
        out: dict[Path, float] = {}
        with contextlib.suppress(OSError):
            for f in rule_files(self.path):
                out[f] = f.stat().st_mtime
        return out
