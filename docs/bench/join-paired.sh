#!/bin/sh
# join-paired.sh REV ITEMS COUNT: a new node joining a catalog of ITEMS
# items ("testnet join"), with the crdt-catalog binary of commit REV and of
# the work tree, alternating, COUNT times each. The binary under test
# serves both nodes. The state file is built once, by the work tree's
# harness, in $TMPDIR/crdt-testnet-join. Run it through record.sh to keep
# its output.
set -eu
rev=$1 items=$2 count=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
git -C "$root" archive "$rev" | tar -x -C "$tmp/src"
(cd "$tmp/src" && go build -o "$tmp/base.bin" ./cmd/crdt-catalog)
(cd "$root" && go build -o "$tmp/work.bin" ./cmd/crdt-catalog && go build -o "$tmp/testnet" ./testnet/cmd/testnet)
echo "base: $(git -C "$root" rev-parse --short "$rev"); work: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- . ':!docs' || echo ' (plus uncommitted changes)')"
i=1
while [ "$i" -le "$count" ]; do
	for t in base work; do
		echo "== $t, run $i, load $(cut -d' ' -f1-3 /proc/loadavg)"
		"$tmp/testnet" join -items "$items" -bin "$tmp/$t.bin" 2>&1 | grep -E '^(items|testnet:)' || true
	done
	i=$((i + 1))
done
