"""Where the repository's folders are: the one place that computes the repository root.

Modules name their own files from these (the published results, the report, the ablations, the data)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABLATIONS = ROOT / "ablations"
DATA = ROOT / "data"
RESULTS = ROOT / "results"
REPORT = ROOT / "report"
README = ROOT / "README.md"
