#!/usr/bin/env bash
# Throughput, latency, CPU and memory of the real recorder against the simulator over loopback.
#
#   scripts/bench.sh                 # the standard run (about 3.5 minutes)
#   scripts/bench.sh 10k 3k          # only the cases named
#   BENCH_RSS_SECONDS=600 scripts/bench.sh rss   # the 10-minute flat-memory run
#   BENCH_SPLIT=1 scripts/bench.sh 10k   # simulator held to CPU 0, recorder to CPU 1
#   scripts/bench.sh burst market    # the lose-nothing cases (about 4 minutes); not in the standard run
#   BENCH_BIN=/path/to/obrec scripts/bench.sh burst   # another build (an older one) to compare
#
# Cases (one symbol, partial depth 10: ~600-byte frames, ~880-byte lines):
#   max     the simulator as fast as the recorder reads, --gzip-level 1, BENCH_SECONDS (30)
#   250k    a fixed 250,000 events/s, --gzip-level 1, BENCH_SECONDS
#   gzip    the same line bytes through `gzip -1` alone: the bare compressor's ceiling
#   replay  `obrec replay` of that recording against plain decompression (zcat) of the same file
#   10k     pipeline latency at 10,000 events/s
#   3k      CPU at 3,000 events/s (a whole market's worth)
#   rss     peak memory at 20,000 events/s over BENCH_RSS_SECONDS (60)
#   kinds   as max, with trade, aggTrade and bookTicker recorded beside the depth (two routes)
#   mixed   a fixed 50,000 depth events/s with those streams beside it, BENCH_SECONDS
#   burst   1,000,000 frames (BENCH_BURST_FRAMES) sent unpaced into a recorder at its defaults:
#           frames lost, readers' wait, peak queue bytes, gzip members by level, peak RSS
#   market  a whole market: BENCH_SYMBOLS (500) symbols, partial depth 10 @100ms, trade, aggTrade,
#           bookTicker and markPrice@1s, 6 events/s per symbol (3,000 depth events/s, the whole
#           USD-M market's), then 10x for 60 s after BENCH_STEADY (60) s, then BENCH_STEADY s
#           again: events/s, drops, breaks, CPU and RSS per phase, pipeline p99
# Events counted are depth events plus every event beside the book.
# The simulator runs on the same 2 cores, so every figure includes its competition.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${BENCH_SECONDS:-30}
RSS_SECONDS=${BENCH_RSS_SECONDS:-60}
SIM_CPU=() REC_CPU=()
if [ -n "${BENCH_SPLIT:-}" ]; then SIM_CPU=(taskset -c 0) REC_CPU=(taskset -c 1); fi
cargo build --release --quiet
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/obrec}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# start_sim DIR ARGS...: starts the simulator with ARGS in the background as $SIM, and waits for
# its port, in DIR/port.
start_sim() {
  local dir=$1
  shift
  "${SIM_CPU[@]}" "$BIN" sim "$@" --port-file "$dir/port" >"$dir/sim.log" 2>&1 &
  SIM=$!
  # The simulator writes its port once it listens; if it dies first, say why instead of waiting.
  while [ ! -s "$dir/port" ]; do
    if ! kill -0 "$SIM" 2>/dev/null; then
      echo "bench: the simulator did not start:" >&2
      cat "$dir/sim.log" >&2
      exit 1
    fi
    sleep 0.05
  done
}

# record DIR ARGS...: starts the recorder against the simulator of DIR in the background as $REC.
record() {
  local dir=$1
  shift
  "${REC_CPU[@]}" "$BIN" record --endpoint "ws://127.0.0.1:$(cat "$dir/port")" \
    --data-dir "$dir/data" --log-dir "$dir/logs" "$@" >"$dir/record.log" 2>&1 &
  REC=$!
}

