"""Every Python code block of the README and ``docs/`` runs, page by page, as written.

A page's blocks run in order as one script in a fresh interpreter, as a user pasting
them would, in the environment a user builds: ``tanium-session serve`` is started as a
command and its ``export`` lines are the variables the script sees (no text of a block
is changed). A page about Redis also gets ``REDIS_URL`` for a real ``redis-server``. A
script that leaves a socket to the garbage collector fails (``ResourceWarning``). A
block that is a pytest file (it defines ``test_`` functions) is run by pytester in
``test_plugin.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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


EXPORT = re.compile(r"^\s+export (\w+)=(\S+)")


@pytest.fixture
def exported() -> Iterator[dict[str, str]]:
    """``tanium-session serve`` running, and the variables its export lines set."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "requests_tanium_session", "serve", "--quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    env: dict[str, str] = {}
    try:
        for line in proc.stdout:
            found = EXPORT.match(line)
            if found:
                env[found[1]] = found[2]
            if line.startswith("press Ctrl-C"):
                break
        yield env
    finally:
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


def test_serve_exports_every_variable_the_examples_read(exported: dict[str, str]) -> None:
    read = set()
    for page in PAGES:
        for block in blocks(page):
            read |= set(re.findall(r"os\.environ(?:\.get\(|\[)\"(TANIUM_\w+)\"", block))
    assert read == {"TANIUM_URL", "TANIUM_SESSION", "TANIUM_USER", "TANIUM_PASSWORD"}
    assert read <= exported.keys()


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.name)
def test_code_blocks_run(page: Path, exported: dict[str, str], tmp_path: Path) -> None:
    script = "\n\n".join(b for b in blocks(page) if not is_pytest_file(b))
    assert 'tanium.example.com"' not in script, "an example address where TANIUM_URL belongs"
    run_dir = tmp_path / "run"  # where the examples keep private files
    run_dir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANIUM_")}
    env.update(exported, XDG_RUNTIME_DIR=str(run_dir))
    redis_server = None
    if "REDIS_URL" in script:
        directory = tmp_path / "redis"
        directory.mkdir(mode=0o700)
        redis_server = RedisServer(directory)
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_server.port}/0"
    path = tmp_path / f"{page.stem}_blocks.py"
    path.write_text(script, encoding="utf-8")
    try:
        proc = subprocess.run(
            [sys.executable, "-W", "always::ResourceWarning", str(path)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
    finally:
        if redis_server is not None:
            redis_server.stop()
    assert proc.returncode == 0, f"{page.name}:\n{proc.stderr[-2000:]}"
    assert "ResourceWarning" not in proc.stderr, f"{page.name} leaves open:\n{proc.stderr}"


def test_pytest_blocks_are_run_by_the_plugin_test() -> None:
    """The only pytest-file block is the plugin page's, which test_plugin.py runs."""
    found = [p.name for p in PAGES for b in blocks(p) if is_pytest_file(b)]
    assert found == ["plugin.md"]


def test_the_api_reference_lists_every_public_name() -> None:
    import requests_tanium_session as top
    import requests_tanium_session.aiohttp as aio
    import requests_tanium_session.httpx as hx
    import requests_tanium_session.testing as testing

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^::: ([\w.]+)$", text, re.M))
    public = {f"{m.__name__}.{name}" for m in (top, hx, aio, testing) for name in m.__all__}
    public.discard("requests_tanium_session.__version__")
    assert public - listed == set()
