#!/usr/bin/env bash
# Where the release binary's bytes go: its stripped size, and the code and
# data of its symbols grouped by crate (from `nm` on an unstripped link,
# like cargo-bloat's --crates). Generic code is counted where it was
# instantiated's owner says (core/alloc/std for most of it). Prints figures
# only. WASICLAW_TARGET=aarch64-unknown-linux-gnu measures the ARM build.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${WASICLAW_TARGET:-}"
dir=target/release
args=(--release --quiet)
if [ -n "$target" ]; then
  dir="target/$target/release"
  args+=(--target "$target")
fi
# Only the link differs from the release profile: keep the symbols.
CARGO_PROFILE_RELEASE_STRIP=none cargo build "${args[@]}"
unstripped="$(mktemp)"
trap 'rm -f "$unstripped" "$unstripped.s"' EXIT
cp "$dir/wasiclaw" "$unstripped"
strip_bin=strip
[ -n "$target" ] && command -v aarch64-linux-gnu-strip >/dev/null && strip_bin=aarch64-linux-gnu-strip
"$strip_bin" -o "$unstripped.s" "$unstripped"
size="$(stat -c %s "$unstripped.s")"
echo "stripped binary${target:+ ($target)}: $((size / 1024)) KiB ($(python3 -c "print(f'{$size/1e6:.1f}')") MB)"
nm_bin=nm
[ -n "$target" ] && command -v aarch64-linux-gnu-nm >/dev/null && nm_bin=aarch64-linux-gnu-nm
"$nm_bin" -S --size-sort -C "$unstripped" | python3 -c '
import re, sys
from collections import Counter
by_crate = Counter()
total = 0
for line in sys.stdin:
    parts = line.split(None, 3)
    if len(parts) < 4:
        continue
    size, name = int(parts[1], 16), parts[3].strip()
    total += size
    # <T as Trait>::f belongs to T; then the first path segment is the crate.
    m = re.match(r"<+&?(?:mut |dyn )?([A-Za-z_][A-Za-z0-9_]*)", name) if name.startswith("<") else None
    crate = m.group(1) if m else re.split(r"::|<|\s|\.", name, 1)[0] or "?"
    if not re.match(r"^[a-z_][a-z0-9_]*$", crate):
        crate = "[other symbols]"
    by_crate[crate] += size
print(f"symbols: {total // 1024} KiB in all")
print("%-32s %8s %7s" % ("crate", "KiB", "share"))
for crate, size in by_crate.most_common(25):
    print(f"{crate:<32} {size // 1024:>8} {100 * size / total:>6.1f}%")
rest = sum(s for c, s in by_crate.most_common()[25:])
print("%-32s %8d %6.1f%%" % ("(the rest)", rest // 1024, 100 * rest / total))
'
