"""Checkov's security checks on the plain CloudFormation `sam deploy` submits: every finding
is either fixed or accepted in tests/infra/checkov-skips.txt with its reason."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devkit.template import REPO_ROOT, translate

pytestmark = pytest.mark.infra

SKIPS = REPO_ROOT / "tests" / "infra" / "checkov-skips.txt"


def accepted() -> dict[str, str]:
    """``{check id: reason}`` of the skip list."""
    found = {}
    for line in SKIPS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"(CKV2?_[A-Z]+_\d+)\s+(\S.{30,})", line)
            assert match, f"{SKIPS.name}: want `CKV_… reason`, got {line!r}"
            assert match[1] not in found, f"{SKIPS.name}: {match[1]} twice"
            found[match[1]] = match[2]
    return found


def test_checkov_finds_nothing_without_a_written_reason(
    template: dict[str, Any], tmp_path: Path
) -> None:
    checkov = shutil.which("checkov", path=str(Path(sys.executable).parent))
    assert checkov, "checkov comes with the dev extra: scripts/setup dev"
    translated = tmp_path / "template.json"
    translated.write_text(json.dumps(translate(template)))
    completed = subprocess.run(
        [checkov, "--file", str(translated), "--framework", "cloudformation", "--quiet",
         "--compact", "--output", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(completed.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] > 40
    failed: dict[str, set[str]] = {}
    for finding in report["results"]["failed_checks"]:
        failed.setdefault(finding["check_id"], set()).add(finding["resource"])
    unexplained = {c: sorted(r) for c, r in failed.items() if c not in accepted()}
    assert unexplained == {}, f"fix these or give a reason in {SKIPS.name}"
    stale = set(accepted()) - set(failed)
    assert stale == set(), f"{SKIPS.name} accepts checks that no longer fail: remove them"
