"""``python -m persona_tests``: see :mod:`persona_tests.cli`."""

import sys

from persona_tests.cli import main

sys.exit(main())
