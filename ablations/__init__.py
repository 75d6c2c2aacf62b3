"""One folder per ablation; each holds ablation.yaml (arms as diffs from the baseline) and README.md."""
