"""The policy without any I/O: generators driven by hand, with answers a test makes up.

This is what sans-I/O buys: a rule that needs a server no test can start (a Tanium
Cloud host) is checked by answering the effect it yields.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import pytest

from requests_tanium_session import InvalidToken, LoginError, MemoryStore
from requests_tanium_session._effects import Credentials, Exchange, Lead, Refresh, StoreOp
from requests_tanium_session._flight import Flights
from requests_tanium_session._policy import Policy, login
from requests_tanium_session.protocol import AUTH_PATH, judge_soap, login_headers
from requests_tanium_session.state import TokenState
from requests_tanium_session.stores import Fleet, Record


class Reply:
    def __init__(self, status: int, body: Optional[bytes], url: str) -> None:
        self.status, self.body, self.url, self.response = status, body, url, None


def answer(flow: Any, reply: Reply) -> Any:
    """Run ``flow`` to its first effect, answer it with ``reply``; return its value."""
    effect = next(flow)
    assert isinstance(effect, Exchange) and effect.call.path == AUTH_PATH
    try:
        flow.send(reply)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the login asked for more than one call")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refused_login_at_tanium_cloud_says_to_use_an_api_token(status: int) -> None:
    headers = Credentials(login_headers("admin", "secret"))
    url = "https://acme-api.cloud.tanium.com/auth"
    with pytest.raises(LoginError, match="API token") as info:
        answer(login(headers, 5), Reply(status, b"", url))
    assert "on-prem" in str(info.value) and "secret" not in str(info.value)


def test_a_refused_login_on_prem_says_the_credentials_were_refused() -> None:
    flow = login(Credentials(login_headers("admin", "secret")), 5)
    with pytest.raises(LoginError, match="credentials were refused") as info:
        answer(flow, Reply(401, b"", "https://tanium.example.com/auth"))
    assert "API token" not in str(info.value)


def test_persistent_is_one_header() -> None:
    assert login_headers("a", "b", persistent=True)["persistent"] == "1"
    assert "persistent" not in login_headers("a", "b")
    with pytest.raises(TypeError, match="persistent"):
        login_headers("a", "b", persistent="yes")  # type: ignore[arg-type]


SENT = "1-2-" + "ab" * 64
NEW = "1-3-" + "cd" * 64


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"<command>GetObject</command><session>{SENT}</session>", (False, None)),
        (f"<command>GetObject</command><session>{NEW}</session>", (False, NEW)),
        ("<command>ERROR: 403 Forbidden</command><session></session>", (True, None)),
        ("<command>RBACInsufficientPrivilege</command>", (True, None)),
        ("<command>GetObject</command><session>x</session>", (False, None)),  # not a token
        ("<command>GetObject</command><session>token-abcdef0123456789</session>", (False, None)),
        ("no command at all", (False, None)),
    ],
)
def test_judge_soap(body: str, expected: tuple[bool, Optional[str]]) -> None:
    assert judge_soap(body.encode(), SENT) == expected


# -- recover and the stale check, driven by hand (issue 26) ---------------------------------
#
# A flow yields effects; the test answers each one itself, as httpx's own tests drive
# ``DigestAuth.auth_flow`` with ``flow.send(response)``. Leads are answered by real,
# uncontended flights (so the flow leads); every server call and store read is scripted.


URL = "https://tanium.example.com"
ORIGIN = "https://tanium.example.com:443"
FRESH = "1-4-" + "ef" * 64


def parts(token: str = SENT, store: bool = False) -> tuple[Policy, Flights]:
    lock = threading.Lock()
    state = TokenState(token, lock)
    policy = Policy(URL, state, login_timeout=5, logout_timeout=5, expires_after=295)
    if store:
        policy.fleet = Fleet(MemoryStore(), ORIGIN, policy.lease, 295)
    return policy, Flights(lock)


Step = tuple[type, Callable[[Any], Any]]


def drive(flow: Any, fl: Flights, *steps: Step) -> Any:
    """Run ``flow``, checking that it yields one effect of each ``steps`` type in
    order and answering it with ``answer(effect)`` (an exception is thrown in)."""
    sent: Any = None
    error: Optional[BaseException] = None
    for kind, answer in steps:
        effect = flow.throw(error) if error is not None else flow.send(sent)
        assert isinstance(effect, kind), f"expected {kind.__name__}, got {effect!r}"
        sent, error = None, None
        if isinstance(effect, Lead):  # nobody else: this flow leads
            sent = fl.lead(effect.kind, effect.done, effect.timeout, effect.after)
            continue
        try:
            sent = answer(effect)
        except Exception as exc:
            error = exc
    try:
        flow.throw(error) if error is not None else flow.send(sent)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the flow asked for more effects than scripted")


def lead(effect: Any) -> Any:
    return None  # answered by the flights in drive()


def auth_says(status: int, body: bytes = b"") -> Callable[[Any], Reply]:
    def answer(effect: Any) -> Reply:
        assert effect.call.path == AUTH_PATH and effect.call.headers["session"] == SENT
        return Reply(status, body, URL + AUTH_PATH)

    return answer


def test_recover_when_the_token_was_replaced_meanwhile_asks_nothing() -> None:
    policy, fl = parts()
    policy.state.adopt(NEW)
    flow = policy.recover(fl, SENT, "GET /x answered 401", None, None, fl.started)
    assert drive(flow, fl) == NEW  # no effect at all: resend with the new token


def test_recover_a_live_session_is_a_permission_answer() -> None:
    policy, fl = parts()
    flow = policy.recover(fl, SENT, "GET /x answered 403", None, None, fl.started)
    assert drive(flow, fl, (Lead, lead), (Exchange, auth_says(200, SENT.encode()))) is None
    assert (
        policy.state.current == SENT
        and policy.counters.snapshot(0, None, None).permission_answers == 1
    )


def test_recover_a_dead_session_with_refresh_adopts_the_new_one() -> None:
    policy, fl = parts()

    def refreshed(effect: Any) -> str:
        assert callable(effect.provider)
        return NEW

    flow = policy.recover(fl, SENT, "GET /x answered 401", None, lambda: NEW, fl.started)
    got = drive(
        flow, fl, (Lead, lead), (Exchange, auth_says(401)), (Lead, lead), (Refresh, refreshed)
    )
    assert got == NEW and policy.state.current == NEW and SENT in policy.state.dead
    assert policy.counters.snapshot(0, None, None).refreshes == 1


def test_recover_a_dead_session_without_refresh_raises_and_drops_it() -> None:
    policy, fl = parts()
    flow = policy.recover(fl, SENT, "GET /x answered 401", "the 401", None, fl.started)
    with pytest.raises(InvalidToken, match="cannot be refreshed") as info:
        drive(flow, fl, (Lead, lead), (Exchange, auth_says(401)))
    assert info.value.response == "the 401" and policy.state.current is None
    assert SENT not in str(info.value)


def test_recover_when_refresh_raises_is_a_login_error_chained_to_it() -> None:
    policy, fl = parts()

    def broken(effect: Any) -> str:
        raise ValueError("the vault is closed")

    flow = policy.recover(fl, SENT, "GET /x answered 401", None, lambda: NEW, fl.started)
    with pytest.raises(LoginError, match=r"refresh .* failed: ValueError") as info:
        drive(flow, fl, (Lead, lead), (Exchange, auth_says(401)), (Lead, lead), (Refresh, broken))
    assert isinstance(info.value.__cause__, ValueError) and policy.state.current is None


def record(token: str, age: float) -> Record:
    """A record read ``age`` seconds after it was published (by the store's clock)."""
    return Record(token, 1000.0 - age, 7, ORIGIN, age=age)


def test_stale_check_takes_a_fresh_record_without_asking_the_server() -> None:
    policy, fl = parts(store=True)
    policy.state.revalidate_after = 1
    policy.state.adopt(SENT, at=time.monotonic() - 2)  # stale here
    flow = policy.current(fl, None)
    got = drive(flow, fl, (Lead, lead), (StoreOp, lambda op: record(FRESH, 0.1)))
    assert got == FRESH and policy.state.current == FRESH


def test_stale_check_validates_a_newer_record_then_publishes_it() -> None:
    policy, fl = parts(store=True)
    policy.state.revalidate_after = 1
    published: list[tuple[Any, ...]] = []

    def store(op: StoreOp) -> Any:
        if op.op == "read":
            return record(FRESH, 2)  # stale, but newer than ours
        if op.op == "publish":
            published.append(op.args)
        return None

    def validate_fresh(effect: Any) -> Reply:
        assert effect.call.headers["session"] == FRESH  # the adopted token is checked
        return Reply(200, FRESH.encode(), URL + AUTH_PATH)

    policy.state.adopt(SENT, at=time.monotonic() - 2)
    policy.state.got_mono = time.monotonic() - 10  # the record came after we got ours
    flow = policy.current(fl, None)
    got = drive(
        flow, fl, (Lead, lead), (StoreOp, store), (StoreOp, store), (StoreOp, store),
        (Exchange, validate_fresh), (StoreOp, store), (StoreOp, store),
    )  # fmt: skip
    assert got == FRESH and published and published[0][0] == FRESH


def test_stale_check_locks_validates_publishes_and_unlocks() -> None:
    policy, fl = parts(store=True)
    policy.state.revalidate_after = 0
    ops: list[str] = []

    def store(op: StoreOp) -> Any:
        ops.append(op.op)
        return "a lock" if op.op == "lock" else None

    flow = policy.current(fl, None)
    got = drive(
        flow, fl, (Lead, lead), (StoreOp, store), (StoreOp, store), (StoreOp, store),
        (Exchange, auth_says(200, SENT.encode())), (StoreOp, store), (StoreOp, store),
    )  # fmt: skip
    assert got == SENT and ops == ["read", "lock", "read", "publish", "unlock"]


# -- Tanium Cloud, REST logins and what makes a new session (issue 28) -----------------------


@pytest.mark.parametrize(
    "host", ["tk-acme.titankube.com", "tk-acme-api.titankube.com", "acme-api.cloud.tanium.com"]
)
def test_a_refused_login_at_any_cloud_host_says_to_use_an_api_token(host: str) -> None:
    flow = login(Credentials(login_headers("admin", "secret")), 5)
    with pytest.raises(LoginError, match="API token") as info:
        answer(flow, Reply(401, b"", f"https://{host}/auth"))
    assert "from_credentials" not in str(info.value) and "secret" not in str(info.value)


def test_a_dead_api_token_at_a_cloud_host_names_the_api_token_route() -> None:
    token = "token-" + "ab" * 20
    lock = threading.Lock()
    policy = Policy("https://tk-acme.titankube.com", TokenState(token, lock),
                    login_timeout=5, logout_timeout=5, expires_after=295)  # fmt: skip
    fl = Flights(lock)

    def dead(effect: Any) -> Reply:
        assert effect.call.path == "/api/v2/session/current"
        return Reply(401, b"", "https://tk-acme.titankube.com/api/v2/session/current")

    flow = policy.recover(fl, token, "GET /x answered 401", None, None, fl.started)
    with pytest.raises(LoginError) as info:
        drive(flow, fl, (Lead, lead), (Exchange, dead))
    message = str(info.value)
    assert "new API token" in message and "from_credentials" not in message
    assert token not in message


def test_the_same_death_on_prem_names_from_credentials() -> None:
    policy, fl = parts()
    flow = policy.recover(fl, SENT, "GET /x answered 401", None, None, fl.started)
    with pytest.raises(LoginError, match=r"from_credentials\(\)"):
        drive(flow, fl, (Lead, lead), (Exchange, auth_says(401)))


def test_a_rest_login_reads_the_session_from_json() -> None:
    from requests_tanium_session.protocol import login_body

    credentials = Credentials({}, "rest", login_body("admin", "secret", "CORP"))
    flow = login(credentials, 5)
    effect = next(flow)
    assert effect.call.path == "/api/v2/session/login" and effect.call.json == {
        "username": "admin", "password": "secret", "domain": "CORP"}  # fmt: skip
    with pytest.raises(StopIteration) as done:
        flow.send(Reply(200, json_body({"data": {"session": NEW}}), URL + effect.call.path))
    assert done.value.value == NEW


def json_body(data: Any) -> bytes:
    import json

    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "command", ["NewSessionAsExclusiveUserGroup", "NewSession", "newsessionasexclusiveusergroup"]
)
def test_judge_soap_never_offers_a_session_a_command_made(command: str) -> None:
    body = f"<command>{command}</command><session>{NEW}</session>".encode()
    assert judge_soap(body, SENT) == (False, None)


def test_judge_soap_is_linear_in_the_answers_size() -> None:
    body = b"<command>" * 120_000  # 1 MiB of openings that never close
    began = time.perf_counter()
    assert judge_soap(body, SENT) == (False, None)
    assert time.perf_counter() - began < 0.5
