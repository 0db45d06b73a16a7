//! Run-time choice of the instruction set for the native encoder's own loops (layer norm, GELU,
//! softmax, attention, the few-row products): the binary is built for a baseline (AVX2), and a
//! kernel run through [`vectorized`] is compiled a second time with AVX-512 enabled and takes
//! that copy on CPUs that have it. `gemm` dispatches its matrix products the same way.
//!
//! The work is done by `pulp`, whose dispatch calls the kernel from inside a function compiled
//! with the wider target features. Only code inlined there is compiled for them, so a kernel is
//! passed as an `#[inline(always)]` closure, and the helpers it calls are `#[inline(always)]`
//! too; otherwise the call lands in the baseline copy (nothing breaks, nothing is gained).

/// Runs `kernel` compiled for the widest vector instruction set this CPU has (AVX-512, else
/// AVX2/FMA, else the baseline). Detection is cached by the standard library after the first
/// call; the choice costs a few loads.
#[inline(always)]
pub(crate) fn vectorized<R>(kernel: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(kernel)
}

/// Which copy [`vectorized`] runs on this CPU, for reports: "avx512", "avx2" or "scalar".
pub(crate) fn instruction_set() -> &'static str {
    match pulp::Arch::new() {
        #[cfg(target_arch = "x86_64")]
        pulp::Arch::V4(_) => "avx512",
        #[cfg(target_arch = "x86_64")]
        pulp::Arch::V3(_) => "avx2",
        _ => "scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_gives_the_same_result_in_every_copy() {
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let plain: f32 = values.iter().map(|value| value * 2.0).sum();
        let dispatched: f32 = vectorized(
            #[inline(always)]
            || values.iter().map(|value| value * 2.0).sum(),
        );
        assert_eq!(plain, dispatched, "a sequential sum keeps its order");
        assert!(["avx512", "avx2", "scalar"].contains(&instruction_set()));
    }
}
