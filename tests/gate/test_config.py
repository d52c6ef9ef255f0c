"""[tool.convaudit] / convaudit.toml: discovery, precedence, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from convaudit.errors import ConfigError
from convaudit.gate.config import Settings, load_settings


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path):
    settings = load_settings({}, cwd=tmp_path, environ={})
    assert settings == Settings()
    assert settings.source is None


def test_pyproject_found_from_a_subfolder_and_paths_resolved_against_it(tmp_path):
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "x"\n[tool.convaudit]\nmodels = ["models/net.onnx"]\nmax-sigma = 1.5\n'
        'baseline = "ci/baseline.json"\nmax-lipschitz = 1e4\n',
    )
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    settings = load_settings({}, cwd=sub, environ={})
    assert settings.max_sigma == 1.5 and settings.max_lipschitz == 1e4
    assert settings.models == (str(tmp_path / "models" / "net.onnx"),)
    assert settings.baseline == str(tmp_path / "ci" / "baseline.json")
    assert settings.source == str(tmp_path / "pyproject.toml")


def test_convaudit_toml_wins_and_pyproject_without_table_is_skipped(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.convaudit]\nmax-sigma = 1.0\n")
    write(tmp_path / "convaudit.toml", "max-sigma = 2.0\n")
    assert load_settings({}, cwd=tmp_path, environ={}).max_sigma == 2.0
    inner = tmp_path / "inner"
    write(inner / "pyproject.toml", '[project]\nname = "inner"\n')  # no [tool.convaudit]
    assert load_settings({}, cwd=inner, environ={}).max_sigma == 2.0
    write(inner / "convaudit.toml", "[tool.convaudit]\nmax-sigma = 3.0\n")  # table form works too
    assert load_settings({}, cwd=inner, environ={}).max_sigma == 3.0


def test_precedence_cli_over_environment_over_file_over_defaults(tmp_path):
    write(
        tmp_path / "pyproject.toml",
        "[tool.convaudit]\nmax-sigma = 1.0\nmin-sigma = 0.1\nstrict = true\n",
    )
    env = {"CONVAUDIT_MAX_SIGMA": "2.0", "CONVAUDIT_MIN_SIGMA": "0.2", "CONVAUDIT_FORMAT": "sarif"}
    settings = load_settings({"max_sigma": 3.0, "min_sigma": None}, cwd=tmp_path, environ=env)
    assert settings.max_sigma == 3.0  # CLI
    assert settings.min_sigma == 0.2  # environment (CLI not given)
    assert settings.strict is True  # file
    assert settings.format == "sarif"
    assert settings.baseline_tolerance == 0.01  # default


def test_explicit_config_file(tmp_path):
    cfg = write(tmp_path / "elsewhere" / "gate.toml", "max-condition = 100\n")
    write(tmp_path / "pyproject.toml", "[tool.convaudit]\nmax-condition = 5\n")
    assert load_settings({}, config_file=cfg, cwd=tmp_path, environ={}).max_condition == 100.0
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, config_file=tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_sigma = 1.0\n", "unknown key 'max_sigma'"),
        ("max-sigmaa = 1.0\n", "unknown key 'max-sigmaa'"),
        ('max-sigma = "high"\n', "max-sigma must be a number"),
        ("max-sigma = -1\n", "non-negative"),
        ("strict = 1\n", "strict must be true or false"),
        ('format = "xml"\n', "format must be one of"),
        ("models = 3\n", "models must be a list of strings"),
        ('[[overrides]]\nlayers = "a*"\nmax-sigm = 2\n', "unknown key 'max-sigm' in overrides"),
        ('[[overrides]]\nlayers = "re:("\nmax-sigma = 2\n', "bad regular expression"),
        ("max-sigma = [\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, text, message):
    write(tmp_path / "convaudit.toml", text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        load_settings({}, cwd=tmp_path, environ={})
    assert info.value.exit_code == 2


def test_snake_case_key_hints_the_kebab_case_spelling(tmp_path):
    write(tmp_path / "convaudit.toml", "max_lipschitz = 10\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, cwd=tmp_path, environ={})
    assert "'max-lipschitz'" in (info.value.hint or "")


def test_bad_environment_value_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="CONVAUDIT_MAX_SIGMA"):
        load_settings({}, cwd=tmp_path, environ={"CONVAUDIT_MAX_SIGMA": "lots"})
    assert load_settings({}, cwd=tmp_path, environ={"CONVAUDIT_STRICT": "yes"}).strict is True
    env = {"CONVAUDIT_IGNORE": "CA003, CA001:stem.*"}
    assert load_settings({}, cwd=tmp_path, environ=env).ignore == ("CA003", "CA001:stem.*")


def test_overrides_by_glob_and_regex_last_match_wins(tmp_path):
    write(
        tmp_path / "convaudit.toml",
        "max-sigma = 1.5\nmin-sigma = 0.01\n"
        '[[overrides]]\nlayers = "head.*"\nmax-sigma = 4.0\n'
        '[[overrides]]\nlayers = "re:^head\\\\.fc\\\\d$"\nmax-sigma = 8.0\nmax-condition = 50\n',
    )
    settings = load_settings({}, cwd=tmp_path, environ={})
    assert settings.limits_for("stem.conv") == {"max-sigma": 1.5, "min-sigma": 0.01}
    assert settings.limits_for("head.conv")["max-sigma"] == 4.0
    assert settings.limits_for("head.fc1") == {
        "max-sigma": 8.0,
        "min-sigma": 0.01,
        "max-condition": 50.0,
    }
