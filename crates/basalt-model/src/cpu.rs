//! Which CPU this is, and what the build asks of it, for benchmark reports.
//!
//! Basalt is built for a baseline (x86-64-v3 by default: AVX2, FMA, F16C, BMI1/2) rather than
//! for the machine that compiled it, so one binary runs on every server of that generation or
//! newer; the hot loops pick wider instructions at run time where the CPU has them (`simd.rs`,
//! `gemm`'s own dispatch). On a CPU below the baseline the binary stops with SIGILL before
//! `main` (llama.cpp's static initializers already use AVX), so it cannot refuse with a message
//! of its own; docs/models.md says how to build for such a machine.

/// The baseline the binary was built for, as the name of the x86-64 micro-architecture level
/// its compile-time features reach ("x86-64-v3"), or "native" when it was tuned beyond one.
pub fn build_baseline() -> &'static str {
    if cfg!(not(target_arch = "x86_64")) {
        return std::env::consts::ARCH;
    }
    let v2 = cfg!(all(
        target_feature = "sse4.2",
        target_feature = "popcnt",
        target_feature = "ssse3"
    ));
    let v3 = v2
        && cfg!(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "bmi2",
            target_feature = "f16c"
        ));
    let v4 = v3
        && cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl"
        ));
    // Features no level includes mean the build was tuned for one CPU (`target-cpu=native`).
    let beyond = cfg!(any(
        target_feature = "avx512vnni",
        target_feature = "avx512bf16",
        target_feature = "avxvnni",
        target_feature = "gfni",
        target_feature = "vaes",
        target_feature = "sha",
        target_feature = "adx"
    ));
    match (beyond, v4, v3, v2) {
        (true, ..) => "native",
        (_, true, ..) => "x86-64-v4",
        (_, _, true, _) => "x86-64-v3",
        (_, _, _, true) => "x86-64-v2",
        _ => "x86-64",
    }
}

/// What this machine's CPU is and offers, for benchmark reports: the model name the kernel
/// reports and the vector extensions that decide which kernels run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    pub model_name: String,
    /// Run-time detected: `avx2`, `avx512f`, `avx512vnni`, `avx512bf16`, `amx-tile` … (those
    /// present).
    pub features: Vec<&'static str>,
    /// Which copy of the native encoder's own loops runs here: "avx512", "avx2" or "scalar".
    pub encoder_kernels: &'static str,
}

impl CpuInfo {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim())
        };
        let model_name =
            field("model name").map_or_else(|| std::env::consts::ARCH.to_owned(), str::to_owned);
        let mut features = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            macro_rules! detect {
                ($($feature:tt),* $(,)?) => {
                    $( if std::arch::is_x86_feature_detected!($feature) { features.push($feature); } )*
                };
            }
            detect!(
                "avx2",
                "fma",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vnni",
                "avx512bf16",
                "avxvnni"
            );
            // AMX is not yet detectable through std on stable Rust; the kernel lists it.
            let flags = field("flags").unwrap_or_default();
            for (flag, name) in [("amx_tile", "amx-tile"), ("amx_int8", "amx-int8")] {
                if flags.split_whitespace().any(|word| word == flag) {
                    features.push(name);
                }
            }
        }
        CpuInfo {
            model_name,
            features,
            encoder_kernels: crate::simd::instruction_set(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_build_is_portable() {
        // `.cargo/config.toml` builds for x86-64-v3; `BASALT_NATIVE=1` (opt-in) tunes for the
        // build machine and is reported as such.
        if std::env::var_os("BASALT_NATIVE").is_none() && cfg!(target_arch = "x86_64") {
            assert_eq!(build_baseline(), "x86-64-v3");
        }
    }
}
