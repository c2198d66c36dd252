#!/bin/sh
# record.sh NAME COMMAND...: runs COMMAND from the repository root and writes
# what it prints, preceded by the date, the commit, the machine and its load,
# to docs/bench/NAME.txt (and to the terminal). docs/BENCHMARKS.md cites
# these files; commit the file with the table row it backs.
set -eu
name=$1; shift
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/docs/bench/$name.txt"
cd "$root"
{
	echo "\$ $*"
	echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo ' (plus uncommitted changes)')"
	echo "machine: nproc=$(nproc) cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)\" $(go env GOOS)/$(go env GOARCH) $(go version | cut -d' ' -f3)"
	echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
	"$@" 2>&1
	echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
