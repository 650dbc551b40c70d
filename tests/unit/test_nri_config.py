"""The nri section of the configuration: defaults and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri import config as configmod


def test_defaults_follow_containerd_and_cri_o() -> None:
    nri = configmod.Config().nri
    assert nri.enable and nri.allow_external_connections
    assert nri.socket_path == "/var/run/nri/nri.sock"
    assert nri.plugin_dirs == ["/opt/nri/plugins"]
    assert nri.plugin_config_dir == "/etc/nri/conf.d"
    assert (nri.plugin_registration_timeout, nri.plugin_request_timeout) == (5.0, 2.0)
    assert nri.on_timeout == "proceed" and nri.socket_mode == "0600"


@pytest.mark.parametrize(("text", "words"), [
    ("nri: {socket_mode: '0800'}", "must be octal permission bits"),
    ("nri: {socket_mode: '17777'}", "must be octal permission bits"),
    ("nri: {on_timeout: wait}", "must be one of proceed, fail"),
    ("nri: {plugin_request_timeout: 0}", "must be greater than 0"),
    ("nri: {plugin_dirs: /opt}", "must be a list"),
    ("nri: {sockets: /x}", "unknown key 'nri.sockets'"),
])
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    main = tmp_path / "peapod.yaml"
    main.write_text(text)
    with pytest.raises(configmod.ConfigError) as info:
        configmod.load(main, None)
    assert words in str(info.value) and str(main) in str(info.value)


def test_mode_and_choices_load(tmp_path: Path) -> None:
    main = tmp_path / "peapod.yaml"
    main.write_text("nri: {socket_mode: '0660', on_timeout: fail, enable: false}")
    nri = configmod.load(main, None).nri
    assert (nri.socket_mode, nri.on_timeout, nri.enable) == ("0660", "fail", False)
