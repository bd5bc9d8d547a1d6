"""The report's Content-Security-Policy allows its one inline script by hash, never 'unsafe-inline'."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from smoltrace import report
from tests.unit.test_report import Doc, render_report, write_run


def test_script_src_is_the_hash_of_the_inline_script(tmp_path: Path) -> None:
    html_text = render_report(write_run(tmp_path / "run"))
    doc = Doc(html_text)
    (meta,) = doc.find("meta", http_equiv="Content-Security-Policy")
    policy = dict(part.strip().split(" ", 1) for part in (meta["content"] or "").split(";"))
    assert "unsafe-inline" not in policy["script-src"]
    assert policy["default-src"] == "'none'"
    (script,) = doc.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'", "the hash matches the script as it is in the page"
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", policy["script-src"])
    assert meta["content"] == report.CSP
