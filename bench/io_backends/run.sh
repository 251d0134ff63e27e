#!/usr/bin/env bash
# Cold small random reads: preadv() on a thread pool versus io_uring (see read_depth.cpp).
#
# usage: bench/io_backends/run.sh [FILE]
#   FILE  a large file to read (at least a few GiB, so the reads are spread out). Without
#         one, a 4 GiB file of pseudo-random bytes is written under $IOB_DIR and deleted
#         at the end. The file is evicted from the page cache before every run.
#
# Environment (defaults in brackets):
#   IOB_DIR [/tmp/iob]        build output, scratch file, raw results
#   REPS [3]                  repetitions of the whole matrix; the table shows the best
#   READS [80000]             reads per run (same offsets for every backend: fixed seed)
#   SIZES ["2050 4096"]       read sizes: 1024 uint16 tokens + 1, and a 4 KiB row
#   DEPTHS ["1 8 32 64"]      reads in flight for the "stream" configurations
#   BACKENDS ["pool uring sqpoll"]  (also: uring-async, see read_depth.cpp)
#   SPINNERS [2]              busy-loop processes for the extra "loaded" phase (0: skip it)
#
# Every run is one line of key=value pairs in $IOB_DIR/results.txt; the summary table is
# printed at the end (best reads/s of the repetitions; CPU of that run).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
IOB_DIR=${IOB_DIR:-/tmp/iob}
REPS=${REPS:-3}
READS=${READS:-80000}
SIZES=${SIZES:-"2050 4096"}
DEPTHS=${DEPTHS:-"1 8 32 64"}
BACKENDS=${BACKENDS:-"pool uring sqpoll"}
SPINNERS=${SPINNERS:-2}
mkdir -p "$IOB_DIR"
bin=$IOB_DIR/read_depth
results=$IOB_DIR/results.txt
: >"$results"

g++ -O2 -std=c++17 -Wall -Wextra -pthread "$here/read_depth.cpp" -o "$bin"

file=${1:-}
created=""
spinner_pids=()
cleanup() {
  for pid in "${spinner_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n $created ]]; then rm -f "$created"; fi
}
trap cleanup EXIT
if [[ -z $file ]]; then
  file=$IOB_DIR/data.bin
  created=$file
  echo "writing a 4 GiB test file: $file"
  "$bin" --create "$file" --bytes $((4 << 30))
fi

echo "== machine: $(nproc) CPUs, kernel $(uname -r), $(findmnt -no SOURCE,FSTYPE --target "$file")"
dev=$(basename "$(findmnt -no SOURCE --target "$file")")
if [[ -r /sys/block/$dev/queue/scheduler ]]; then
  echo "   $dev: scheduler $(cat /sys/block/$dev/queue/scheduler), nr_requests $(cat /sys/block/$dev/queue/nr_requests)," \
    "read_ahead_kb $(cat /sys/block/$dev/queue/read_ahead_kb)"
fi
echo "== io_uring_disabled sysctl: $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo absent)"
"$bin" --probe || true
uring_ok=1
"$bin" --probe | grep -q '^io_uring: permitted' || uring_ok=0
if [[ $uring_ok == 0 ]]; then BACKENDS=pool; fi
sqpoll_ok=1
"$bin" --probe | grep -q '^io_uring SQPOLL: permitted' || sqpoll_ok=0
if [[ $sqpoll_ok == 0 ]]; then BACKENDS=${BACKENDS/sqpoll/}; fi

# Eviction check: a warm run leaves pages cached, the next (evicting) run must start at 0.
echo "== eviction check"
"$bin" --file "$file" --backend pool --depth 64 --reads 20000 --label warmup | tee -a "$results"
"$bin" --file "$file" --backend pool --depth 64 --reads 20000 --no-evict --label hot | tee -a "$results"
"$bin" --file "$file" --backend pool --depth 64 --reads 20000 --label cold | tee -a "$results"

