"""The study: ablations loaded and planned, runs executed (here or on Ray) and stored, the published summaries
and the run_all command line."""
