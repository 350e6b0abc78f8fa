"""The collectors' pages in real headless Chromium against `voice serve` as a real process:
Dana logs in (keyboard only), /today lists her accounts in the documented order and none of
Marcus's, she opens an account and adds a note; every field has a label; a forged CSRF token
is 403 and changes nothing; an expired session goes to the login page and back; a form error
shows beside its field. Screenshots of each page go to tests/output/screens/ (gitignored).

Two accounts are added to the demo data for Dana so the order has something to decide:
10042 gets a promise to pay due today (first), D-200 is 3,000.00 ninety days past due
(heavier than 10042's 1,250.00 sixty days), D-300 owes nothing past due (last).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile
from sqlalchemy import func, select, update

from accounts.models import (
    Account,
    Call,
    CallEvent,
    CallOutcome,
    Collector,
    Customer,
    Invoice,
    Note,
    Recording,
    Transcript,
)
from accounts.webtables import WebSession
from tests.integration.chromium import (
    add_page_user,
    open_chromium,
    require_chromium,
    screenshot,
)
from tests.integration.conftest import Server, start_server, stop_server, wait_for
from tests.integration.test_agent_fleet import (
    Gateway,
    alice,  # noqa: F401  (fixture; it rings in this module's `fleet`)
    start_fleet,
)
from tests.integration.test_agent_transfer import Softphone, require_baresip
from tests.integration.test_spoken_menu import MODEL, phrase_wav

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
ORDER = ["10042", "D-200", "D-300"]


def _seed(server: Server) -> None:
    today = dt.date.today()
    with server.session() as session, session.begin():
        dana = session.scalar(select(Collector).where(Collector.name == "Dana Whitfield"))
        assert dana is not None
        for number, past_due_days, cents in (("D-200", 90, 300000), ("D-300", -5, 10000)):
            customer = Customer(name=f"Customer {number}")
            session.add(customer)
            session.flush()
            account = Account(number=number, customer_id=customer.id, collector_id=dana.id)
            session.add(account)
            session.flush()
            due = today - dt.timedelta(days=past_due_days)
            session.add(
                Invoice(
                    account_id=account.id, number=f"{number}-1", amount_cents=cents,
                    open_cents=cents, issue_date=due - dt.timedelta(days=30), due_date=due,
                )
            )  # fmt: skip
        account = session.scalar(select(Account).where(Account.number == "10042"))
        assert account is not None
        call = Call(
            direction="outbound", caller="sip:dana", callee="+12125550101",
            account_id=account.id, worker="w0", sip_call_id="seed", status="completed",
            started_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
        )  # fmt: skip
        session.add(call)
        session.flush()
        session.add(
            CallOutcome(
                call_id=call.id, account_id=account.id, collector_id=dana.id, user="dana",
                kind="promise_to_pay", amount_cents=50000, currency="USD", promise_date=today,
            )
        )  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()
    server = start_server(tmp_path_factory.mktemp("collector-pages"))
    try:
        add_page_user(server, "dana", "collector", PASSWORD, "Dana Whitfield")
        add_page_user(server, "marcus", "collector", PASSWORD, "Marcus Lee")
        _seed(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def browser() -> Iterator[Any]:
    with open_chromium() as driver:
        yield driver


def _by() -> Any:
    from selenium.webdriver.common.by import By

    return By


def _wait(driver: Any, predicate: Any, timeout: float = 10.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(predicate)


def _press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _tab_to(driver: Any, css: str, limit: int = 60) -> Any:
    """Press Tab until the element matching `css` has the focus (at most `limit` times)."""
    from selenium.webdriver.common.keys import Keys

    target = driver.find_element(_by().CSS_SELECTOR, css)
    for _ in range(limit):
        if driver.switch_to.active_element == target:
            return target
        _press(driver, Keys.TAB)
    raise AssertionError(f"{css} not reachable with Tab in {limit} presses")


def _keyboard_login(driver: Any, base: str, name: str, path: str = "/") -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{base}{path}")
    _wait(driver, lambda d: "/login" in d.current_url)
    _tab_to(driver, "#name")
    _press(driver, name, Keys.TAB, PASSWORD, Keys.ENTER)
    _wait(driver, lambda d: "/login" not in d.current_url)


def _unlabelled(driver: Any) -> list[str]:
    """Form fields on the page with no label (for=, wrapping, or aria-label)."""
    script = """
      return [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden')
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.outerHTML);
    """
    return list(driver.execute_script(script))


def _rows(driver: Any) -> list[str]:
    rows = driver.find_elements(_by().CSS_SELECTOR, "#worklist tbody tr[data-account]")
    return [r.get_attribute("data-account") for r in rows]


def _notes(server: Server) -> int:
    with server.session() as session:
        return session.scalar(select(func.count()).select_from(Note)) or 0


def test_dana_works_her_day_by_keyboard(served: Server, browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    d, by = browser, _by()
    base = f"http://127.0.0.1:{served.http_port}"
    _keyboard_login(d, base, "dana")
    assert d.current_url == f"{base}/today"
    assert _rows(d) == ORDER  # promise due today, then weighted past due; no 20001/20002
    assert "Promise due today" in d.find_element(by.ID, "worklist").text
    assert _unlabelled(d) == []
    screenshot(d, "collectors-1-today")

    # Tab to the first account's link, Enter: the account page.
    _tab_to(d, '#worklist a[href="/accounts/10042"]')
    _press(d, Keys.ENTER)
    _wait(d, lambda x: x.current_url.endswith("/accounts/10042"))
    assert "Northwind Traders" in d.find_element(by.TAG_NAME, "h1").text
    assert "1,250.00 USD" in d.find_element(by.ID, "balance-past-due").text
    assert _unlabelled(d) == []
    screenshot(d, "collectors-2-account")

    # Add a note with the keyboard only.
    before = _notes(served)
    _tab_to(d, "#note-body")
    _press(d, "Spoke to AP: cheque in the post.")
    _tab_to(d, "#add-note")
    _press(d, Keys.ENTER)
    _wait(d, lambda x: "#note-" in x.current_url)
    first = d.find_element(by.CSS_SELECTOR, "#notes > li")
    assert "Spoke to AP: cheque in the post." in first.text and "manual" in first.text
    assert _notes(served) == before + 1
    screenshot(d, "collectors-3-note-added")

    # Log out with the keyboard too.
    _tab_to(d, "form.logout button")
    _press(d, Keys.ENTER)
    _wait(d, lambda x: x.current_url.endswith("/login"))


def test_marcus_sees_none_of_danas_accounts(served: Server, browser: Any) -> None:
    base = f"http://127.0.0.1:{served.http_port}"
    _keyboard_login(browser, base, "marcus")
    assert _rows(browser) == ["20001", "20002"]
    browser.get(f"{base}/accounts/10042")
    assert browser.find_element(_by().TAG_NAME, "h1").text == "Not found"
    screenshot(browser, "collectors-4-other-404")


def test_forged_csrf_is_403_and_changes_nothing(served: Server, browser: Any) -> None:
    d, by = browser, _by()
    base = f"http://127.0.0.1:{served.http_port}"
    _keyboard_login(d, base, "dana", "/accounts/10042")
    assert d.current_url == f"{base}/accounts/10042"  # back where she was going
    before = _notes(served)
    forge = "document.querySelector('form[action$=\"/notes\"] [name=csrf]').value = 'forged'"
    d.execute_script(forge)
    d.find_element(by.ID, "note-body").send_keys("must not be saved")
    d.find_element(by.ID, "add-note").click()
    _wait(d, lambda x: x.find_elements(by.TAG_NAME, "h1"))
    assert d.find_element(by.TAG_NAME, "h1").text == "Not allowed"
    assert "nothing was changed" in d.find_element(by.CSS_SELECTOR, "p.error").text
    assert _notes(served) == before
    screenshot(d, "collectors-5-csrf-403")


def test_form_error_shows_beside_its_field(served: Server, browser: Any) -> None:
    d, by = browser, _by()
    base = f"http://127.0.0.1:{served.http_port}"
    _keyboard_login(d, base, "dana", "/accounts/10042")
    before = _notes(served)
    d.find_element(by.ID, "note-body").send_keys("   ")
    d.find_element(by.ID, "add-note").click()
    error = _wait(d, lambda x: x.find_element(by.ID, "body-error"))
    field = d.find_element(by.ID, "note-body")
    assert "must be non-empty" in error.text
    assert field.get_attribute("aria-describedby") == "body-error"
    assert field.get_attribute("aria-invalid") == "true"
    # beside its field: right below the textarea, in the same field block
    assert error.find_element(by.XPATH, "..") == field.find_element(by.XPATH, "..")
    assert _notes(served) == before
    screenshot(d, "collectors-6-form-error")


def test_expired_session_goes_to_login_and_back(served: Server, browser: Any) -> None:
    d, by = browser, _by()
    base = f"http://127.0.0.1:{served.http_port}"
    _keyboard_login(d, base, "dana")
    idle = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=31)  # http.session_idle_minutes = 30
    with served.engine.begin() as conn:
        conn.execute(update(WebSession).values(last_seen_at=idle))
    d.get(f"{base}/accounts/10042?before=999999")
    _wait(d, lambda x: "/login" in x.current_url)
    assert d.find_element(by.TAG_NAME, "h1").text == "Log in"
    assert _unlabelled(d) == []
    screenshot(d, "collectors-7-login-again")
    d.find_element(by.ID, "name").send_keys("dana")
    d.find_element(by.ID, "password").send_keys(PASSWORD)
    d.find_element(by.CSS_SELECTOR, "form.login button").click()
    _wait(d, lambda x: "/login" not in x.current_url)
    assert d.current_url == f"{base}/accounts/10042?before=999999"


def test_wrong_password_same_message_as_unknown_user(served: Server, browser: Any) -> None:
    d, by = browser, _by()
    base = f"http://127.0.0.1:{served.http_port}"
    messages = []
    for name, password in (("dana", "not her password"), ("nobody", PASSWORD)):
        d.get(f"{base}/login")
        d.find_element(by.ID, "name").send_keys(name)
        d.find_element(by.ID, "password").send_keys(password)
        d.find_element(by.CSS_SELECTOR, "form.login button").click()
        messages.append(_wait(d, lambda x: x.find_element(by.ID, "form-error")).text)
    assert messages == ["Wrong user name or password."] * 2
    screenshot(d, "collectors-8-wrong-password")


# -- Make a Call through the real fleet -----------------------------------------------------
# test_agent_fleet's fleet (Kamailio, two workers, Dana's baresip softphone `alice` registered
# through Kamailio, the gateway (the customer's phone) played by the scripted pjsua2 UA), here
# with the Korean model transcribing both sides live. Guardrails are off there (calling hours
# follow the wall clock).
PHRASE = "마지막 결제"  # said by the customer once bridged (espeak-ng, Korean)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()
    require_baresip()
    env = {"VOICE_ASR_MODEL": MODEL, "VOICE_ASR_LANGUAGE": "ko"}
    srv = start_fleet(tmp_path_factory.mktemp("collector-fleet"), **env)
    try:
        yield srv
    finally:
        stop_server(srv)


def _said(driver: Any) -> str:
    """The caller's words on the page now (stored utterances and words in progress)."""
    script = """
      return [...document.querySelectorAll('#transcript li')]
        .map(li => li.textContent).filter(t => t.startsWith('caller')).join(' | ');
    """
    return str(driver.execute_script(script))


