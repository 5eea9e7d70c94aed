"""The pytest plugin, as a user's test suite sees it (pytester, in a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import requests
import pytest
from requests_tanium_session import LoginError


def test_my_report(tanium_server, tanium_auth):
    with requests.Session() as s:
        s.auth = tanium_auth
        assert s.get(tanium_server.url + "/api/v2/sensors").status_code == 200
        assert tanium_server.count("/auth") == 0
        tanium_server.revoke(tanium_auth.session_id.token)
        with pytest.raises(LoginError):
            s.get(tanium_server.url + "/api/v2/sensors")


def test_fresh_server_per_test(tanium_server):
    assert tanium_server.count("/auth") == 0 and tanium_server.session_count == 0


def test_tls_variant(tanium_server_tls):
    assert tanium_server_tls.url.startswith("https://")
    r = requests.get(tanium_server_tls.url + "/config/console.json", verify=tanium_server_tls.ca_bundle)
    assert r.json()["serverVersion"]


def test_readme_example(tanium_server, tanium_auth):
    with requests.Session() as s:
        s.auth = tanium_auth
        assert s.get(tanium_server.url + "/api/v2/sensors").status_code == 200
    assert tanium_server.count("/auth") == 0  # a fresh session needs no check
    tanium_server.clock.advance(301)  # idle expiry on the server's clock
    with pytest.raises(LoginError):
        tanium_auth.session_id.validate()
    assert tanium_server.count("/auth") == 1


def test_factory_binds_to_the_server(tanium_server, tanium_auth_factory):
    auth = tanium_auth_factory(revalidate_after=0, refresh=tanium_server.new_session)
    with requests.Session() as s:
        s.auth = auth
        tanium_server.restart()
        assert s.get(tanium_server.url + "/api/v2/sensors").status_code == 200
    assert tanium_server.auth_calls["validate"] == 1


def test_tanium_session_fixture(tanium_server, tanium_session):
    assert tanium_session.get("/api/v2/sensors").status_code == 200
    assert tanium_server.count("/api/v2/sensors") == 1


def test_tls_auth_fixture(tanium_server_tls, tanium_auth_tls):
    with requests.Session() as s:
        s.auth = tanium_auth_tls
        url = tanium_server_tls.url + "/api/v2/sensors"
        assert s.get(url, verify=tanium_server_tls.ca_bundle).status_code == 200
    assert tanium_auth_tls.session_id.validate()
"""


def test_fixtures_work_in_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=7)


def test_plugin_is_registered_by_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        ["*tanium_server*", "*tanium_auth*", "*tanium_auth_factory*", "*tanium_session*"]
    )
    result.stdout.fnmatch_lines(["*tanium_auth_tls*"])


def test_docs_plugin_example_runs(pytester: pytest.Pytester) -> None:
    page = (Path(__file__).parent.parent / "docs" / "plugin.md").read_text(encoding="utf-8")
    code = page.split("```python", 1)[1].split("```", 1)[0]
    assert "session_id.state" not in code  # public names only
    pytester.makepyfile(test_readme=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=code.count("\ndef test_"))


def test_the_tls_fixture_without_trustme_fails_with_the_install_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("import sys\nsys.modules['trustme'] = None  # not installed\n")
    pytester.makepyfile(test_tls="def test_tls(tanium_server_tls):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(['*needs trustme: pip install "requests-tanium-session[[]test]"*'])
    assert "During handling" not in result.stdout.str()
