#!/bin/sh
# Renders the sample success and failure emails with headless Chromium and prints where the
# screenshots are, for a person to look at after changing src/notify/email.rs.
# Needs chromium (Debian: apt-get install -y chromium).
set -eu
cd "$(dirname "$0")/.."
cargo test --test integration email_render -- --nocapture 2>&1 | grep -E '^rendered |test result|panicked' || true
ls -l target/email-samples/*.png