def fleet_transcript(server: Server, call_id: int) -> list[dict[str, Any]]:
    with server.session() as session:
        return Transcript.of_call(session, call_id)


def _event_at(server: Server, call_id: int, kind: str) -> dt.datetime:
    with server.session() as session:
        at = session.scalar(
            select(CallEvent.at).where(CallEvent.call_id == call_id, CallEvent.kind == kind)
        )
    assert at is not None, kind
    return at


def _kinds(driver: Any) -> list[str]:
    # One script: the event stream replaces the list's items while Selenium would walk them.
    script = "return [...document.querySelectorAll('#progress li')].map(li => li.dataset.kind)"
    return list(driver.execute_script(script))


@pytest.mark.skipif(
    not Path("/usr/sbin/kamailio").exists() and not os.environ.get("CI"),
    reason="Kamailio is not installed (make test installs it)",
)
def test_make_a_call_from_the_page_through_the_fleet(
    fleet: Server,
    alice: Softphone,  # noqa: F811
    browser: Any,
    tmp_path: Any,
) -> None:
    from selenium.webdriver.common.keys import Keys

    d, by = browser, _by()
    add_page_user(fleet, "dana", "collector", PASSWORD, "Dana Whitfield")
    base = f"http://127.0.0.1:{fleet.http_port}"
    wav = phrase_wav(tmp_path, PHRASE, "ko", 140)
    length = soundfile.info(str(wav)).duration
    gateway = Gateway(fleet, tmp_path, f"wait:1;say:{wav};wait:25;hangup", 60)
    try:
        _keyboard_login(d, base, "dana", "/accounts/10042")
        _tab_to(d, 'form[action="/calls"] button')  # Make a Call, by keyboard
        _press(d, Keys.ENTER)
        _wait(d, lambda x: "/calls/" in x.current_url)
        call_id = int(d.current_url.rsplit("/", 1)[1])
        _wait(d, lambda x: "bridged" in _kinds(x), 30)  # over the event stream, no reload
        screenshot(d, "collectors-9-call-bridged")
        # The customer's words appear as they are said: within 3 s of the phrase's end.
        heard = _wait(d, lambda x: _said(x) or None, 20)
        seen_at = dt.datetime.now(dt.UTC)
        answered = _event_at(fleet, call_id, "customer_answered")
        said_until = answered + dt.timedelta(seconds=1.0 + length)  # the UA waits 1 s first
        assert (seen_at - said_until).total_seconds() < 3.0, (heard, seen_at, said_until)
        # Free speech (no menu grammar) from espeak-ng: the model hears e.g. "막이 여제" for
        # "마지막 결제", so the words are compared with what is stored, not with the phrase.
        screenshot(d, "collectors-9b-words")
        # Pause, Resume and the outcome by keyboard (a radio group is one Tab stop: Space
        # picks the focused option); only the date picker's value is set by script.
        for button_id in ("pause", "resume"):
            _tab_to(d, f"#{button_id}")
            _press(d, Keys.ENTER)
            _wait(d, lambda x: x.find_elements(by.ID, "save-outcome"))
        week = (dt.date.today() + dt.timedelta(days=7)).isoformat()
        _tab_to(d, "#kind-reached")
        _press(d, Keys.RIGHT, Keys.RIGHT, Keys.RIGHT, Keys.SPACE)
        assert d.find_element(by.ID, "kind-promise_to_pay").is_selected()
        _tab_to(d, "#amount")
        _press(d, "500.00")
        d.execute_script(f"document.getElementById('date').value = '{week}'")
        _tab_to(d, "#save-outcome")
        _press(d, Keys.ENTER)
        _wait(d, lambda x: "marked=promise_to_pay" in x.current_url)
        screenshot(d, "collectors-10-outcome-saved")
        (report,) = gateway.reports(60)  # the customer hangs up
    finally:
        gateway.stop()
    assert not report["error"], report
    # The page reloads itself once the call has ended: the recording plays in place.
    audio = _wait(d, lambda x: x.find_elements(by.CSS_SELECTOR, "audio[data-recording]"), 40)[0]
    duration = _wait(
        d, lambda x: x.execute_script("const a = arguments[0]; return a.duration || null", audio)
    )
    with fleet.session() as session:
        call = session.get(Call, call_id)
        assert call is not None and call.answered_at and call.ended_at
        outcomes = list(session.scalars(select(CallOutcome).where(CallOutcome.call_id == call_id)))
    assert abs(float(duration) - (call.ended_at - call.answered_at).total_seconds()) < 1.0
    assert [(o.kind, o.amount_cents, o.promise_date.isoformat()) for o in outcomes] == [
        ("promise_to_pay", 50000, week)
    ]
    stored = [t["text"] for t in fleet_transcript(fleet, call_id) if t["speaker"] == "caller"]
    assert stored and all(text in _said(d) for text in stored), (stored, _said(d))
    d.execute_script("arguments[0].play()", audio)
    assert wait_for(lambda: d.execute_script("return arguments[0].currentTime", audio) > 0.3, 10)
    screenshot(d, "collectors-11-call-ended")
    d.get(f"{base}/accounts/10042")
    timeline = d.find_element(by.ID, "notes").text
    assert "500.00 USD" in timeline and "outcome" in timeline
    assert d.find_elements(by.CSS_SELECTOR, "#notes audio[data-recording]")
    with fleet.session() as session:
        pauses = [
            p for p in session.scalars(select(Recording.pauses).where(Recording.call_id == call_id))
        ]
    assert pauses and len(pauses[0]) == 1, pauses


