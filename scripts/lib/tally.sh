# Shared by scripts/test and scripts/testhost-pass (sourced, not run): run test binaries with their
# output kept in a log, and tally what cargo's harness and our loud skips said.
#   tally_run LOG CMD...   run CMD, output to the terminal and appended to LOG; its status is kept
#   tally_summary LOG HOST print "HOST: N passed, N failed, N skipped" and the skip reasons
# A skip is a test that printed `SKIPPED: ...` (cvbench-testkit or an optional-tool check); cargo
# counts it as passed, so it is subtracted from the passed count here.

tally_failed_cmds=0

tally_run() {
    local log=$1; shift
    local rc=0 before
    before=$(grep -c -E '^test result: ' "$log" 2>/dev/null || true)
    # (errexit is off inside an || list; PIPESTATUS gives the command's status with or without pipefail)
    { "$@" 2>&1 | tee -a "$log"; rc=${PIPESTATUS[0]}; } || true
    if [ "$rc" != 0 ]; then
        tally_failed_cmds=$((tally_failed_cmds + 1))
        echo "TALLY-FAILED-COMMAND: $*" >> "$log"
        # Killed or crashed before cargo's harness printed its result: that is one failed test.
        if [ "$(grep -c -E '^test result: ' "$log" 2>/dev/null || true)" = "${before:-0}" ]; then
            echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (ended with status $rc before its result: $*)" | tee -a "$log"
        fi
    fi
    return 0
}

tally_summary() {
    local log=$1 host=$2
    local passed failed skipped
    passed=$(grep -E '^test result: ' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ - | bc 2>/dev/null || echo 0)
    failed=$(grep -E '^test result: ' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ - | bc 2>/dev/null || echo 0)
    skipped=$(grep -c -E '^SKIPPED' "$log" || true)
    passed=${passed:-0}; failed=${failed:-0}; skipped=${skipped:-0}
    if [ "$passed" -ge "$skipped" ]; then passed=$((passed - skipped)); fi
    echo
    echo "== summary ($host)"
    if [ "$skipped" -gt 0 ]; then
        echo "skipped, with reasons:"
        grep -E '^SKIPPED' "$log" | sed 's/^/  /' | sort | uniq -c | sed 's/^ *\([0-9]*\) */  \1x /'
    fi
    if [ "$tally_failed_cmds" -gt 0 ]; then
        echo "commands that failed:"
        grep '^TALLY-FAILED-COMMAND: ' "$log" | sed 's/^TALLY-FAILED-COMMAND: /  /'
        [ "$failed" -gt 0 ] || failed=$tally_failed_cmds
    fi
    echo "$host: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" = 0 ] && [ "$tally_failed_cmds" = 0 ]
}

# tally_check LOG NAME CMD...: a command that is one check (not a cargo test binary); its result is
# logged in cargo's words so tally_summary counts it.
tally_check() {
    local log=$1 name=$2; shift 2
    local rc=0
    echo "== check: $name" | tee -a "$log"
    { "$@" 2>&1 | tee -a "$log"; rc=${PIPESTATUS[0]}; } || true
    if [ "$rc" = 0 ]; then
        echo "test result: ok. 1 passed; 0 failed; 0 ignored (check: $name)" | tee -a "$log"
    else
        echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (check: $name, exit $rc)" | tee -a "$log"
    fi
    return 0
}
