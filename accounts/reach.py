"""Which phone rings for a collector: "collector -> softphones -> route", in one place.

A collector is reached through their softphone (`softphones.collector_id`; dialled as
`sip:USER@<kamailio.realm>` through Kamailio, so only when the worker has a proxy), else their
configured `Collector.sip_uri` (dialled directly: developer mode). A collector with neither is
not reachable. Agent transfer (`agents_for`: the account's collector, then the team), Make a
Call in the API (is the requester reachable?) and the worker placing it (`collector_route`)
all answer with `route_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.models import Collector, Softphone

# Names that never resolve (RFC 2606, RFC 6761): the demo data's placeholders. Dialling one
# would only stall the SIP thread on a DNS lookup.
RESERVED_DOMAINS = (".example", ".invalid", ".test", ".localhost")


@dataclass(frozen=True)
class Agent:
    collector_id: int
    name: str
    uri: str  # the SIP URI dialled
    via: str  # "softphone alice" or "sip_uri"


def route_of(
    collector: Collector, softphones: list[str], *, realm: str, proxy: bool
) -> Agent | None:
    """How to reach a collector: a softphone through Kamailio, else their sip_uri."""
    if proxy and softphones:
        user = sorted(softphones)[0]
        return Agent(collector.id, collector.name, f"sip:{user}@{realm}", f"softphone {user}")
    uri = (collector.sip_uri or "").strip()
    host = uri.rsplit("@", 1)[-1].split(":", 1)[0].split(";", 1)[0].lower()
    if uri.lower().startswith("sip:") and not host.endswith(RESERVED_DOMAINS):
        return Agent(collector.id, collector.name, uri, "sip_uri")
    return None


def collector_route(
    session: Session, collector: int | str, *, realm: str, proxy: bool, active_only: bool = True
) -> Agent | None:
    """The route to one collector, named by id (or its digits) or by name; None if there is
    none (no such collector, inactive with `active_only`, or no phone to ring)."""
    if isinstance(collector, int) or str(collector).isdigit():
        found = session.get(Collector, int(collector))
    else:
        found = session.scalar(select(Collector).where(Collector.name == collector))
    if found is None or (active_only and not found.active):
        return None
    phones = list(
        session.scalars(select(Softphone.username).where(Softphone.collector_id == found.id))
    )
    return route_of(found, phones, realm=realm, proxy=proxy)


def agents_for(
    session: Session,
    collector_id: int | None,
    *,
    realm: str,
    proxy: bool,
    try_team: bool,
    team_size: int,
) -> list[Agent]:
    """Whom to ring for an account assigned to `collector_id`, in order: its collector if
    active and reachable, then (`try_team`) up to `team_size` other active ones by name."""
    collectors = list(
        session.scalars(
            select(Collector).where(Collector.active.is_(True)).order_by(Collector.name)
        )
    )
    phones: dict[int, list[str]] = {}
    for user, owner in session.execute(select(Softphone.username, Softphone.collector_id)):
        if owner is not None:
            phones.setdefault(owner, []).append(user)
    routes = {
        c.id: route
        for c in collectors
        if (route := route_of(c, phones.get(c.id, []), realm=realm, proxy=proxy)) is not None
    }
    ordered = [routes[collector_id]] if collector_id in routes else []
    if try_team:
        team = [routes[c.id] for c in collectors if c.id != collector_id and c.id in routes]
        ordered += team[:team_size]
    return ordered
