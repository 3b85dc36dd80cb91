"""
The process's exit codes: what a scheduler reads when ``modelarts-sync`` ends.

Named here, apart from both users, because ``cli`` maps errors to them and
``job`` decides them for a finished run (the metrics file records that code
too); the README's "Exit codes" table says what each means to an operator.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_LOCKED = 4
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE: an internal error, a bug to report
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a closed pipe
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