# run NAME RATE LEVEL SECONDS [STREAMS]: records; leaves metrics in $WORK/NAME and prints a
# summary line.
run() {
  local name=$1 rate=$2 level=$3 secs=$4 streams=${5:-depth} dir=$WORK/$1
  mkdir -p "$dir"
  start_sim "$dir" --symbol BTCUSDT --rate "$rate"
  local sim=$SIM minutes
  minutes=$(python3 -c "print($secs / 60)")
  record "$dir" --symbol BTCUSDT --depth 10 --gzip-level "$level" --streams "$streams" \
    --run-minutes "$minutes" --print-interval 5
  local rec=$REC cpu=0 rss=0 sample
  # Sample CPU ticks and peak RSS until the recorder exits.
  while sample=$(awk '{print $14 + $15}' "/proc/$rec/stat" 2>/dev/null) &&
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$rec/status" 2>/dev/null) && [ -n "$rss" ]; do
    cpu=$sample; echo "$cpu $rss" >"$dir/proc"
    # Per thread: id, name, CPU ticks, context switches (threads end before the process does).
    # One awk for all of them: the sampling must not cost the cores it measures.
    awk 'FNR == 1 { split(FILENAME, p, "/"); tid = p[5] }
         FILENAME ~ /stat$/ { name[tid] = substr($2, 2, length($2) - 2); ticks[tid] = $14 + $15 }
         /ctxt_switches/ { sw[tid] += $2 }
         END { for (t in name) print t, name[t], ticks[t], sw[t] }' \
      /proc/$rec/task/*/stat /proc/$rec/task/*/status 2>/dev/null >>"$dir/threads" || true
    sleep 0.5
  done
  wait $rec || true
  kill $sim 2>/dev/null; wait $sim 2>/dev/null || true
  python3 - "$dir" "$(getconf CLK_TCK)" "$name" <<'EOF'
import json, sys, glob, gzip, os
d, hz, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = json.load(open(f"{d}/data/order_book/metrics.json"))
cpu_ticks, rss_kb = map(int, open(f"{d}/proc").read().split())
raw = sum(len(l) for f in glob.glob(f"{d}/data/order_book/*.ndjson.gz") for l in gzip.open(f, "rb"))
beside = sum(s["messages"] for s in m.get("streams", {}).values())
gaps = sum(s["breaks"] for s in m.get("streams", {}).values())
n, t = m["total_messages"] + beside, m["runtime_seconds"]
cpu = cpu_ticks / hz
drops = m["log_queue"]["drops"] + sum(s["drops"] for s in m.get("streams", {}).values())
print(f"{name:>5}: {n / t:>9,.0f} events/s recorded  drops={drops:<8} "
      f"reconnects={m['continuity']['reconnects']}  "
      + (f"({beside / t:,.0f}/s beside the book, gaps={gaps})  " if beside else "")
      + f"{raw / t / 1e6:6.1f} MB/s of lines  ratio {raw / max(m['bytes_written'], 1):.2f}  "
      f"pipeline p50={m['pipeline_us']['p50']:.0f}us p99={m['pipeline_us']['p99']:.0f}us  "
      f"cpu {cpu / t * 100:5.1f}% of a core = {cpu / max(n, 1) * 1e6:.2f} s per M events  "
      f"peak RSS {rss_kb / 1024:.1f} MB")
latest = {}
for row in open(f"{d}/threads"):
    parts = row.split()
    if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
        latest[parts[0]] = (parts[1], int(parts[2]), int(parts[3]))
threads = {}
for name, tick, switch in latest.values():
    ticks, switches = threads.get(name, (0, 0))
    threads[name] = (ticks + tick, switches + switch)
print("        threads: " + ", ".join(
    f"{name} {ticks / hz / t * 100:.1f}% ({switches / max(n, 1):.2f} switches/event)"
    for name, (ticks, switches) in sorted(threads.items(), key=lambda kv: -kv[1][0])
    if ticks or switches > 100))
EOF
}

CASES=${*:-250k max gzip replay 10k 3k rss kinds mixed}
KINDS=depth,trade,aggTrade,bookTicker
wanted() { [[ " $CASES " == *" $1 "* ]]; }

