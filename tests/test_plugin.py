"""The pytest plugin, as a user's test suite sees it (pytester, in a subprocess)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import requests
import pytest
from requests_tanium_session import LoginError


def test_my_report(tanium_server, tanium_auth):
    s = requests.Session()
    s.auth = tanium_auth
    assert s.get(tanium_server.url + "/api/v2/sensors").status_code == 200
    assert tanium_server.count("/auth") == 0
    tanium_server.revoke(tanium_auth.session_id.token)
    with pytest.raises(LoginError):
        s.get(tanium_server.url + "/api/v2/sensors")
    s.close()


def test_fresh_server_per_test(tanium_server):
    assert tanium_server.count("/auth") == 0 and tanium_server.session_count == 0


def test_tls_variant(tanium_server_tls):
    assert tanium_server_tls.url.startswith("https://")
    r = requests.get(tanium_server_tls.url + "/config/console.json", verify=tanium_server_tls.ca_bundle)
    assert r.json()["serverVersion"]
"""


def test_fixtures_work_in_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=3)


def test_plugin_is_registered_by_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*tanium_server*", "*tanium_auth*"])
