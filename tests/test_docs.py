"""Every Python code block of the README and ``docs/`` runs, page by page, against the
local server (so the next drift fails CI).

A page's blocks run in order as one script in a fresh interpreter, as a user pasting
them would. The example addresses are mapped to the local servers of the test:
``https://tanium.example.com`` to the local Tanium server, the example Redis URLs to a
real ``redis-server``; ``TANIUM_URL``, ``TANIUM_SESSION``, ``TANIUM_USER`` and
``TANIUM_PASSWORD`` are set as ``tanium-session serve`` tells users to. A block that is a
pytest file (it defines ``test_`` functions) is run by pytester in ``test_plugin.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from requests_tanium_session.testing import DEFAULT_USER, TaniumServer

from .conftest import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def is_pytest_file(code: str) -> bool:
    return re.search(r"^def test_", code, re.M) is not None


def test_every_page_is_found() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "requests.md", "httpx.md", "aiohttp.md", "stores.md", "security.md",
            "protocol.md", "plugin.md", "how-it-works.md", "performance.md"} <= names  # fmt: skip


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


RUNNABLE = [p for p in PAGES if any(not is_pytest_file(b) for b in blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_code_blocks_run(page: Path, server: TaniumServer, tmp_path: Path) -> None:
    code = [b for b in blocks(page) if not is_pytest_file(b)]
    script = "\n\n".join(code)
    script = script.replace("https://tanium.example.com", server.url)
    if "redis" in script:
        directory = tmp_path / "redis"
        directory.mkdir(mode=0o700)
        redis_server = RedisServer(directory)
        local = f"redis://127.0.0.1:{redis_server.port}/0"
        script = re.sub(r"rediss://[^\"']*", local, script)
    else:
        redis_server = None
    run_dir = tmp_path / "run"  # where the examples keep private files
    run_dir.mkdir(mode=0o700)
    path = tmp_path / f"{page.stem}_blocks.py"
    path.write_text(script, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANIUM_")}
    env.update(
        TANIUM_URL=server.url,
        TANIUM_SESSION=server.new_session(),
        TANIUM_USER=DEFAULT_USER[0],
        TANIUM_PASSWORD=DEFAULT_USER[1],
        NO_PROXY="127.0.0.1,localhost",
        XDG_RUNTIME_DIR=str(run_dir),
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(path)], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=120,
        )  # fmt: skip
    finally:
        if redis_server is not None:
            redis_server.stop()
    assert proc.returncode == 0, f"{page.name}:\n{proc.stderr[-2000:]}"


def test_pytest_blocks_are_run_by_the_plugin_test() -> None:
    """The only pytest-file block is the plugin page's, which test_plugin.py runs."""
    found = [p.name for p in PAGES for b in blocks(p) if is_pytest_file(b)]
    assert found == ["plugin.md"]
