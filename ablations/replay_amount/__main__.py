"""python -m ablations.replay_amount: run this ablation alone (same flags as run_all.py)."""
import sys

from core.suite import main

sys.exit(main(["--only", __package__.rsplit(".", 1)[-1], *sys.argv[1:]]))
