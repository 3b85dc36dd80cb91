"""
Let ``python -m orchestrator`` behave exactly like the ``modelarts-sync`` script.
"""

import sys

from orchestrator.cli import main

sys.exit(main())
