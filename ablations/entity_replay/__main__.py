"""python -m ablations.entity_replay: run this ablation alone (same flags as run_all.py)."""
import sys

from core.study.cli import main

sys.exit(main(["--only", __package__.rsplit(".", 1)[-1], *sys.argv[1:]]))
