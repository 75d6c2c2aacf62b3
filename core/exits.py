"""The exit statuses of the project's two commands, run_all.py (the study) and hiahia (your own facts)."""

EXIT_OK = 0
EXIT_FAILED = 1  # hiahia: the command ran and failed (e.g. training diverged)
EXIT_BAD_INPUT = 2  # both: bad input, one line on stderr, nothing written
EXIT_RUNS_FAILED = 3  # run_all: finished, some runs stored as failed
EXIT_RUNS_PENDING = 4  # run_all: finished, some runs still trained by another invocation
EXIT_INTERRUPTED = 130  # hiahia: Ctrl-C, as a shell reports SIGINT
