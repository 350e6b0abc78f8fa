"""A browser-like client for page tests: cookies kept between requests, forms posted with the
page's CSRF token. Over apiworld's world (demo accounts, one user per role), each user with a
password, the API and the pages in one app as voice/app.py composes them.

Requests go through httpx's ASGI transport, one event loop per request (starlette's
TestClient warns with httpx), so tests stay plain functions.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select
from starlette.applications import Starlette

from accounts.logins import Passwords
from accounts.models import User
from accounts.webtables import UserPassword
from tests.unit.apiworld import FakeFleet, World, make_world
from voice.api import api_mount
from voice.pages import pages_routes

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookies = httpx.Cookies()
        self.last: httpx.Response | None = None
        self.base_url = "http://testserver"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(
                transport=transport, base_url=self.base_url, cookies=self.cookies
            ) as client:
                response = await client.request(method, path, **kwargs)
                self.cookies = httpx.Cookies(client.cookies)
                return response

        self.last = asyncio.run(go())
        return self.last

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, data=data, **kwargs)

    def csrf(self, page: str | None = None) -> str:
        """The CSRF token of `page` (fetched) or of the last page seen."""
        text = self.get(page).text if page else (self.last.text if self.last else "")
        match = _CSRF.search(text)
        assert match, f"no csrf field on {page or 'the last page'}"
        return match[1]

    def submit(self, page: str, action: str, data: dict[str, str]) -> httpx.Response:
        """Open `page`, then post `data` to `action` with its token, as a browser would."""
        token = self.csrf(page)
        return self.post(action, {"csrf": token, **data}, headers={"Referer": page})

    def login(self, name: str, password: str = PASSWORD, nxt: str = "/") -> httpx.Response:
        return self.submit("/login", "/login", {"name": name, "password": password, "next": nxt})


@dataclass
class PagesWorld:
    world: World
    app: Starlette

    @property
    def sessions(self) -> Any:
        return self.world.sessions

    @property
    def state(self) -> Any:
        """The pages app's state (cfg, fleet, clock)."""
        return self.app.routes[1].app.state  # type: ignore[attr-defined]

    @property
    def fleet(self) -> FakeFleet:
        return self.state.fleet  # type: ignore[no-any-return]

    def browser(self, name: str | None = None) -> Browser:
        browser = Browser(self.app)
        if name is not None:
            response = browser.login(name)
            assert response.status_code == 303, response.text
        return browser


def make_pages_world(database_url: str, cfg: Any = None) -> PagesWorld:
    world = make_world(database_url)
    Passwords(world.sessions).set("dana", PASSWORD)
    # argon2 is slow on purpose (~0.5 s here): the others get a copy of dana's hash.
    with world.sessions.begin() as session:
        digest = session.scalar(select(UserPassword.hash))
        for user in session.scalars(select(User).where(User.name.in_(("sam", "cora", "ada")))):
            session.add(UserPassword(user_id=user.id, hash=digest))
    fleet = FakeFleet(world.sessions)
    app = Starlette(
        routes=[
            api_mount(world.sessions, cfg, fleet=fleet),
            *pages_routes(world.sessions, cfg, fleet=fleet),
        ]
    )
    return PagesWorld(world, app)