# Configurations: "stream D" keeps D reads in flight (pool: D threads on one atomic counter,
# D = 64 is the raw "pread at depth 64" a 64-thread pool does); "batch 32/T" issues 32 reads,
# waits for all, repeats (pool: the engine's queue on T threads, T = 64 is the engine's
# default size).
configs=()
for depth in $DEPTHS; do configs+=("stream $depth $depth"); done
configs+=("batch 32 32" "batch 32 64")

# Rotate the backend order every repetition, so that drift (other load on the box, the
# host's cache) hits every backend alike.
rotate() {
  local shift=$1; shift
  local items=("$@") n=$# i
  for ((i = 0; i < n; ++i)); do printf '%s ' "${items[(i + shift) % n]}"; done
}

run_matrix() {  # phase label, sizes, config list (name depth threads;...)
  local phase=$1 sizes=$2 rep size config mode depth threads backend
  shift 2
  for ((rep = 0; rep < REPS; ++rep)); do
    for size in $sizes; do
      for config in "$@"; do
        read -r mode depth threads <<<"$config"
        # shellcheck disable=SC2046
        for backend in $(rotate $((rep + depth)) $BACKENDS); do
          "$bin" --file "$file" --backend "$backend" --mode "$mode" --size "$size" --depth "$depth" \
            --threads "$threads" --reads "$READS" --label "$phase" | tee -a "$results"
        done
      done
    done
  done
}

echo "== cold runs, box as it is (other work may run: load1 and machine_busy_pct are in each line)"
run_matrix base "$SIZES" "${configs[@]}"

if ((SPINNERS > 0)); then
  # A loaded box: the trainer and the loader's other threads compete for the 2 CPUs. A
  # 64-thread pool gets a bigger share of CPU under CFS than one io_uring thread does.
  echo "== loaded: $SPINNERS busy-loop processes"
  for ((i = 0; i < SPINNERS; ++i)); do
    bash -c 'while :; do :; done' &
    spinner_pids+=($!)
  done
  REPS=2 run_matrix loaded 2050 "stream 64 64" "batch 32 64"
  for pid in "${spinner_pids[@]}"; do kill "$pid"; done
  spinner_pids=()
fi

echo
echo "== summary: best reads/s of the repetitions (CPU us/read and p99 latency of that run)"
awk '
  /^label=/ {
    delete f
    for (i = 1; i <= NF; ++i) { split($i, kv, "="); f[kv[1]] = kv[2] }
    if (f["label"] != "base" && f["label"] != "loaded") next
    key = f["label"] " " f["size"] " " f["mode"] " " f["depth"] " " f["threads"]
    if (!(key in order)) { order[key] = ++n; keys[n] = key }
    b = f["backend"]; backends[b] = 1
    if (f["reads_per_s"] + 0 > best[key, b] + 0) {
      best[key, b] = f["reads_per_s"]; cpu[key, b] = f["cpu_us_per_read"]; p99[key, b] = f["lat_p99_us"]
    }
  }
  END {
    nb = split("pool uring sqpoll uring-async", bl, " ")
    printf "%-7s %5s %-6s %5s %7s |", "phase", "size", "mode", "depth", "threads"
    for (j = 1; j <= nb; ++j) if (bl[j] in backends) printf " %24s |", bl[j] " reads/s (cpu us, p99)"
    printf " uring/pool\n"
    for (i = 1; i <= n; ++i) {
      split(keys[i], k, " ")
      printf "%-7s %5s %-6s %5s %7s |", k[1], k[2], k[3], k[4], k[5]
      for (j = 1; j <= nb; ++j) if (bl[j] in backends)
        printf " %8d (%5.1f, %6d) |", best[keys[i], bl[j]], cpu[keys[i], bl[j]], p99[keys[i], bl[j]]
      if (("uring" in backends) && best[keys[i], "pool"] > 0) printf " %5.2f", best[keys[i], "uring"] / best[keys[i], "pool"]
      printf "\n"
    }
  }' "$results"
echo "(threads: pool threads; io_uring always runs on one thread. raw lines: $results)"
