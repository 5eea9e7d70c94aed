"""``py.typed`` is shipped and a small user file type-checks under ``mypy --strict``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import requests_tanium_session

SAMPLE = """
from typing import Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry
from requests_tanium_session import (
    AuthServiceUnavailable, LoginError, SessionId, TaniumSessionAuth, HttpClient,
)


def fetch(url: str, session_id: str) -> list[dict[str, object]]:
    s = requests.Session()
    s.auth = TaniumSessionAuth(url, session_id, on_token_update=lambda t: None)
    s.mount("https://", HTTPAdapter(max_retries=Retry(total=3, status_forcelist=[502, 503, 504])))
    try:
        data: list[dict[str, object]] = s.get(url + "/api/v2/sensors").json()["data"]
    except (LoginError, AuthServiceUnavailable):
        return []
    return data


def check(url: str, session_id: str) -> Optional[int]:
    with HttpClient(url) as client:
        sid = SessionId(client, session_id)
        token: str = sid.validate()
        assert token
        return sid.uid
"""

BROKEN = """
from requests_tanium_session import TaniumSessionAuth

auth = TaniumSessionAuth("https://h.example", 12345)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    path = tmp_path / "user_code.py"
    path.write_text(source)
    # Point mypy at the package that is imported here, installed or editable alike.
    root = Path(requests_tanium_session.__file__).parent.parent
    env = dict(os.environ)
    if "site-packages" not in root.parts:  # mypy refuses site-packages on MYPYPATH
        env["MYPYPATH"] = str(root)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env,
    )  # fmt: skip


def test_py_typed_is_shipped() -> None:
    assert (Path(requests_tanium_session.__file__).parent / "py.typed").exists()


def test_user_code_type_checks(tmp_path: Path) -> None:
    proc = _mypy(tmp_path, SAMPLE)
    assert proc.returncode == 0, proc.stdout


def test_misuse_is_caught_by_the_type_checker(tmp_path: Path) -> None:
    proc = _mypy(tmp_path, BROKEN)
    assert proc.returncode == 1 and "arg-type" in proc.stdout


TYPO = """
from requests_tanium_session import TaniumSession, TaniumSessionAuth

auth = TaniumSessionAuth.from_credentials("https://h.example", "u", "p", revalidate_afer=60)
env = TaniumSessionAuth.from_env(login_timout=3)
session = TaniumSession("https://h.example", "1-2-ab", expires_afer=10)


def httpx_auth() -> None:
    from requests_tanium_session.httpx import TaniumAuth

    TaniumAuth.from_credentials("https://h.example", "u", "p", refresh_status_code=[401])
"""


def test_a_misspelt_factory_keyword_is_caught_by_the_type_checker(tmp_path: Path) -> None:
    proc = _mypy(tmp_path, TYPO)
    assert proc.returncode == 1
    for typo in ("revalidate_afer", "login_timout", "expires_afer", "refresh_status_code"):
        assert f'Unexpected keyword argument "{typo}"' in proc.stdout, proc.stdout
