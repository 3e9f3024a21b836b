# wasiclaw recipes. `just ci` is what CI runs.

# Build the guest components (skills, SDK, test fixtures) for wasm32-wasip2.
skills:
    cd skills-wasm && CARGO_TARGET_DIR=../target/wasm cargo build --release --target wasm32-wasip2
    @echo "built: target/wasm/wasm32-wasip2/release/*.wasm"

# Build the host binary (release).
build:
    cargo build --release

# The whole test suite (guests are built by the tests themselves).
test:
    cargo test --locked

# Formatting and lints for host and guests.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cd skills-wasm && CARGO_TARGET_DIR=../target/wasm cargo clippy --target wasm32-wasip2 -- -D warnings

# Benchmarks (figures go in BENCHMARKS.md).
bench:
    cargo bench --bench memory
    cargo bench --bench calls
    cargo bench --bench compile
    bash benches/idle.sh 60
    bash benches/ready.sh
    bash benches/tokens.sh
    bash benches/size.sh
    python3 benches/growth.py

# Everything CI does, from a fresh machine.
ci:
    bash .ci/run

# Run the daemon (a first start installs the bundled skills).
run:
    cargo run --release -- run
