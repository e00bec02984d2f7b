"""The image workflow's vulnerability gate: Artifact Analysis' findings against the allow-list.

    python3 .github/scripts/scan_gate.py vulnerabilities.json .github/image-allowlist.toml

`vulnerabilities.json` is `gcloud artifacts docker images list-vulnerabilities SCAN
--format=json`: Container Analysis occurrences, each with the vulnerability's note
(`projects/goog-vulnz/notes/<CVE id>`), its effective severity (the distribution's rating
where it has one) and the affected packages. Every HIGH or CRITICAL finding fails the gate
unless the allow-list accepts its id (for the listed package, when it names one) until a date
not yet past. Exit codes: 0 passed, 1 findings not accepted (one line each), 2 bad input.
Standard library only: the workflow runs it before any virtualenv exists.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAILING = ("CRITICAL", "HIGH")


class BadInput(Exception):
    """An input the gate cannot judge by; the message is the one line to print."""


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    packages: tuple[str, ...]
    fix_available: bool

    def describe(self) -> str:
        fix = "fix available" if self.fix_available else "no fix yet"
        return f"{self.id} {self.severity} in {', '.join(self.packages) or '?'} ({fix})"


@dataclass(frozen=True)
class Acceptance:
    id: str
    reason: str
    expires: dt.date
    package: str | None = None

    def covers(self, finding: Finding) -> bool:
        return finding.id == self.id and (self.package is None or self.package in finding.packages)


def findings(path: Path) -> list[Finding]:
    try:
        occurrences = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: not the JSON list of occurrences gcloud writes ({exc})") from None
    if not isinstance(occurrences, list):
        raise BadInput(
            f"{path}: expected a JSON list of occurrences, got {type(occurrences).__name__}"
        )
    out = []
    for i, occurrence in enumerate(occurrences):
        vulnerability = occurrence.get("vulnerability") if isinstance(occurrence, dict) else None
        note = occurrence.get("noteName", "") if isinstance(occurrence, dict) else ""
        if not isinstance(vulnerability, dict) or not note:
            raise BadInput(f"{path}: occurrence [{i}] has no vulnerability or noteName")
        severity = vulnerability.get("effectiveSeverity") or vulnerability.get("severity", "")
        issues = vulnerability.get("packageIssue") or []
        out.append(
            Finding(
                id=note.rsplit("/", 1)[-1],
                severity=str(severity),
                packages=tuple(
                    sorted(
                        {str(p.get("affectedPackage", "?")) for p in issues if isinstance(p, dict)}
                    )
                ),
                fix_available=bool(vulnerability.get("fixAvailable")),
            )
        )
    return out


def allow_list(path: Path) -> list[Acceptance]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{path}: {exc}") from None
    entries: Any = data.get("accept")
    if not isinstance(entries, list):
        raise BadInput(f"{path}: accept must be a list of tables (id, reason, expires)")
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: accept[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"id", "package", "reason", "expires"}:
            raise BadInput(
                f"{where}: allowed keys are id, package, reason, expires (got {entry!r})"
            )
        if not isinstance(entry.get("id"), str) or not entry["id"]:
            raise BadInput(
                f"{where}.id: the vulnerability's id, e.g. CVE-2024-12345 (got {entry.get('id')!r})"
            )
        if not isinstance(entry.get("reason"), str) or len(entry["reason"].split()) < 3:
            raise BadInput(
                f"{where}.reason: say why it is accepted, in words (got {entry.get('reason')!r})"
            )
        expires = entry.get("expires")
        if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
            raise BadInput(f"{where}.expires: a date such as 2026-06-30 (got {expires!r})")
        package = entry.get("package")
        if package is not None and not isinstance(package, str):
            raise BadInput(f"{where}.package: a package name (got {package!r})")
        out.append(Acceptance(entry["id"], entry["reason"], expires, package))
    return out


def judge(
    found: list[Finding], accepted: list[Acceptance], today: dt.date
) -> tuple[list[str], list[str]]:
    """(failures, notes): one line per finding that fails the gate, and per acceptance that
    expired or matched nothing."""
    failures, notes = [], []
    for finding in found:
        if finding.severity not in FAILING:
            continue
        covering = [a for a in accepted if a.covers(finding)]
        valid = [a for a in covering if a.expires >= today]
        if valid:
            continue
        if covering:
            expired = max(a.expires for a in covering)
            failures.append(f"{finding.describe()}: accepted until {expired}, which has passed")
        else:
            failures.append(f"{finding.describe()}: not accepted")
    for acceptance in accepted:
        if not any(acceptance.covers(f) for f in found):
            notes.append(f"{acceptance.id}: accepted but not found any more (remove it)")
    return failures, notes


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: scan_gate.py VULNERABILITIES.json ALLOWLIST.toml", file=sys.stderr)
        return 2
    try:
        found = findings(Path(argv[0]))
        accepted = allow_list(Path(argv[1]))
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures, notes = judge(found, accepted, dt.datetime.now(dt.UTC).date())
    for line in notes:
        print(f"note: {line}")
    for line in failures:
        print(f"vulnerability: {line}")
    counted = sum(f.severity in FAILING for f in found)
    print(
        f"{len(found)} findings, {counted} HIGH or CRITICAL, {len(failures)} not accepted: "
        + ("the image fails the gate" if failures else "the image passes")
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
