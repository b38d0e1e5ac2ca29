#!/bin/sh
# Side-by-side launch->exit of `cvbench-workload noop`: crun, runc and cvbench-runtime, with
# hyperfine, as root. crun 1.8 refuses "hybrid" cgroups while /sys/fs/cgroup/unified offers a
# controller (hugetlb on this machine), so the whole comparison runs in a private mount
# namespace where that empty cgroup2 mount is unmounted (the host is not changed).
#   usage: runtime/scripts/noop-vs-peers.sh [RUNS]   (env CVBENCH_RUNTIME, CVBENCH_WORKLOAD)
set -eu
RUNS=${1:-60}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
RT=${CVBENCH_RUNTIME:-/work/targets/runtime/release/cvbench-runtime}
WL=${CVBENCH_WORKLOAD:-$REPO/workload/target/release/cvbench-workload}
if [ "${CVBENCH_IN_NS:-}" != 1 ]; then
  CVBENCH_IN_NS=1 exec unshare -m --propagation private "$0" "$@"
fi
umount /sys/fs/cgroup/unified 2>/dev/null || true
WORK=$(mktemp -d /tmp/cvbench-noop-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bundle/rootfs" "$WORK/state"
cp "$WL" "$WORK/bundle/rootfs/cvbench-workload"
cd "$WORK/bundle"
crun spec
python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["/cvbench-workload", "noop"]
json.dump(c, open("config.json", "w"))
PY
"$RT" --root "$WORK/state" image default "$WL"
hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$WORK/h.json" \
  "crun run cvbench-bench-crun-$$" "runc run cvbench-bench-runc-$$" \
  "$RT --root $WORK/state run-image -- /cvbench-workload noop" >/dev/null
python3 - "$WORK/h.json" <<'PY'
import json, statistics, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(r["times"])
    print(f"{r['command'].split()[0].split('/')[-1]:<16} median {statistics.median(t)*1e3:6.2f} ms"
          f"  min {t[0]*1e3:6.2f}  p90 {t[int(len(t)*0.9)]*1e3:6.2f}  (n={len(t)})")
PY
