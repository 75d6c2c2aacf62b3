#!/usr/bin/env bash
# Run the whole study in the background, resumably, committing finished runs as they come.
#
#     tools/study.sh [LOG]        (LOG default: ../study-logs/study.log, outside the checkout)
#
# Starts `python run_all.py --precision bf16 --no-report` (all ablations, the seeds each ablation.yaml declares; cached runs are
# reused, so a killed study resumes where it stopped) and, every COMMIT_EVERY seconds and once at the end,
# commits results/runs/, results/plan.json, results/PROGRESS.md (tools/study_status.py: stored / missing per
# ablation and the time left) and the study numbers python -m core.report.readme generates in README.md,
# ablations/*/README.md and docs/terms-and-measures.md (with the blind scorer table python -m core.analysis.blind
# writes), so every commit passes tests/test_readme.py and tests/test_scoring.py. Once every planned run is stored, run_all
# writes the published results/verdicts.json and summary.csv; those are committed with the READMEs that quote
# them, and report/ is rendered (run_all.py --report-only) and committed at the end. Only those paths are committed, so other
# work in the checkout is untouched; the READMEs are left alone while any has uncommitted edits (regenerate and
# commit them with those).
# The code the runs record is fixed by their code version (core/run/version.py): edit no file it covers while the
# study runs, or run it in a checkout of its own (a git worktree).
set -u
cd "$(dirname "$0")/.."
LOG=${1:-../study-logs/study.log}
COMMIT_EVERY=${COMMIT_EVERY:-900}
mkdir -p "$(dirname "$LOG")"

commit_runs() {
    python tools/study_status.py --write results/PROGRESS.md > /dev/null 2>>"$LOG" || return 0
    local paths=(results/runs results/plan.json results/PROGRESS.md) f
    # what python -m core.report.readme and core.analysis.blind write from the results (the blind table's baseline
    # column reads the baseline recipe's runs)
    local pages=(README.md ablations/*/README.md docs/terms-and-measures.md data/labels/blind/heldout/AGREEMENT.md)
    # the published summary files exist only once the study is complete (before, they go to results/partial/)
    for f in results/verdicts.json results/summary.csv; do [ -e "$f" ] && paths+=("$f"); done
    [ "${1:-}" = report ] && [ -e report/index.html ] && paths+=(report)
    if git diff --quiet HEAD -- "${pages[@]}" 2>>"$LOG" && python -m core.analysis.blind >>"$LOG" 2>&1 \
            && python -m core.report.readme >>"$LOG" 2>&1; then
        paths+=("${pages[@]}")
    fi
    git add "${paths[@]}" 2>>"$LOG"
    local head
    head=$(head -n 5 results/PROGRESS.md | tail -n 1)
    git commit -q -m "Study: ${head}" -- "${paths[@]}" >>"$LOG" 2>&1 || true
}

echo "study started $(date -u +%FT%TZ) at $(git rev-parse --short HEAD)" >>"$LOG"
# one precision for the whole study, whatever CPU a session lands on (auto would pick fp32 where bf16 is not in
# hardware, and the keys would change midway)
python run_all.py --precision bf16 --no-report >>"$LOG" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid"; commit_runs; exit 130' INT TERM
while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq "$COMMIT_EVERY"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    commit_runs
done
wait "$pid"
status=$?
# a complete study: render the published report from the stored runs and commit it with them
if [ "$status" = 0 ] && python tools/study_status.py --check >>"$LOG" 2>&1 \
        && python run_all.py --precision bf16 --report-only >>"$LOG" 2>&1; then
    commit_runs report
else
    commit_runs
fi
echo "study ended $(date -u +%FT%TZ) with exit status $status" >>"$LOG"
exit "$status"
