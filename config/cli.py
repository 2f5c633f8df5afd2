"""What every command line of ours does around its work: ``.env`` (unless
``PERSONA_DOTENV=0``, as in the test suite), and any error the user can fix as one line on
stderr with exit status 2 (no traceback); Ctrl-C is 130."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from config.errors import AgentError

EXIT_USAGE = 2


def load_env() -> bool:
    """Read ``.env`` (not with ``PERSONA_DOTENV=0``); whether it was allowed to."""
    if os.environ.get("PERSONA_DOTENV", "1") == "0":
        return False
    from dotenv import load_dotenv

    load_dotenv()
    return True


def run_command(run: Callable[[list[str]], int], argv: list[str]) -> int:
    """``run(argv)``; a user-fixable error is one scrubbed line and exit 2."""
    from config.logging import scrub

    try:
        return run(argv)
    except AgentError as exc:
        print(scrub(exc.render()), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
