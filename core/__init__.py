"""The hiahia study in five packages: run (what one run executes), study (plan, execute, store), analysis (verdicts),
report (the HTML report and READMEs' numbers), facts (the `hiahia` command); paths, files and exits are shared."""
