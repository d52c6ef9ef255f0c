"""Golden files for the human table and the JSON of ``convaudit check`` (regenerate with
--regen-golden); the measurements are fixed by hand, so only the rendering is compared."""

from __future__ import annotations

import json

from check_samples import sample_result

from convaudit.report.formats import CheckFormat
from convaudit.report.formats import check_renderer as renderer


def test_check_table_golden(golden):
    text = renderer(CheckFormat.TABLE)(sample_result(), width=120, color=False)
    assert text == golden("check_table.txt", text)


def test_check_json_golden(golden):
    text = renderer(CheckFormat.JSON)(sample_result())
    expected = json.loads(golden("check.json", text))
    actual = json.loads(text)
    actual["tool"]["version"] = expected["tool"]["version"]  # the version moves on releases
    assert actual == expected
