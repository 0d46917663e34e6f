#!/bin/bash
# run.sh - what `make fuzz` runs once the targets are built:
#   tests/fuzz/run.sh BUILD_DIR SECONDS JOBS TARGET...
# First every input in tests/fuzz/regress/TARGET/ is replayed (a crash found
# once stays fixed). Then each target fuzzes for SECONDS on a copy of its seed
# corpus (tests/fuzz/corpus/TARGET/ into BUILD_DIR/corpus-TARGET, kept from
# run to run so that coverage builds up), JOBS targets at a time. Exits 1 if a
# replay fails or a target finds a crash, a leak or a timeout, and names the
# input that reproduces it: `BUILD_DIR/TARGET FILE` replays it; once fixed,
# copy it into tests/fuzz/regress/TARGET/.
set -u
dir=$1 secs=$2 jobs=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)

# Longest input per target: a small GGUF or PEFT adapter, a request body, a text.
max_len() {
    case $1 in
    fuzz_gguf | fuzz_safetensors | fuzz_peft) echo 65536 ;;
    fuzz_request | fuzz_api) echo 16384 ;;
    *) echo 4096 ;;
    esac
}
dict() {
    case $1 in
    fuzz_request | fuzz_api | fuzz_peft | fuzz_safetensors) echo "-dict=$here/json.dict" ;;
    fuzz_gguf) echo "-dict=$here/gguf.dict" ;;
    esac
}

fail=0
for t in "$@"; do
    inputs=$(find "$here/regress/$t" -type f ! -name '.*' ! -name 'README*' 2>/dev/null | sort)
    [ -z "$inputs" ] && continue
    n=$(echo "$inputs" | wc -l)
    # shellcheck disable=SC2086
    if "$dir/$t" -rss_limit_mb=2048 -timeout=10 $inputs >"$dir/$t.regress.log" 2>&1; then
        echo "$t: $n regression inputs replayed"
    else
        echo "$t: a regression input fails again ($dir/$t.regress.log):"
        grep -E "^Running: " "$dir/$t.regress.log" | tail -1
        tail -n 3 "$dir/$t.regress.log"
        fail=1
    fi
done
[ $fail -eq 0 ] || exit 1

# One target's run; its exit status and log go to files for the summary.
one() {
    local t=$1 corpus="$dir/corpus-$1" art="$dir/artifacts/$1/"
    mkdir -p "$corpus" "$art"
    cp -n "$here/corpus/$t"/* "$corpus/" 2>/dev/null
    # shellcheck disable=SC2046
    "$dir/$t" -max_total_time="$secs" -max_len="$(max_len "$t")" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$art" $(dict "$t") \
        "$corpus" >"$dir/$t.log" 2>&1
    echo $? >"$dir/$t.status"
}

start=$(date +%s)
running=0
for t in "$@"; do
    if [ $running -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
    echo "$t: fuzzing for ${secs}s"
    one "$t" &
    running=$((running + 1))
done
wait

# What went wrong, as the sanitizers and libFuzzer say it.
crash_re='ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-z-]+'
crash_re="$crash_re|FUZZ_CHECK\\(.*\\) failed|runtime error: .*"
failures=""
printf '%-18s %9s %8s %6s %6s  %s\n' target runs exec/s cov ft result
for t in "$@"; do
    log="$dir/$t.log" status=$(cat "$dir/$t.status")
    runs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    eps=$(grep -m1 '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
    last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1)
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    result=ok
    if [ "$status" -ne 0 ]; then
        fail=1
        what=$(grep -m1 -oE "$crash_re" "$log")
        repro=$(grep -m1 -oE "Test unit written to [^ ]+" "$log" | sed 's/.* to //')
        result="FAILED: ${what:-exit status $status}"
        failures="$failures$t: ${what:-exit status $status}
    reproduce: $dir/$t ${repro:-(no input written)}
    log:       $log
"
    fi
    printf '%-18s %9s %8s %6s %6s  %s\n' "$t" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" \
        "$result"
done
echo "fuzzing took $(( $(date +%s) - start ))s"
if [ -n "$failures" ]; then
    printf '\n%s' "$failures"
    echo "Once fixed, copy each input into tests/fuzz/regress/TARGET/ (make fuzz replays them)."
fi
exit $fail
