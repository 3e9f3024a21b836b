# Sourced by the shell benchmarks: builds the release host and the guests,
# and makes "$state", a state dir with the bundled skills and channels and
# two fixtures in its folder (12 components, none granted).
cargo build --release --quiet
(cd skills-wasm && CARGO_TARGET_DIR=../target/wasm cargo build --release --quiet --target wasm32-wasip2)
state="$(mktemp -d)"
mkdir -p "$state/skills"
for c in clock notes web_fetch weather hostile future_skill telegram slack whatsapp webhook discord matrix; do
  cp "target/wasm/wasm32-wasip2/release/$c.wasm" "$state/skills/" 2>/dev/null || true
done
printf '[gateway]\nbind = "127.0.0.1:0"\n[agent]\nollama_url = "http://127.0.0.1:1"\n' > "$state/config.toml"
