"""Loading the Vosk model: once per machine, before the workers fork (see voice/zygote.py).

A missing or broken model is not fatal: the server says so once, clearly, and keeps serving
keypad input and recordings.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def load_model(path: str) -> Any | None:
    """The `vosk.Model` in folder `path`, or None (logged once) if unset or unloadable."""
    if not path:
        log.info("asr.model is not set: speech recognition is off (keypad input only)")
        return None
    folder = Path(path).expanduser()
    if not (folder / "am").is_dir() and not (folder / "final.mdl").exists():
        log.error(
            "asr.model %s is not a Vosk model folder (no am/): speech recognition is off; "
            "`voice models fetch NAME` installs one",
            folder,
        )
        return None
    import vosk

    vosk.SetLogLevel(-1)  # Kaldi's per-load chatter; our own line below says what matters
    started = time.monotonic()
    try:
        model = vosk.Model(str(folder))
    except Exception as exc:
        log.error("asr.model %s failed to load (%s): speech recognition is off", folder, exc)
        return None
    log.info("asr model %s loaded in %.1f s", folder, time.monotonic() - started)
    return model
