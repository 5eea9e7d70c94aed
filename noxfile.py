"""The test matrix: every Python the package claims, with the newest packages and with
the oldest ones ``pyproject.toml`` allows.

    python -m pip install nox uv
    nox                  # every session below
    nox -s floors        # the declared floors alone (what .ci/run runs)
    nox -s tests-3.13    # one Python
    nox -s docs          # the documentation site, warnings as errors

Interpreters are found on PATH as ``python3.X``; on a machine with pyenv every
installed version's ``bin`` is put on it for the run. uv builds the environments and
never downloads an interpreter.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "floors", "niquests", "docs"]
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
# pyenv's builds (as on these machines): their bin directories on PATH, so python3.X is
# the interpreter itself, whatever version the pyenv shims would pick.
_PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
_BINS = [str(p / "bin") for p in sorted(_PYENV.glob("3.*")) if (p / "bin").is_dir()]
os.environ["PATH"] = os.pathsep.join([*_BINS, os.environ.get("PATH", "")])


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The suite with the newest packages."""
    session.install(".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHONS[0])
def floors(session: nox.Session) -> None:
    """The suite at the lowest versions every requirement allows (urllib3 1.26.0,
    requests 2.28.0, httpx 0.26, redis 5, aiohttp 3.12, pytest 7) on the lowest Python."""
    session.install("--resolution", "lowest-direct", ".[test]")
    session.run("uv", "pip", "freeze", "--python", session.bin + "/python", external=True)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def niquests(session: nox.Session) -> None:
    """The suite beside niquests, which replaces urllib3 with urllib3-future."""
    session.install(".[test]", "niquests")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site with its API reference; any warning fails."""
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(session.create_tmp()))
