#!/usr/bin/env bash
# Tokens a turn carries before any history: the persona and rules, the
# system prompt and each approved skill's tool definitions, as `/context`
# estimates them (characters / 4), and the whole request's JSON ("as
# sent"). Every bundled skill and the example fixtures are approved.
# Prints figures only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${WASICLAW_BIN:-target/release/wasiclaw}"
[ -x "$bin" ] || cargo build --release --quiet
(cd skills-wasm && CARGO_TARGET_DIR=../target/wasm cargo build --release --quiet --target wasm32-wasip2)
state="$(mktemp -d)"
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/skills"
skills=(clock notes web_fetch weather minimal legacy_skill)
for c in "${skills[@]}"; do cp "target/wasm/wasm32-wasip2/release/$c.wasm" "$state/skills/"; done
# A provider that is never asked: `/context` sizes the request it would get.
printf '[[providers]]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "m"\n' > "$state/config.toml"
claw() { "$bin" --state-dir "$state" "$@"; }
for name in clock notes web-fetch weather hello legacy; do
  claw skills grant "$name" --all-requested >/dev/null 2>&1 || claw skills approve "$name" >/dev/null
done
echo "approved skills: ${#skills[@]} (${skills[*]})"
echo "/context" | claw chat 2>/dev/null | grep -v '^$'
