"""Run every ablation of the hiahia LoRA study (or --only some), store results/, render report/."""
import sys

from core.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
