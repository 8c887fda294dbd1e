"""`python -m orchestrator.report`: see orchestrator.report.cli."""
import sys

from orchestrator.report.cli import main

sys.exit(main())
