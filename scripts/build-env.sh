# Sourced by setup.sh and test.sh: how Basalt is compiled.
# Portable by default (x86-64-v3, .cargo/config.toml). BASALT_NATIVE=1 tunes Rust and llama.cpp
# for this machine's CPU instead: the binary may then not run on another CPU. llama.cpp's AMX
# kernels crash on Sapphire Rapids, so they stay out even then (docs/models.md).
if [ "${BASALT_NATIVE:-0}" = "1" ] && [ -z "${BASALT_NATIVE_FLAGS_SET:-}" ]; then
    echo "BASALT_NATIVE=1: building for this CPU only (not portable)" >&2
    export BASALT_NATIVE_FLAGS_SET=1
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-cpu=native"
    export CFLAGS="${CFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CXXFLAGS="${CXXFLAGS:-} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
