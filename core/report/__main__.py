"""python -m core.report: re-render the report from stored results (core/report/render.py)."""
import sys

from core.report.render import main

sys.exit(main())