def test_an_open_event_stream_does_not_hold_shutdown(tmp_path: Any) -> None:
    """A live call's page left open: SIGTERM still stops the server (voice/supervisor.py
    HTTP_SHUTDOWN_S), where uvicorn alone would wait for the browser to go away."""
    import signal
    import threading

    import httpx

    server = start_server(tmp_path / "data")
    try:
        add_page_user(server, "dana", "collector", PASSWORD, "Dana Whitfield")
        with server.session() as session, session.begin():
            account = session.scalar(select(Account.id).where(Account.number == "10042"))
            call = Call(direction="inbound", caller="+12125550101", callee="ivr",
                        account_id=account, worker="w0", sip_call_id="open")  # fmt: skip
            session.add(call)
            session.flush()
            call_id = call.id
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}")
        form = client.get("/login").text
        token = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        data = {"csrf": token, "name": "dana", "password": PASSWORD, "next": "/"}
        assert client.post("/login", data=data).status_code == 303
        lines: list[str] = []

        def listen() -> None:
            try:
                with client.stream("GET", f"/calls/{call_id}/events", timeout=60) as answer:
                    lines.extend(answer.iter_lines())
            except httpx.HTTPError:
                lines.append("closed")

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        assert wait_for(lambda: "event: status" in lines, 10), lines
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
        assert time.monotonic() - start < 20
        reader.join(10)
        client.close()
    finally:
        stop_server(server)
