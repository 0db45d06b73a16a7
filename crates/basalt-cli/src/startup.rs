//! What the binary does before it parses anything: make llama.cpp's OpenMP workers stop
//! spinning soon after they run out of work, so two Basalt processes (a server and an
//! ingestion, say) share the cores instead of starving each other.

use std::ffi::OsString;

/// How long, in spins, llama.cpp's OpenMP threads busy-wait at a barrier or for the next graph
/// before they sleep (`GOMP_SPINCOUNT`). libgomp's default, 300,000, keeps a waiting thread on a
/// core for a few hundred microseconds; on a machine shared with another busy process, the
/// partner it waits for is often not running, and the spinning holds the core that process
/// needs: two `basalt bench models` side by side decoded 13 and 20 tokens/s instead of about
/// 130 alone. At 1,000 spins a waiter whose partner is running still catches it, and one whose
/// partner was descheduled sleeps within microseconds. Chosen with `basalt bench sharing` and
/// two `basalt bench models` side by side (docs/models.md, "Sharing a machine").
pub(crate) const OPENMP_SPIN_COUNT: &str = "1000";

/// libgomp reads its wait policy once, when it is loaded — before `main` — so the only way to
/// set it for this process is to start it again with the setting in its environment. Done once
/// (the new process finds the variable set), and never when the user set either variable
/// themselves. If the re-execution fails, the process goes on with libgomp's defaults.
pub(crate) fn settle_openmp_waits() {
    if std::env::var_os("GOMP_SPINCOUNT").is_some() || std::env::var_os("OMP_WAIT_POLICY").is_some()
    {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(executable) = std::env::current_exe() else {
            return;
        };
        let mut arguments = std::env::args_os();
        let program: OsString = arguments
            .next()
            .unwrap_or_else(|| executable.clone().into());
        // `exec` only returns when it failed; the process then carries on as it is.
        let _failed = std::process::Command::new(&executable)
            .arg0(program)
            .args(arguments)
            .env("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)
            .exec();
    }
}
