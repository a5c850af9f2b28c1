"""payhub.testing.server: routing, the request log, and each fault of the plan as a real HTTP client sees it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from payhub.testing.faults import FAULTS
from payhub.testing.server import FaultServer, Request, Response, ServerFault


@pytest.fixture
def server() -> Iterator[FaultServer]:
    accepted: list[str] = []

    def pay(request: Request) -> Response:
        accepted.append(request.json()["key"])
        return Response.json({"key": request.json()["key"], "delivery": request.delivery,
                              "fault": request.fault.label if request.fault else None}, 201)

    with FaultServer(hang_limit=5) as srv:
        srv.route("POST", "/payments", pay)
        srv.route("GET", r"/payments/(?P<key>[^/]+)",
                  lambda r: Response.json({"key": r.params["key"], "seen": accepted.count(r.params["key"])}))
        srv.accepted = accepted  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def client(server: FaultServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=2) as c:
        yield c


def test_binds_loopback_on_a_free_port_and_stops(server: FaultServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
    with FaultServer() as other:
        assert other.port != server.port
    other.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(other.url + "/", timeout=1)


def test_routes_by_method_and_path_and_logs_requests(server: FaultServer, client: httpx.Client) -> None:
    assert client.post("/payments", json={"key": "k1"}).json() == {"key": "k1", "delivery": 1, "fault": None}
    assert client.get("/payments/k1", params={"x": "1"}).json() == {"key": "k1", "seen": 1}
    assert client.get("/nowhere").status_code == 404
    assert client.delete("/payments").status_code == 405
    log = server.requests
    assert [(r.method, r.path, r.status, r.outcome) for r in log] == [
        ("POST", "/payments", 201, "answered"), ("GET", "/payments/k1", 200, "answered"),
        ("GET", "/nowhere", 404, "answered"), ("DELETE", "/payments", 405, "answered")]
    assert log[1].arg("x") == "1" and log[0].header("content-type") == "application/json"
    assert [r.path for r in server.calls("GET", "/payments/k1")] == ["/payments/k1"]


def test_a_handler_that_raises_answers_500(server: FaultServer, client: httpx.Client) -> None:
    server.route("GET", "/boom", lambda r: 1 / 0)  # type: ignore[arg-type,return-value]
    assert client.get("/boom").status_code == 500


def test_status_faults_answer_without_handling(server: FaultServer, client: httpx.Client) -> None:
    server.plan(ServerFault("status", 429, retry_after=2.5, path="/payments"), ServerFault.of("retryable"))
    first = client.post("/payments", json={"key": "k1"})
    assert (first.status_code, first.headers["Retry-After"]) == (429, "2.5")
    assert client.post("/payments", json={"key": "k1"}).status_code == 503
    assert client.post("/payments", json={"key": "k1"}).status_code == 201
    assert server.accepted == ["k1"]  # type: ignore[attr-defined]
    assert server.planned == []


def test_matching_skip_times_and_every(server: FaultServer, client: httpx.Client) -> None:
    server.plan(ServerFault("status", 500, method="GET", path="/payments/", skip=1, times=2))
    codes = [client.get("/payments/k").status_code for _ in range(4)]
    assert codes == [200, 500, 500, 200]
    server.plan(ServerFault("status", 502, method="POST", every=3))
    codes = [client.post("/payments", json={"key": f"k{n}"}).status_code for n in range(6)]
    assert codes == [201, 201, 502, 201, 201, 502]
    assert len(server.planned) == 1  # a periodic fault is never spent


def test_drop_closes_the_connection_unhandled(server: FaultServer, client: httpx.Client) -> None:
    server.plan("timeout_before_accept")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/payments", json={"key": "k1"})
    assert server.accepted == []  # type: ignore[attr-defined]
    assert server.requests[0].outcome == "dropped"


def test_lost_answer_handles_then_closes(server: FaultServer, client: httpx.Client) -> None:
    server.plan("timeout_after_accept", path="/payments")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/payments", json={"key": "k1"})
    assert server.accepted == ["k1"]  # type: ignore[attr-defined]
    assert (server.requests[0].status, server.requests[0].outcome) == (201, "lost_answer")
    assert client.get("/payments/k1").json()["seen"] == 1


def test_stall_answers_after_the_client_gave_up(server: FaultServer) -> None:
    server.plan(ServerFault("stall", seconds=0.3))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/payments", json={"key": "k1"}, timeout=0.1)
    assert server.accepted == ["k1"]  # type: ignore[attr-defined]


def test_delay(server: FaultServer, client: httpx.Client) -> None:
    server.plan(ServerFault("delay", seconds=0.2))
    assert client.post("/payments", json={"key": "k1"}, timeout=1).status_code == 201
    with pytest.raises(ValueError, match="seconds"):
        ServerFault("delay")


def test_hang_until_released(server: FaultServer) -> None:
    server.plan("hang")
    answers: list[int] = []
    thread = threading.Thread(target=lambda: answers.append(
        httpx.post(server.url + "/payments", json={"key": "k1"}, timeout=5).status_code))
    thread.start()
    assert server.wait_hanging(1, timeout=2)
    assert answers == [] and server.accepted == []  # type: ignore[attr-defined]
    server.release()
    thread.join(3)
    assert answers == [201]


def test_stop_releases_a_hang(server: FaultServer) -> None:
    server.plan("hang")
    thread = threading.Thread(target=lambda: httpx.post(server.url + "/payments", json={"key": "k"}, timeout=5))
    thread.start()
    assert server.wait_hanging(1, timeout=2)
    server.stop()
    thread.join(3)
    assert not thread.is_alive()


def test_after_stop_a_kept_open_connection_is_not_served(server: FaultServer, client: httpx.Client) -> None:
    assert client.post("/payments", json={"key": "k1"}).status_code == 201
    server.stop()
    with pytest.raises(httpx.TransportError):
        client.post("/payments", json={"key": "k2"}, timeout=1)
    assert server.accepted == ["k1"]  # type: ignore[attr-defined]


def test_an_open_ended_stall_starting_after_stop_does_not_wait(server: FaultServer) -> None:
    entered, gate = threading.Event(), threading.Event()

    def slow(request: Request) -> Response:
        entered.set()
        gate.wait(5)
        return Response.json({}, 201)

    server.route("POST", "/slow", slow)
    server.plan(ServerFault("stall", path="/slow"))
    answers: list[int] = []
    thread = threading.Thread(target=lambda: answers.append(
        httpx.post(server.url + "/slow", json={}, timeout=5).status_code), daemon=True)
    thread.start()
    assert entered.wait(2)
    threading.Timer(0.2, gate.set).start()  # the handler returns while stop() waits for it; the stall starts after
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2  # the stall did not wait (hang_limit is 5 s)
    thread.join(2)
    assert answers == [201]


def test_duplicate_delivers_twice(server: FaultServer, client: httpx.Client) -> None:
    server.plan("duplicate")
    answer = client.post("/payments", json={"key": "k1"}).json()
    assert answer == {"key": "k1", "delivery": 2, "fault": "duplicate"}
    assert server.accepted == ["k1", "k1"]  # type: ignore[attr-defined]


def test_handler_faults_reach_the_handler(server: FaultServer, client: httpx.Client) -> None:
    server.plan("reject")
    assert client.post("/payments", json={"key": "k1"}).json()["fault"] == "reject"


def test_every_vocabulary_word_has_a_server_form() -> None:
    assert {ServerFault.of(f).label for f in FAULTS} == set(FAULTS)
    with pytest.raises(ValueError):
        ServerFault.of("nonsense")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ServerFault("explode")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ nothing outlives stop()


def _alive(threads: list[threading.Thread]) -> list[str]:
    return [t.name for t in threads if t.is_alive()]


@pytest.mark.parametrize("fault", ["hang", "stall", "delay", "handler"])
def test_stop_waits_for_the_requests_being_handled(fault: str, caplog: pytest.LogCaptureFixture) -> None:
    """A request the client gave up on is still being handled when the owning test stops the server: stop() waits
    for it, so its handler neither runs after the test (its resources are gone) nor logs into a later test."""
    closed = threading.Event()  # the test's resources, torn down once stop() returns
    handlers: list[threading.Thread] = []
    entered = threading.Event()

    def pay(request: Request) -> Response:
        handlers.append(threading.current_thread())
        entered.set()
        time.sleep(0.5 if fault == "handler" else 0.3)  # the handler's own latency
        if closed.is_set():
            raise RuntimeError("the test's resources are gone")
        return Response.json({}, 201)

    server = FaultServer(hang_limit=30)
    server.route("POST", "/payments", pay)
    plans = {"hang": ServerFault("hang"), "stall": ServerFault("stall"), "delay": ServerFault("delay", seconds=30),
             "handler": ServerFault("handler")}
    server.plan(plans[fault])
    before = set(threading.enumerate())
    with server, pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/payments", json={}, timeout=0.2)
    closed.set()
    left = _alive([t for t in threading.enumerate() if t not in before])
    caplog.set_level(logging.DEBUG, logger="payhub.testing.server")
    caplog.clear()
    time.sleep(0.7)  # long enough for a handler left running to raise
    assert left == []
    assert entered.is_set() and handlers and _alive(handlers) == []
    assert [r.getMessage() for r in caplog.records] == []
    assert server.requests[0].outcome in ("answered", "client_gone")


def test_stop_closes_connections_kept_open_at_once() -> None:
    server = FaultServer(stop_timeout=10)
    server.route("GET", "/ping", lambda request: Response.json({}))
    server.start()
    with httpx.Client(base_url=server.url, timeout=2) as client:  # its connection stays open between requests
        assert client.get("/ping").status_code == 200
        threads = [t for t in threading.enumerate() if t.name.startswith(server.name + " ")]
        assert threads
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2 and _alive(threads) == []
        with pytest.raises(httpx.TransportError):
            client.get("/ping", timeout=1)
    assert len(server.requests) == 1


def test_a_handler_running_past_the_stop_timeout_is_named_and_then_quiet(caplog: pytest.LogCaptureFixture) -> None:
    gate, entered = threading.Event(), threading.Event()

    def stuck(request: Request) -> Response:
        entered.set()
        gate.wait(5)
        raise RuntimeError("the test's resources are gone")

    server = FaultServer(stop_timeout=0.2, name="stuck-server")
    server.route("POST", "/stuck", stuck)
    caplog.set_level(logging.DEBUG, logger="payhub.testing.server")
    with server:
        client = threading.Thread(target=lambda: httpx.post(server.url + "/stuck", json={}, timeout=5), daemon=True)
        client.start()
        assert entered.wait(2)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "still being handled" in warnings[0].getMessage()
    caplog.clear()
    gate.set()
    client.join(3)
    time.sleep(0.1)
    assert not any(r.exc_info or r.levelno > logging.DEBUG for r in caplog.records)
    assert any("raised after the server stopped" in r.getMessage() for r in caplog.records)
