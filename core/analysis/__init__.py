"""From stored runs to verdicts: statistics, paired comparisons, verdicts, and scorer agreement with labels."""
