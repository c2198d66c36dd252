#!/bin/sh
# paired.sh REV PKG BENCH COUNT [PATCH]: compares the work tree with commit
# REV on this machine, whose speed moves from hour to hour: builds PKG's
# test binary of both (REV from `git archive` in a temporary directory,
# with PATCH applied to it if given: a benchmark's instrumentation that REV
# lacks, printed below), then runs the benchmarks matching BENCH COUNT
# times each, alternating REV and the work tree, with -benchmem -benchtime
# 2s. Run it through record.sh to keep its output.
set -eu
rev=$1 pkg=$2 bench=$3 count=$4 patch=${5:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/base"
git -C "$root" archive "$rev" | tar -x -C "$tmp/base"
if [ -n "$patch" ]; then
	echo "base patched with $patch:"
	cat "$root/$patch"
	patch -s -d "$tmp/base" -p1 <"$root/$patch"
fi
(cd "$tmp/base" && go test -c -o "$tmp/base.test" "./$pkg")
(cd "$root" && go test -c -o "$tmp/work.test" "./$pkg")
echo "base: $(git -C "$root" rev-parse --short "$rev"); work: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- . ':!docs' || echo ' (plus uncommitted changes)')"
cd "$root/$pkg"
i=1
while [ "$i" -le "$count" ]; do
	for t in base work; do
		echo "== $t, run $i, load $(cut -d' ' -f1 /proc/loadavg)"
		"$tmp/$t.test" -test.run XXX -test.bench "$bench" -test.benchmem -test.benchtime 2s 2>&1 | grep -E '^(Benchmark|ok|FAIL|panic)' || true
	done
	i=$((i + 1))
done
