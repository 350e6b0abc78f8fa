"""RecordingBook.close tried again, on real SQLite and PostgreSQL.

voice/calls/media.py retries a close while the database refuses. The first try may have made
the FLAC (and removed the WAV) before its row could be stored: the second must describe that
FLAC, not report "no audio was written".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.models import Recording
from recordings.book import RecordingBook
from recordings.capture import finalise, sha256_of
from recordings.paths import path_for
from voice.config import from_mapping


def test_a_close_tried_again_after_the_flac_was_made_keeps_the_audio(
    db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    cfg = from_mapping({"data": {"dir": str(tmp_path)}})
    book = RecordingBook(db_sessions, cfg)
    call_id = CallJournal(db_sessions).start_call(
        direction="inbound", caller="+12125550101", callee="ivr", worker="w0", sip_call_id="r1"
    )
    recording_id, wav = book.open(call_id)
    tone = (3000 * np.sin(np.arange(16000 * 3) * 2 * np.pi * 440 / 16000)).astype(np.int16)
    soundfile.write(wav, tone, 16000, subtype="PCM_16")
    flac = wav.with_suffix(".flac")
    finalise(wav, flac)  # the first try got this far, then its transaction was refused
    assert not wav.exists() and flac.exists()

    rec = book.close(recording_id, call_seconds=3.0)

    assert rec.loss is None, rec.loss
    assert rec.status == "final" and rec.format == "flac"
    assert abs(rec.duration_s - 3.0) < 0.01 and rec.sha256 == sha256_of(flac)
    with db_sessions() as session:
        stored = session.get(Recording, recording_id)
        assert stored is not None and path_for(stored.path, book.root) == flac
        assert stored.bytes == flac.stat().st_size