# Sustained first, before the max case fills the page cache with gigabytes of lines.
if wanted 250k; then run 250k 250000 1 "$SECONDS_RUN"; fi
if wanted max || wanted gzip || wanted replay; then run max max 1 "$SECONDS_RUN"; fi
if wanted gzip; then
# The bare compressor on the same line bytes.
LINES=$WORK/lines.ndjson
zcat "$WORK"/max/data/order_book/*.ndjson.gz >"$LINES"
python3 - "$LINES" <<'EOF'
import subprocess, sys, time, os
path = sys.argv[1]
size = os.path.getsize(path)
lines = sum(1 for _ in open(path, "rb"))
start = time.perf_counter()
subprocess.run(["gzip", "-1", "-c", path], stdout=subprocess.DEVNULL, check=True)
secs = time.perf_counter() - start
print(f" gzip: {lines / secs:>9,.0f} lines/s  gzip -1 alone on the same {size / 1e6:.0f} MB of lines: {size / secs / 1e6:.1f} MB/s")
EOF
rm -f "$LINES"
fi
# Replay against bare decompression of the same file.
if wanted replay; then
python3 - "$BIN" "$WORK"/max/data/order_book/*.ndjson.gz <<'EOF'
import subprocess, sys, time
binary, files = sys.argv[1], sys.argv[2:]
def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start
out = subprocess.run(["zcat", *files], capture_output=True, check=True).stdout
lines, size = out.count(b"\n"), len(out)
zcat, replay = timed(["zcat", *files]), timed([binary, "replay", *files])
print(f"replay: {lines / replay:>9,.0f} lines/s  {size / replay / 1e6:.0f} MB/s of lines; "
      f"zcat alone {lines / zcat:,.0f} lines/s  {size / zcat / 1e6:.0f} MB/s")
EOF
fi
if wanted 10k; then run 10k 10000 3 10; fi
if wanted 3k; then run 3k 3000 3 20; fi
if wanted rss; then run rss 20000 3 "$RSS_SECONDS"; fi
if wanted kinds; then run kinds max 1 "$SECONDS_RUN" "$KINDS"; fi
if wanted mixed; then run mixed 50000 1 "$SECONDS_RUN" "$KINDS"; fi

# monitor PID DIR [FRAMES]: once a second until PID exits, appends to DIR/timeline the elapsed
# seconds, events recorded (depth and beside the book), drops, CPU seconds and resident MB of
# PID; with FRAMES, stops PID (SIGTERM) once FRAMES events are recorded or dropped, or once the
# count has not moved for 15 s. Writes PID's peak RSS (VmHWM) in MB to DIR/peak at the end.
monitor() {
  python3 - "$@" <<'EOF'
import json, os, signal, sys, time
pid, d = int(sys.argv[1]), sys.argv[2]
frames = int(sys.argv[3]) if len(sys.argv) > 3 else None
hz = os.sysconf("SC_CLK_TCK")
start, moved, last, peak = time.time(), time.time(), -1, 0
with open(f"{d}/timeline", "w") as out:
    while True:
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            break
        if stat[0] == "Z":
            break
        cpu = (int(stat[11]) + int(stat[12])) / hz
        kb = {l.split(":")[0]: int(l.split()[1]) for l in status.splitlines() if l.startswith("Vm")}
        peak = max(peak, kb.get("VmHWM", 0))
        try:
            m = json.load(open(f"{d}/data/order_book/metrics.json"))
        except (OSError, ValueError):
            m = None
        if m:
            n = m["total_messages"] + sum(s["messages"] for s in m.get("streams", {}).values())
            drops = m["log_queue"]["drops"] + sum(s["drops"] for s in m.get("streams", {}).values())
            now = time.time()
            out.write(f"{now - start:.1f} {n} {drops} {cpu:.2f} {kb.get('VmRSS', 0) / 1024:.1f}\n")
            out.flush()
            if n + drops != last:
                moved, last = now, n + drops
            if frames and (n + drops >= frames or (n and now - moved > 15)):
                os.kill(pid, signal.SIGTERM)
                frames = None
        time.sleep(1)
open(f"{d}/peak", "w").write(f"{peak / 1024:.1f}\n")
EOF
}

# The lose-nothing cases: an unpaced burst, and a whole market with a 10x spell.
if wanted burst; then
  frames=${BENCH_BURST_FRAMES:-1000000} dir=$WORK/burst
  mkdir -p "$dir"
  # --stall-after: the connection sends exactly that many frames, then only answers pings, and
  # --stale-sec keeps the recorder from replacing it for more.
  start_sim "$dir" --symbol BTCUSDT --rate max --stall-after "$frames"
  record "$dir" --symbol BTCUSDT --depth 10 --stale-sec 3600 --print-interval 1
  monitor "$REC" "$dir" "$frames"
  wait "$REC" || true
  kill "$SIM" 2>/dev/null; wait "$SIM" 2>/dev/null || true
  python3 - "$dir" "$frames" <<'EOF'
import json, sys
d, frames = sys.argv[1], int(sys.argv[2])
m = json.load(open(f"{d}/data/order_book/metrics.json"))
rows = [[float(x) for x in r.split()] for r in open(f"{d}/timeline")]
n = m["total_messages"]
first = next(r[0] for r in rows if r[1] > 0)
done = next(r[0] for r in rows if r[1] + r[2] >= rows[-1][1] + rows[-1][2])
q = m.get("queue") or {}
print(f"burst: {frames:,} frames sent unpaced, {n:,} recorded, {frames - n:,} lost "
      f"({(frames - n) / frames * 100:.1f} %), drops={m['log_queue']['drops']}  "
      f"~{n / max(done - first, 1):,.0f} events/s  "
      f"peak RSS {float(open(f'{d}/peak').read()):.0f} MB  pipeline p99={m['pipeline_us']['p99'] / 1e3:.0f} ms\n"
      f"       queue: peak {q.get('peak_bytes', 0) / 2**20:.0f} MiB of {q.get('budget_bytes', 0) / 2**20:.0f} MiB, "
      f"readers waited {q.get('blocked_ms', 0) / 1e3:.1f} s  gzip members by level {m.get('gzip_members', {})}")
EOF
fi
if wanted market; then
  symbols=${BENCH_SYMBOLS:-500} steady=${BENCH_STEADY:-60} dir=$WORK/market
  mkdir -p "$dir"
  list=$(python3 -c "print(','.join(f'S{i:03d}USDT' for i in range($symbols)))")
  start_sim "$dir" --symbol "$list" --rate 6 --burst "$steady:60:10"
  record "$dir" --symbol "$list" --depth 10 --streams depth,trade,aggTrade,bookTicker,markPrice \
    --run-minutes "$(python3 -c "print((2 * $steady + 60) / 60)")" --print-interval 5
  monitor "$REC" "$dir"
  wait "$REC" || true
  kill "$SIM" 2>/dev/null; wait "$SIM" 2>/dev/null || true
  python3 - "$dir" "$steady" "$symbols" <<'EOF'
import json, sys
d, steady, symbols = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
m = json.load(open(f"{d}/data/order_book/metrics.json"))
rows = [[float(x) for x in r.split()] for r in open(f"{d}/timeline")]
beside = sum(s["messages"] for s in m.get("streams", {}).values())
gaps = sum(s["breaks"] for s in m.get("streams", {}).values())
drops = m["log_queue"]["drops"] + sum(s["drops"] for s in m.get("streams", {}).values())
t, cpu = rows[-1][0], rows[-1][3]
q = m.get("queue") or {}
print(f"market: {symbols} symbols, {(m['total_messages'] + beside) / m['runtime_seconds']:,.0f} events/s on average "
      f"({m['total_messages'] / m['runtime_seconds']:,.0f} depth), drops={drops} breaks={m['continuity']['breaks']} "
      f"gaps={gaps} reconnects={m['continuity']['reconnects']}  cpu {cpu / t * 100:.1f}% of a core on average  "
      f"peak RSS {float(open(f'{d}/peak').read()):.0f} MB\n"
      f"        pipeline p50={m['pipeline_us']['p50'] / 1e3:.1f} ms p99={m['pipeline_us']['p99'] / 1e3:.1f} ms "
      f"max={m['pipeline_us']['max'] / 1e3:.0f} ms  queue peak {q.get('peak_bytes', 0) / 2**20:.1f} MiB, "
      f"readers waited {q.get('blocked_ms', 0)} ms  gzip members by level {m.get('gzip_members', {})}")
# The simulator started about a second before the recorder: phases are in the recorder's time.
def phase(name, lo, hi):
    span = [r for r in rows if lo <= r[0] < hi]
    if len(span) < 2:
        return
    a, b = span[0], span[-1]
    secs = b[0] - a[0]
    print(f"  {name:>6} {lo:4.0f}-{hi:4.0f} s: {(b[1] - a[1]) / secs:>8,.0f} events/s  "
          f"cpu {(b[3] - a[3]) / secs * 100:5.1f}% of a core  "
          f"RSS {min(r[4] for r in span):.0f}-{max(r[4] for r in span):.0f} MB")
phase("steady", 5, steady)
phase("10x", steady + 2, steady + 60)
phase("after", steady + 62, 2 * steady + 60)
EOF
fi
