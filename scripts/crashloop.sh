#!/usr/bin/env bash
# The crash loop: the real recorder killed with SIGKILL over and over into one data dir while the
# simulator streams, then one clean run; then what is on disk is checked against what was sent.
#
#   scripts/crashloop.sh                       # 30 kills at 5,000 events/s (about 2 minutes)
#   CRASHLOOP_KILLS=5 scripts/crashloop.sh     # a shorter loop
#
# Settings: CRASHLOOP_KILLS (30), CRASHLOOP_RATE events/s per symbol over two symbols (2500),
# CRASHLOOP_FLUSH_MS, the recorder's --flush-ms (its default, 1000).
#
# Passes (exit 0) when:
#   * every file is finished (crash recovery took every .part), passes `gzip -t`, and every line
#     is valid JSON; no temporary is left;
#   * no symbol has a `u` recorded twice;
#   * `obrec replay --strict` exits 0: every restart is a reconnect gap, none a break;
#   * every event the simulator sent (its --sent-log) and the files lack was sent within the last
#     flush (plus PIPELINE_MS for the socket, the queue and the write) before a kill.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${CRASHLOOP_KILLS:-30}
RATE=${CRASHLOOP_RATE:-2500}
FLUSH_MS=${CRASHLOOP_FLUSH_MS:-1000}
# Beyond the flush, what a kill can also catch: frames in the socket and the queue, the write.
PIPELINE_MS=300
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/obrec
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${CRASHLOOP_KEEP:-}" ] || rm -rf "$WORK"' EXIT

"$BIN" sim --symbol ETHUSDT,BTCUSDT --rate "$RATE" --port-file "$WORK/port" \
  --sent-log "$WORK/sent.ndjson" >"$WORK/sim.log" 2>&1 &
SIM=$!
while [ ! -s "$WORK/port" ]; do
  if ! kill -0 "$SIM" 2>/dev/null; then
    echo "crashloop: the simulator did not start:" >&2
    cat "$WORK/sim.log" >&2
    exit 1
  fi
  sleep 0.05
done
RECORD=("$BIN" record --symbol ETHUSDT,BTCUSDT --endpoint "ws://127.0.0.1:$(cat "$WORK/port")"
  --data-dir "$WORK/data" --log-dir "$WORK/logs" --flush-ms "$FLUSH_MS" --print-interval 1)

# Runs live 0.2 to 3 s: some are killed while recovering the last one's files or connecting,
# most at every point of a flush cycle.
: >"$WORK/kills"
for ((i = 1; i <= KILLS; i++)); do
  # Started directly, not from a function: $! must be the recorder itself, not a subshell.
  "${RECORD[@]}" >>"$WORK/record.log" 2>&1 &
  rec=$!
  sleep "$(python3 -c "import random; print(random.uniform(0.2, 3.0))")"
  date +%s%N >>"$WORK/kills"
  kill -KILL "$rec"
  wait "$rec" 2>/dev/null || true
done
"${RECORD[@]}" --run-minutes 0.05 >>"$WORK/record.log" 2>&1
date +%s%N >"$WORK/ended"
kill "$SIM"
wait "$SIM" 2>/dev/null || true

set +e
"$BIN" replay --strict "$WORK/data" >"$WORK/replay.out" 2>&1
REPLAY=$?
set -e
BAD_GZIP=0
for f in "$WORK"/data/order_book/*.ndjson.gz; do
  gzip -t "$f" 2>/dev/null || BAD_GZIP=$((BAD_GZIP + 1))
done

python3 - "$WORK" "$FLUSH_MS" "$PIPELINE_MS" "$REPLAY" "$BAD_GZIP" <<'EOF'
import glob, gzip, json, os, sys

work, flush_ms, pipeline_ms, replay, bad_gzip = sys.argv[1], *map(int, sys.argv[2:])
book = os.path.join(work, "data", "order_book")
kills = [int(l) // 1_000_000 for l in open(os.path.join(work, "kills"))]
ended = int(open(os.path.join(work, "ended")).read()) // 1_000_000
failures = []

names = os.listdir(book)
parts = [n for n in names if n.endswith(".part") or n.endswith(".salvage")]
temps = [n for n in names if n.endswith(".tmp")]
damaged = [n for n in names if n.endswith(".damaged")]
if parts or temps:
    failures.append(f"left behind: {parts + temps}")
if bad_gzip:
    failures.append(f"{bad_gzip} files fail gzip -t")

recorded, invalid, duplicated, lines = set(), 0, 0, 0
for path in sorted(glob.glob(os.path.join(book, "*_depth_*.ndjson.gz"))):
    with gzip.open(path, "rt") as f:
        for text in f:
            lines += 1
            try:
                line = json.loads(text)
                key = (line["symbol"], line["u"])
            except (ValueError, KeyError):
                invalid += 1
                continue
            if key in recorded:
                duplicated += 1
            recorded.add(key)
if invalid or duplicated:
    failures.append(f"{invalid} invalid lines, {duplicated} duplicated")

# Each run opens one connection; it ends at the first kill (or the end) after its first event.
# An event stamped just after the kill was taken is still that run's.
frames = [json.loads(text) for text in open(os.path.join(work, "sent.ndjson"))]
first = {}
for frame in frames:
    first.setdefault(frame["conn"], frame["data"]["E"])
ends = kills + [ended]
end_of = {conn: next((e for e in ends if e >= at), ended) for conn, at in first.items()}
sent, lost, late = len(frames), {}, []
for frame in frames:
    data = frame["data"]
    if (data["s"], data["u"]) in recorded:
        continue
    end = end_of[frame["conn"]]
    age = max(end - data["E"], 0)
    lost.setdefault(end, []).append(age)
    if age > flush_ms + pipeline_ms:
        late.append((data["s"], data["u"], age))
if late:
    failures.append(f"{len(late)} events lost more than {flush_ms + pipeline_ms} ms before a "
                    f"kill, e.g. {late[:3]}")
if replay != 0:
    failures.append(f"replay --strict exited {replay}")

tails = [max(ages) for ages in lost.values()]
print(f"kills {len(kills)}, events sent {sent}, lines recorded {lines}, "
      f"lost {sum(len(a) for a in lost.values())} at {len(lost)} kills "
      f"(each at most {max(tails, default=0)} ms before its kill; flush {flush_ms} ms)")
print(f"duplicated {duplicated}, invalid {invalid}, files failing gzip -t {bad_gzip}, "
      f"left .part/.tmp {len(parts) + len(temps)}, .damaged {len(damaged)}")
for l in open(os.path.join(work, "replay.out")):
    if not l.startswith("SUMMARY"):
        print("replay:", l.rstrip())
if failures:
    print("crashloop: FAILED:", "; ".join(failures), file=sys.stderr)
    sys.exit(1)
print("crashloop: ok")
EOF
