#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: installs what a fresh machine
# lacks, then rustfmt, clippy (warnings are errors), unit tests and the end-to-end tests
# against a real PostgreSQL primary, two streaming replicas and Redis started by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test -p causeway
cargo test -p integration-tests -- --test-threads="${CAUSEWAY_TEST_THREADS:-4}"
