"""Regenerate docs/html_report.png, the README's picture of the html report.

    .venv/bin/python docs/make_screenshot.py

Runs ``convaudit spectrum sample_models/resnet_tiny.onnx --format html`` and photographs the
page in headless Chromium (the test suite's driver, tests/report/browser.py), 1280 pixels wide,
the top 1500 pixels; the PNG is stored with a 128-colour palette to stay small.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "report"))

from browser import Browser, find_chromium  # noqa: E402


def main() -> None:
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    dest = REPO / "docs" / "html_report.png"
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        subprocess.run(
            [sys.executable, "-m", "convaudit", "spectrum", "sample_models/resnet_tiny.onnx",
             "--format", "html", "-o", str(page)],
            cwd=REPO,
            check=True,
        )  # fmt: skip
        shot = Path(tmp) / "full.png"
        with Browser(chromium) as browser:
            browser.open(page, height=1500)
            browser.screenshot(shot, height=1500)
            errors = browser.errors()
        if errors:
            raise SystemExit(f"the page logged errors: {errors}")
        from PIL import Image

        with Image.open(shot) as image:
            image.convert("RGB").quantize(128).save(dest, optimize=True)
    print(f"wrote {dest} ({dest.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
