"""`convaudit clip` end to end on an ONNX file written by torch.onnx.export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, run_cli
from clip_nets import INPUT_SHAPE, make_net

import convaudit.clipping
from convaudit.engine.results import NormResult


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clip_cli")
    fixed, dynamic = folder / "net.onnx", folder / "dynamic.onnx"
    x = torch.zeros(INPUT_SHAPE)
    torch.onnx.export(make_net(), x, fixed, dynamo=False, input_names=["x"])
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1))
    torch.onnx.export(
        conv,
        x,
        dynamic,
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
    )
    return {"fixed": fixed, "dynamic": dynamic}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_clip_writes_a_checked_copy(models: dict[str, Path], tmp_path: Path) -> None:
    src, out = models["fixed"], tmp_path / "out.onnx"
    digest = sha(src)
    result = run_cli("clip", str(src), "--bound", "1.0", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "/stem/Conv" in result.stdout and "clipped" in result.stdout
    assert "zero-padded operator" in result.stdout
    assert result.stderr.startswith(f"wrote {out}")
    assert out.exists() and sha(src) == digest
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


def test_json_report_and_per_layer_bounds(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    result = run_cli(
        "clip",
        str(models["fixed"]),
        "--bound",
        "1.0",
        "--bound-for",
        "down=0.5",
        "--bound-for",
        "Gemm=3",
        "-o",
        str(out),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["ok"] and doc["written"]
    bounds = {row["name"]: row["bound"] for row in doc["layers"]}
    assert (
        bounds["/down/Conv"] == 0.5 and bounds["/head/Gemm"] == 3.0 and bounds["/stem/Conv"] == 1.0
    )
    for row in doc["layers"]:
        assert row["rechecked"] <= row["bound"] and row["sigma_quantity"] == "upper-bound"


def test_config_file(models: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "clip.toml"
    config.write_text(
        '[clip]\nbound = 2.0\nmethod = "rescale"\nlayers = "stem|up"\n'
        '[clip.bound-for]\n"up" = 0.7\n'
    )
    result = run_cli(
        "clip", str(models["fixed"]), "--config", str(config), "--dry-run", "-f", "json"
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {r["name"]: r["bound"] for r in doc["layers"]} == {
        "/stem/Conv": 2.0,
        "/up/ConvTranspose": 0.7,
    }
    assert doc["method"] == "rescale" and not doc["written"]
    assert "dry run" in result.stderr and list(tmp_path.iterdir()) == [config]
    config.write_text("bund = 1\n")
    assert "unknown key" in one_error_line(
        run_cli("clip", str(models["fixed"]), "--config", str(config), "--dry-run")
    )


def test_never_overwrites_without_being_asked(models: dict[str, Path], tmp_path: Path) -> None:
    src = models["fixed"]
    out = tmp_path / "out.onnx"
    out.write_bytes(b"precious")
    assert "refusing to overwrite" in one_error_line(
        run_cli("clip", str(src), "--bound", "1", "-o", str(out))
    )
    assert out.read_bytes() == b"precious"
    assert run_cli("clip", str(src), "--bound", "1", "-o", str(out), "--force").exit_code == 0
    assert out.read_bytes() != b"precious"
    line = one_error_line(run_cli("clip", str(src), "--bound", "1", "-o", str(src), "--force"))
    assert "input" in line
    assert "no output" in one_error_line(run_cli("clip", str(src), "--bound", "1"))


def test_in_place(models: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    copy.write_bytes(models["fixed"].read_bytes())
    result = run_cli("clip", str(copy), "--bound", "1", "--in-place")
    assert result.exit_code == 0, result.stderr
    assert sha(copy) != sha(models["fixed"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    again = run_cli("clip", str(copy), "--bound", "1", "--in-place")
    assert again.exit_code == 0 and "unchanged" in again.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--bound", "-1"], "positive"),
        (["--bound-for", "stem"], "REGEX=VALUE"),
        (["--bound", "1", "--layers", "("], "regular expression"),
        (["--bound", "1", "--tol", "-1"], "--tol"),
        ([], "no bound"),
    ],
)
def test_bad_options_are_one_error_line(
    models: dict[str, Path], args: list[str], expected: str
) -> None:
    assert expected in one_error_line(run_cli("clip", str(models["fixed"]), *args, "--dry-run"))


def test_input_sizes(models: dict[str, Path], tmp_path: Path) -> None:
    src = models["dynamic"]
    assert "--input-shape" in run_cli("clip", str(src), "--bound", "1", "--dry-run").stderr
    bare = tmp_path / "bare.pt"
    torch.save(make_net().state_dict(), bare)
    result = run_cli(
        "clip", str(bare), "--bound", "1", "--layers", "stem", "-o", str(tmp_path / "o.pt")
    )
    assert result.exit_code == 0, result.stderr
    assert "certified upper bound for every input size" in result.stdout
    ok = run_cli(
        "clip",
        str(src),
        "--bound",
        "1",
        "--input-shape",
        "x=1,3,16,16",
        "-o",
        str(tmp_path / "o.onnx"),
    )
    assert ok.exit_code == 0, ok.stderr
    assert "input 16x16, circular grid 17x17" in ok.stdout


def test_failed_post_check_exits_1_and_writes_nothing(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_big = NormResult(1e9, 1e9, 1e9, False, "upper-bound", "zeros", None, "test")
    monkeypatch.setattr(convaudit.clipping, "layer_upper_bound", lambda layer, **kw: too_big)
    out = tmp_path / "out.onnx"
    result = run_cli("clip", str(models["fixed"]), "--bound", "1", "-o", str(out))
    assert result.exit_code == 1
    assert "above their bound" in result.stderr and "OVER BOUND" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_interrupt_during_write_leaves_no_file(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(ir, dest, updates):  # type: ignore[no-untyped-def]
        Path(dest).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(convaudit.clipping, "write_kernels", half_written)
    out = tmp_path / "out.onnx"
    result = run_cli("clip", str(models["fixed"]), "--bound", "1", "-o", str(out))
    assert result.exit_code == 130
    assert list(tmp_path.iterdir()) == []


def test_exact_sigma_is_reported(models: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli(
        "clip",
        str(models["fixed"]),
        "--bound",
        "1",
        "--exact",
        "--layers",
        "stem",
        "-o",
        str(tmp_path / "o.onnx"),
        "-f",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)["layers"]
    assert row["exact_after"] <= row["sigma_after"] <= 1.0
    assert np.isfinite(row["exact_after"])
