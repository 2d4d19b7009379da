"""The [uplink] configuration section and building the agent's Uplink from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from uplink_fixtures import Bench

from wipeagent.config import parse_config
from wipeagent.errors import ConfigError
from wipeagent.uplink.client import uplink_from_config


def test_url_must_be_https() -> None:
    with pytest.raises(ConfigError, match=r"<config>:2: uplink.url"):
        parse_config('[uplink]\nurl = "http://platform.example/v1/certificates"\n')
    config = parse_config('[uplink]\nurl = "https://platform.example/v1/certificates"\n'
                          "backoff_max_s = 600\n")
    assert config.uplink.backoff_max_s == 600


def test_bad_backoff_is_refused() -> None:
    with pytest.raises(ConfigError, match="backoff_initial_s"):
        parse_config("[uplink]\nbackoff_initial_s = 0\n")


async def test_no_url_no_uplink(bench: Bench, tmp_path: Path) -> None:
    config = parse_config(f'state_dir = "{tmp_path}"\n')
    assert uplink_from_config(config, bench.store, bench.clock, development=True) is None


async def test_production_needs_a_client_certificate(bench: Bench, tmp_path: Path) -> None:
    config = parse_config(f'state_dir = "{tmp_path}"\n[uplink]\n'
                          'url = "https://platform.example/v1/certificates"\n')
    with pytest.raises(ConfigError, match="client_cert"):
        uplink_from_config(config, bench.store, bench.clock, development=False)


async def test_development_makes_a_client_certificate(bench: Bench) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    config = parse_config(f'state_dir = "{bench.root}"\n[station]\nid = "bench-07"\n[uplink]\n'
                          'url = "https://platform.example/v1/certificates"\n')
    uplink = uplink_from_config(config, bench.store, bench.clock, development=True)
    assert uplink is not None and uplink.settings.url.endswith("/v1/certificates")
    pem = (bench.root / "dev-pki" / "uplink" / "uplink.pem").read_bytes()
    leaf = x509.load_pem_x509_certificates(pem)[0]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key_mode = (bench.root / "dev-pki" / "uplink" / "uplink.key").stat().st_mode & 0o777
    assert key_mode == 0o600
