"""/docs in a real browser: headless Chromium renders the OpenAPI document with Swagger UI."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.e2e.conftest import call

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_the_docs_page_shows_every_operation_of_the_document(served, tmp_path):
    _, base, _, _ = served
    status, _, document = call(base, "GET", "/openapi.json")
    assert status == 200
    rendered = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=15000", "--dump-dom", f"{base}/docs"],
        capture_output=True, text=True, timeout=90)
    dom = rendered.stdout
    assert "swagger-ui" in dom, rendered.stderr[-2000:]
    assert re.search(r"OAS\s*3\.1", dom)  # Swagger UI read the document as OpenAPI 3.1
    shown = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert shown == set(document["paths"])
    assert "errors-wrapper" not in dom  # the panel Swagger UI shows when the document does not parse
