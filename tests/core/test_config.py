from pathlib import Path

import pytest

from wipeagent.config import load_config, parse_config
from wipeagent.errors import ConfigError


def test_defaults_are_safe() -> None:
    config = parse_config("")
    assert config.policy.erase == "confirm"
    assert config.policy.refuse_with_accounts is True


def test_full_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'state_dir = "/tmp/x"\n[station]\nid = "bench-07"\nsite = "Shenzhen"\n'
        '[policy]\nerase = "auto"\ndestination = "reuse"\n'
        '[android]\nendpoints = ["127.0.0.1:5555"]\nreboot_timeout_s = 120\n'
    )
    config = load_config(path)
    assert config.station.id == "bench-07"
    assert config.android.endpoints == ("127.0.0.1:5555",)
    assert config.policy.destination == "reuse"


def test_bad_value_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[station]\nid = "ok"\n\n[android]\nreboot_timeout_s = -5\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:5:" in str(err.value)
    assert "android.reboot_timeout_s" in str(err.value)


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="polcy"):
        parse_config("[polcy]\nerase = 'auto'\n")


def test_toml_syntax_error_has_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_config("[station]\nid = \n", "x.toml")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Path("/nonexistent/agent.toml"))


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "scripts" / "agent.example.toml"
    config = load_config(example)
    assert config.policy.erase == "confirm"  # the safe default is what ships
    assert config.usb.enabled and config.ios.enabled
