"""Version probe and checks: seed-style vmin/vmax/veq and requires_server."""

from __future__ import annotations

import pytest
import requests
from packaging.version import Version

from requests_tanium_session import (
    GetPlatformVersionWarning,
    HttpClient,
    SessionId,
    TaniumSessionAuth,
    VersionMismatchError,
)
from requests_tanium_session.testing import TaniumServer
from requests_tanium_session.versions import check_requirement, get_server_version


def test_server_version_is_read(client: HttpClient) -> None:
    assert get_server_version(client) == Version("7.3.314.3424")


@pytest.mark.parametrize(
    "req",
    [
        {"vmin": "7.3"},
        {"vmax": "7.3"},
        {"veq": "7.3"},
        {"vmin": "7.2.314", "vmax": "7.4"},
        {"veq": "7.3.314.3424"},
        {"vmin": "", "vmax": "", "veq": ""},
    ],
)
def test_requirements_that_pass(req: dict[str, str]) -> None:
    check_requirement(Version("7.3.314.3424"), req)


@pytest.mark.parametrize(
    "req", [{"vmin": "7.4"}, {"vmax": "7.2"}, {"veq": "7.2"}, {"vmax": "7.3.313"}, {"veq": "7"}]
)
def test_requirements_that_fail(req: dict[str, str]) -> None:
    if req == {"veq": "7"}:
        check_requirement(Version("7.3.314.3424"), req)  # one leading part: 7 == 7
        return
    with pytest.raises(VersionMismatchError) as info:
        check_requirement(Version("7.3.314.3424"), req)
    assert isinstance(info.value, ValueError)
    assert "7.3.314.3424" in str(info.value)


class Needs73(SessionId):
    @classmethod
    def get_version_req(cls) -> dict[str, str]:
        return {"vmin": "7.3", "vmax": "", "veq": ""}


class Needs8(SessionId):
    @classmethod
    def get_version_req(cls) -> dict[str, str]:
        return {"vmin": "8", "vmax": "", "veq": ""}


def test_ver_check_runs_at_construction(server: TaniumServer, client: HttpClient) -> None:
    Needs73(client, server.new_session())
    assert server.count("/config/console.json") == 1
    with pytest.raises(VersionMismatchError, match="vmin >= 8"):
        Needs8(client, server.new_session())
    Needs8(client, server.new_session(), ver_check=False)
    SessionId(client, server.new_session())
    assert server.count("/config/console.json") == 2


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"serverVersion": 7}', b'{"serverVersion": "junk.x"}', b"{}"]
)
def test_unreadable_version_warns_and_checks_nothing(
    server: TaniumServer, client: HttpClient, body: bytes
) -> None:
    server.inject("/config/console.json", status=200, body=body)
    with pytest.warns(GetPlatformVersionWarning, match="nothing was checked"):
        Needs8(client, server.new_session())


def test_requires_server_is_checked_once_lazily(
    server: TaniumServer, http: requests.Session
) -> None:
    auth = TaniumSessionAuth(server.url, server.new_session(), requires_server=">=7.3,<8")
    assert server.count("/config/console.json") == 0
    http.auth = auth
    for _ in range(3):
        assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert server.count("/config/console.json") == 1


def test_requires_server_mismatch_names_both(server: TaniumServer, http: requests.Session) -> None:
    http.auth = TaniumSessionAuth(server.url, server.new_session(), requires_server=">=8")
    for _ in range(2):
        with pytest.raises(VersionMismatchError) as info:
            http.get(server.url + "/api/v2/sensors")
        assert "7.3.314.3424" in str(info.value) and ">=8" in str(info.value)
    assert server.count("/api/v2/sensors") == 0
    assert server.count("/config/console.json") == 1


def test_requires_server_bad_specifier() -> None:
    with pytest.raises(ValueError, match="requires_server"):
        TaniumSessionAuth("https://h.example", "1-1-ab", requires_server="about seven")


def test_requires_server_unreadable_warns(server: TaniumServer, http: requests.Session) -> None:
    server.inject("/config/console.json", status=200, body=b"<html>")
    http.auth = TaniumSessionAuth(server.url, server.new_session(), requires_server=">=7")
    with pytest.warns(GetPlatformVersionWarning):
        assert http.get(server.url + "/api/v2/sensors").status_code == 200
    assert http.get(server.url + "/api/v2/sensors").status_code == 200
