"""Who reaches a recording: collectors only those of calls on accounts assigned to them (404
otherwise, as if the recording did not exist, the refusal audited); supervisors, compliance and
administrators all. Used by the search and metadata (voice/api/recordings.py), the audio
(voice/api/recording_audio.py) and verify/hold (voice/api/recording_keep.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.requests import Request

from accounts.users import Principal
from recordings.search import RecordingInfo, RecordingSearch, Scope
from recordings.verify import RecordingNotFound
from voice.api.auth import client_addr, config_of, deny, sees_account, sessions_of

READERS = ("collector", "supervisor", "compliance", "admin")


def as_json(info: RecordingInfo) -> dict[str, Any]:
    out = info.to_json()
    out["audio_url"] = f"/api/recordings/{info.id}/audio"
    return out


def file_access(
    request: Request, user: Principal
) -> tuple[sessionmaker[Session], Path, Principal, str | None]:
    """(sessions, recordings folder, user, client address): what every access to a recording's
    file takes (audio, peaks, verify), from the request."""
    return sessions_of(request), config_of(request).recordings_dir, user, client_addr(request)


def visible(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, recording_id: int
) -> RecordingInfo:
    """The recording if `user` may see it; otherwise the refusal is audited and 404 raised."""
    try:
        info = RecordingSearch(sessions).get(recording_id, Scope.all())
    except RecordingNotFound:
        deny(sessions, user, addr, "recording", recording_id, "no such recording")
        raise HTTPException(404, f"no recording {recording_id}") from None
    if not sees_account(user, info.collector_id):
        reason = "recording of an account not assigned to this collector"
        deny(sessions, user, addr, "recording", recording_id, reason)
        raise HTTPException(404, f"no recording {recording_id}")
    return info


def refuse_without_audio(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, info: RecordingInfo
) -> None:
    rid = info.id
    if info.status == "deleted":
        deny(sessions, user, addr, "recording", rid, "audio deleted", status=410)
        raise HTTPException(410, f"recording {rid} was deleted after its retention period")
    if info.status == "recording":
        deny(sessions, user, addr, "recording", rid, "still recording", status=409)
        raise HTTPException(409, f"recording {rid} is still being recorded")
