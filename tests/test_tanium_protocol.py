"""The Tanium protocol as its maintained clients speak it (issue 28), through every
front-end where the behaviour is shared: a REST credential login, base URLs, Tanium
Cloud, a sign-in redirect, a command that makes a new session; and a local server whose
answers the clients' own parsers read.
"""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests

from requests_tanium_session import LoginError
from requests_tanium_session.testing import TaniumServer

from .conftest import Servers
from .harness import (
    PASSWORD,
    SENSORS,
    SOAP,
    USER,
    Front,
    exposed,
    fetch,
    secrets_in,
    statuses,
)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
TANIUM_NS = "urn:TaniumSOAP"


def soap_request(command: str, objects: str = "<sensor/>") -> bytes:
    """A SOAP request as pytan 2 builds it (``REQUEST_BODY_BASE``)."""
    return (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<SOAP-ENV:Body><typens:tanium_soap_request xmlns:typens="{TANIUM_NS}">'
        f"<command>{command}</command><object_list>{objects}</object_list>"
        "</typens:tanium_soap_request></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


# -- a REST credential login -----------------------------------------------------------


def test_rest_login_logs_in_and_renews_through_the_rest_route(
    server: TaniumServer, front: Front
) -> None:
    auth = front.from_credentials(server.url, USER, PASSWORD, login="rest")
    assert auth.logged_in and server.count("/api/v2/session/login") == 1
    server.revoke_user()
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.count("/api/v2/session/login") == 2  # the renewal took the same route
    assert server.auth_calls["login"] == 0  # and never /auth
    body = json.loads(next(server.received("/api/v2/session/login")).body)
    assert set(body) == {"username", "password", "domain"} and body["username"] == USER


def test_a_refused_rest_login_shows_no_password_and_tries_no_other_route(
    server: TaniumServer, front: Front
) -> None:
    with pytest.raises(LoginError, match="credentials were refused") as info:
        front.from_credentials(server.url, USER, PASSWORD + "-wrong", login="rest")
    assert secrets_in(exposed(info.value), PASSWORD + "-wrong", PASSWORD) == []
    assert server.count("/auth") == 0 and server.count("/api/v2/session/login") == 1


def test_an_auth_login_refused_by_an_auth_route_that_is_missing_names_login_rest(
    server: TaniumServer, front: Front
) -> None:
    server.inject("/auth", status=404)
    with pytest.raises(LoginError, match='login="rest"'):
        front.from_credentials(server.url, USER, PASSWORD)
    assert server.count("/api/v2/session/login") == 0  # named, never tried


def test_an_unknown_login_route_is_refused(server: TaniumServer, front: Front) -> None:
    with pytest.raises(ValueError, match="login"):
        front.from_credentials(server.url, USER, PASSWORD, login="soap")
    assert list(server.received()) == []


def test_from_env_logs_in_with_credentials_at_the_first_request(
    server: TaniumServer, front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANIUM_URL", server.url)
    monkeypatch.setenv("TANIUM_USER", USER)
    monkeypatch.setenv("TANIUM_PASSWORD", PASSWORD)
    auth = front.auth_class.from_env(login="rest")
    assert not auth.logged_in and list(server.received()) == []  # no I/O to build it
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.count("/api/v2/session/login") == 1


def test_from_env_names_what_is_missing(
    server: TaniumServer, front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANIUM_URL", server.url)
    monkeypatch.setenv("TANIUM_USER", USER)
    with pytest.raises(ValueError, match=r"TANIUM_SESSION.*TANIUM_PASSWORD"):
        front.auth_class.from_env()


# -- base URLs -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/api/v2", "/api/v2/", "/API/V2"])
def test_a_base_url_ending_in_api_v2_is_refused_with_the_fix(
    server: TaniumServer, front: Front, suffix: str
) -> None:
    with pytest.raises(ValueError, match="/api/v2") as info:
        front.auth(server.url + suffix, server.new_session())
    assert f"use {server.url} " in str(info.value)


def test_a_path_prefix_is_legal(servers: Servers, front: Front) -> None:
    server = servers.start(prefix="/tanium")
    assert server.url.endswith("/tanium")
    auth = front.auth(server.url, server.new_session(), revalidate_after=0)
    assert statuses(front.get(auth, server.url + SENSORS)) == [200]
    assert server.auth_calls["validate"] == 1  # POST /tanium/auth
    assert requests.get(server.url.replace("/tanium", "") + SENSORS).status_code == 404


# -- a sign-in page on another origin ------------------------------------------------------


def test_a_redirect_to_sign_in_for_a_dead_session_is_recovered(
    servers: Servers, front: Front
) -> None:
    home, idp = servers.start(), servers.start()
    session = home.new_session()
    auth = front.auth(home.url, session, refresh=home.new_session)
    home.sign_in_redirect = idp.url + "/sso/login"
    home.revoke(session)
    got = fetch(front, auth, home.url + SENSORS)
    assert got.status == 200 and b"Computer Name" in got.body
    assert home.auth_calls["validate"] == 1 and home.count(SENSORS, 200) == 1
    assert all("session" not in r.headers for r in idp.received())


def test_a_redirect_to_sign_in_without_refresh_names_its_host(
    servers: Servers, front: Front
) -> None:
    home, idp = servers.start(), servers.start()
    session = home.new_session()
    auth = front.auth(home.url, session)
    home.sign_in_redirect = idp.url + "/sso/login"
    home.revoke(session)
    with pytest.raises(LoginError, match=r"302 to 127\.0\.0\.1:\d+") as info:
        front.one(auth, home.url + SENSORS, follow=False)
    assert secrets_in(exposed(info.value), session) == []


def test_a_redirect_away_while_the_session_lives_is_the_callers(
    servers: Servers, front: Front
) -> None:
    home, other = servers.start(), servers.start()
    auth = front.auth(home.url, home.new_session())
    home.redirect(SENSORS, other.url + "/api/v2/denied")
    response = front.one(auth, home.url + SENSORS, follow=False)
    assert response.status_code == 302  # as it came: the caller chose not to follow
    assert home.auth_calls["validate"] == 1 and list(other.received()) == []


# -- a SOAP command that makes a new session ----------------------------------------------


def test_a_new_session_from_new_session_as_exclusive_user_group_is_not_adopted(
    server: TaniumServer, front: Front
) -> None:
    seen: list[str] = []
    session = server.new_session()
    auth = front.auth(server.url, session, on_token_update=seen.append)
    body = soap_request("NewSessionAsExclusiveUserGroup", "<user_group><id>3</id></user_group>")
    got = fetch(front, auth, server.url + SOAP, method="POST", data=body)
    new = re.search(rb"<session>([^<]+)</session>", got.body)
    assert got.status == 200 and new is not None and new.group(1).decode() != session
    assert server.is_valid(new.group(1).decode())  # the caller's data
    assert auth.token == session and seen == []


def test_a_rotation_in_an_ordinary_soap_answer_is_still_adopted(
    server: TaniumServer, front: Front
) -> None:
    seen: list[str] = []
    auth = front.auth(server.url, server.new_session(), on_token_update=seen.append)
    server.rotate_on_soap = True
    got = fetch(front, auth, server.url + SOAP, method="POST", data=soap_request("GetObject"))
    assert got.status == 200 and len(seen) == 1 and auth.token == seen[0]


# -- a local server that answers like a real one ------------------------------------------


def _soap(server: TaniumServer, command: str, objects: str = "<sensor/>") -> bytes:
    response = requests.post(
        server.url + SOAP,
        data=soap_request(command, objects),
        headers={"session": server.new_session(), "Content-Type": "text/xml; charset=utf-8"},
        timeout=10,
    )
    assert response.status_code == 200
    return response.content


def test_soap_answers_parse_namespace_aware(server: TaniumServer) -> None:
    root = ET.fromstring(_soap(server, "GetObject"))
    answer = root.find(f"{{{SOAP_ENV}}}Body/{{{TANIUM_NS}}}return")
    assert root.tag == f"{{{SOAP_ENV}}}Envelope" and answer is not None
    assert answer.findtext("command") == "GetObject"
    assert answer.findtext("server_version") == server.version
    names = [s.findtext("name") for s in answer.findall("result_object/sensors/sensor")]
    assert names == ["Computer Name", "IP Address"]


def test_soap_answers_carry_the_requests_own_command_as_pytan_2_checks(
    server: TaniumServer,
) -> None:
    for command, objects in [
        ("GetObject", "<user/>"),
        ("AddObject", "<sensor><name>x</name></sensor>"),
    ]:
        body = _soap(server, command, objects).decode()
        # pytan 2 compares <command> of request and answer with COMMAND_RE, and reads
        # <session> and <server_version> with regexes of its own
        assert re.search(r"<command>(.*?)</command>", body, re.S).group(1) == command  # type: ignore[union-attr]
        assert re.search(r"<server_version>(.*?)</server_version>", body, re.S) is not None
    users = ET.fromstring(_soap(server, "GetObject", "<user/>"))
    assert users.findtext(f".//{{{TANIUM_NS}}}return/result_object/users/user/name") == USER


def test_soap_answers_keep_the_prefixes_pytan3_paths_name(server: TaniumServer) -> None:
    text = _soap(server, "GetObject", "<system_status/>").decode()
    # pytan3 reads "soap:Envelope/soap:Body/t:return/command" with xmltodict
    assert "<soap:Envelope" in text and "<soap:Body>" in text and "<t:return" in text
    status = ET.fromstring(text).find(f".//{{{TANIUM_NS}}}return/result_object/system_status")
    assert status is not None and status.find("client_status/computer_id") is not None


def test_rest_lists_end_in_collection_info_as_xsoar_expects(server: TaniumServer) -> None:
    headers = {"session": server.new_session()}
    for path in (SENSORS, SENSORS + "/"):
        data = requests.get(server.url + path, headers=headers, timeout=10).json()["data"]
        assert [s["name"] for s in data[:-1]] == ["Computer Name", "IP Address"]  # XSOAR's [:-1]
        assert set(data[-1]) == {"collectionInfo"}
    status = requests.get(server.url + "/api/v2/system_status", headers=headers, timeout=10)
    assert all("computer_id" in item for item in status.json()["data"][:-1])


def test_get_auth_logs_in_validates_and_logs_out_as_pytan_2_does(server: TaniumServer) -> None:
    b64 = {
        k: base64.b64encode(v.encode()).decode()
        for k, v in (("username", USER), ("password", PASSWORD))
    }
    session = requests.get(server.url + "/auth", headers=b64, timeout=10).text
    assert server.is_valid(session)
    assert (
        requests.get(server.url + "/auth", headers={"session": session}, timeout=10).text == session
    )
    requests.get(server.url + "/auth", headers={"session": session, "logout": "0"}, timeout=10)
    assert not server.is_valid(session)


def _flatten(structure: Any) -> Any:
    """pytan 2's ``_flatten_server_info``: lists of dicts become one dict."""
    if isinstance(structure, dict):
        return {k: _flatten(v) for k, v in structure.items()}
    if isinstance(structure, list) and all(isinstance(x, dict) for x in structure):
        flat: dict[str, Any] = {}
        for item in structure:
            flat.update(_flatten(item))
        return flat
    return structure


def test_info_json_answers_as_pytan_reads_it(server: TaniumServer) -> None:
    url = server.url + "/info.json"
    assert requests.get(url, timeout=10).status_code == 403  # a session is needed
    info = requests.get(url, headers={"session": server.new_session()}, timeout=10).json()
    assert _flatten(info["Diagnostics"])["Settings"]["Version"] == server.version


def test_rest_validate_answers_bare_when_told(server: TaniumServer) -> None:
    session = server.new_session()
    url = server.url + "/api/v2/session/validate"
    assert requests.post(url, json={"session": session}, timeout=10).json() == {
        "data": {"session": session}
    }
    server.validate_bare = True  # as a recorded Tanium Cloud server answers
    assert requests.post(url, json={"session": session}, timeout=10).json() == {"session": session}
