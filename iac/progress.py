"""Progress output that suits where it goes.

A progress bar redraws one line many times a second: fine on a terminal, a
flood of lines in a log file or a pipe (``mlflow run ... > log``). Bars are
therefore shown only when stderr is a terminal; otherwise the loops print one
summary line per epoch (or per case batch) instead.
"""

from __future__ import annotations

import os
import sys
from typing import IO

# Set to "1" to force bars (or "0" to suppress them) whatever stderr is.
FORCE_ENV = "IAC_PROGRESS_BARS"


def bars_enabled(stream: IO | None = None) -> bool:
    """True when progress bars should be drawn: ``IAC_PROGRESS_BARS`` if set, else whether ``stream`` (stderr) is a TTY."""
    forced = os.environ.get(FORCE_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
