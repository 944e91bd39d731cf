#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the numerical core: does breaking the code on purpose make a test fail?
#
#   scripts/mutation.sh                      # every module below, one after the other: samplers/ and core/'s
#                                            # schedules, precond, reference, events, guidance, model, conditioning
#   scripts/mutation.sh samplers schedules   # only these
#   scripts/mutation.sh --survivors samplers # after adding tests: re-run only the last run's survivors against the
#                                            # current tests (the other mutants keep their verdicts)
#
# Not part of the default suite: it takes tens of minutes per module on 2 busy cores. Each module is mutated against
# its own fast test file(s) only (MODULE_TESTS below), with one worker, under nice, in a scratch copy
# .mutation/MODULE/ (the work tree is never mutated). Per module it prints the score and writes
# .mutation/MODULE/score.txt: detected (killed, timed out or crashed) / all mutants checked, "no tests" mutants
# counted as survivors, then the list of survivors. Inspect one with `cd .mutation/MODULE && mutmut show NAME`.
# Results are recorded in docs/benchmarks.md.
set -euo pipefail
source "$(dirname "$0")/_env.sh" "test,mutation"
cd "$ROOT"

declare -A MODULE_SOURCES=(
  [samplers]="src/diffuscope/samplers/*"
  [schedules]="src/diffuscope/core/schedules.py"
  [precond]="src/diffuscope/core/precond.py"
  [guidance]="src/diffuscope/core/guidance.py"
  [reference]="src/diffuscope/core/reference.py"
  [events]="src/diffuscope/core/events.py"
  [model]="src/diffuscope/core/model.py"
  [conditioning]="src/diffuscope/core/conditioning.py"
)
declare -A MODULE_TESTS=(
  [samplers]="tests/test_samplers.py tests/test_sampler_options.py tests/test_steppers.py tests/test_inversion.py"
  [schedules]="tests/test_schedules.py tests/test_schedules_contract.py"
  [precond]="tests/test_precond.py"
  [guidance]="tests/test_guidance.py"
  [reference]="tests/test_reference.py"
  [events]="tests/test_events.py"
  [model]="tests/test_model.py"
  [conditioning]="tests/test_conditioning.py tests/test_conditioning_contract.py"
)
SURVIVORS=0
if [ "${1:-}" = "--survivors" ]; then SURVIVORS=1; shift; fi
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=(samplers schedules precond reference events guidance model conditioning)
for m in "${MODULES[@]}"; do
  if [ -z "${MODULE_SOURCES[$m]:-}" ]; then
    echo "scripts/mutation.sh: unknown module '$m' (valid: ${!MODULE_SOURCES[*]})" >&2
    exit 2
  fi
done

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one worker, one thread: leaves the other core to others

score() {  # score WORK MODULE SECONDS: write WORK/score.txt (first line: the score, then the survivors)
  (cd "$1" && mutmut results --all true > results.txt 2>&1)
  python - "$1" "$2" "$3" <<'PY'
import collections, pathlib, sys
work, module, seconds = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
status = {}
for line in (work / "results.txt").read_text().splitlines():
    name, sep, verdict = line.strip().rpartition(": ")
    if sep and "__mutmut_" in name:
        status[name] = verdict.strip()
previous = work / "score.prev.txt"  # a --survivors re-run: the mutants it did not re-check keep their verdicts
if previous.is_file():
    before = set(previous.read_text().splitlines()[1:])
    for name, verdict in status.items():
        if verdict == "not checked" and name not in before:
            status[name] = "killed"  # detected by the run before this one (mutmut reset it: config changed)
counts = collections.Counter(status.values())
killed = counts["killed"] + counts["timeout"] + counts["segfault"]  # a mutant that hangs or crashes is detected
scored = sum(counts.values()) - counts["skipped"] - counts["not checked"]
survivors = sorted(n for n, v in status.items() if v in ("survived", "no tests", "suspicious"))
lines = [f"{module}: {killed}/{scored} detected = {100 * killed / max(scored, 1):.1f}% "
         f"({dict(sorted(counts.items()))}, {seconds} s)", *survivors]
(work / "score.txt").write_text("\n".join(lines) + "\n")
print(lines[0])
PY
}

write_config() {  # write_config WORK MODULE: the scratch pyproject.toml, its tests from MODULE_TESTS as they are now
  local tests_toml
  tests_toml=$(printf '"%s", ' ${MODULE_TESTS[$2]})
  { cat pyproject.toml
    printf '\n[tool.mutmut]\nsource_paths = ["src/"]\nonly_mutate = ["%s"]\n' "${MODULE_SOURCES[$2]}"
    printf 'pytest_add_cli_args_test_selection = [%s]\n' "${tests_toml%, }"
    printf 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-W", "ignore"]\n'
    printf 'use_git_change_detection = false\n'
  } > "$1/pyproject.toml"
}

for m in "${MODULES[@]}"; do
  work="$ROOT/.mutation/$m"
  start=$(date +%s)
  if [ "$SURVIVORS" = 1 ]; then
    if [ ! -f "$work/score.txt" ]; then echo "no earlier run in $work: run scripts/mutation.sh $m first" >&2; exit 2; fi
    mapfile -t names < <(tail -n +2 "$work/score.txt")
    cp "$work/score.txt" "$work/score.prev.txt"
    rm -rf "$work/tests" && cp -r tests "$work/tests"
    write_config "$work" "$m"  # the module's test files as listed now (a new file joins the re-run)
    echo "== $m: re-running ${#names[@]} survivors against the current ${MODULE_TESTS[$m]} ($(date -u +%H:%M:%S) UTC)"
    if [ ${#names[@]} -gt 0 ]; then
      (cd "$work" && nice -n 15 mutmut run --max-children 1 "${names[@]}" > rerun.log 2>&1) || {
        echo "mutmut failed for $m: see $work/rerun.log" >&2; tail -20 "$work/rerun.log" >&2; exit 1; }
    fi
    score "$work" "$m" "$(( $(date +%s) - start ))"
    continue
  fi
  rm -rf "$work"
  mkdir -p "$work"
  cp -r src tests "$work/"
  find "$work" -name __pycache__ -prune -exec rm -rf {} +
  write_config "$work" "$m"
  echo "== $m: mutating ${MODULE_SOURCES[$m]} against ${MODULE_TESTS[$m]} ($(date -u +%H:%M:%S) UTC)"
  (cd "$work" && nice -n 15 mutmut run --max-children 1 > run.log 2>&1) || {
    echo "mutmut failed for $m: see $work/run.log" >&2; tail -20 "$work/run.log" >&2; exit 1; }
  score "$work" "$m" "$(( $(date +%s) - start ))"
done
