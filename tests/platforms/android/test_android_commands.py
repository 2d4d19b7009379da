"""Only constant commands reach the phone; the canary token is checked before use."""

from __future__ import annotations

import pytest

from wipeagent.platforms.android import commands as cmd

TOKEN = "0123456789abcdef0123456789abcdef"


def test_canary_commands_for_a_valid_token() -> None:
    paths = cmd.canary_paths(TOKEN)
    assert paths == (f"/sdcard/Download/.wipeagent-{TOKEN}", f"/data/local/tmp/.wipeagent-{TOKEN}")
    assert cmd.write_file(paths[0], TOKEN) == f"echo {TOKEN} > {paths[0]}"
    assert cmd.exists(paths[1]) == f"test -e {paths[1]} && echo present || echo absent"
    assert cmd.put_canary_setting(TOKEN) == f"settings put global wipeagent_canary {TOKEN}"


@pytest.mark.parametrize("token", ["", "x", "0123456789ABCDEF0123456789ABCDEF",
                                   "0123456789abcdef0123456789abcde;", TOKEN + "0",
                                   "$(reboot)" + TOKEN[9:]])
def test_bad_tokens_refused(token: str) -> None:
    with pytest.raises(ValueError, match="canary token"):
        cmd.canary_paths(token)
    with pytest.raises(ValueError, match="canary token"):
        cmd.put_canary_setting(token)


@pytest.mark.parametrize("path", ["/sdcard/Download/x", "/data/local/tmp/.wipeagent-" + TOKEN
                                  + "; reboot", "/sdcard/Download/../.wipeagent-" + TOKEN])
def test_non_canary_paths_refused(path: str) -> None:
    for build in (cmd.read_file, cmd.exists):
        with pytest.raises(ValueError, match="not a canary path"):
            build(path)
    with pytest.raises(ValueError, match="not a canary path"):
        cmd.write_file(path, TOKEN)


def test_default_dir_listing_commands_are_constant() -> None:
    assert "Android" not in cmd.LIST_DEFAULT_DIR
    assert cmd.LIST_DEFAULT_DIR["DCIM"] == "ls -a /sdcard/DCIM/"
