//! The one `rainstorm` binary; everything it does lives in [`rainstorm::cli`].

/// Tuples are allocated on one thread and freed on another all the time; mimalloc's
/// thread-local free lists make that far cheaper than glibc's arenas (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's option enum.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory freed stays with the process before mimalloc returns it to the OS (ms),
/// unless `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's default (1 s) kept a 20M-line
/// embedded job at 277–292 MB resident, since tuples are allocated and freed at a great rate;
/// 50 ms keeps it at 205–220 MB at the same speed, where 0 reached 181 MB but cost 30% more
/// time in system calls (docs/benchmarks.md). Arenas are also committed as they are used
/// rather than ahead: a compile-time default, `.cargo/config.toml`.
const PURGE_DELAY_MS: std::ffi::c_long = 50;

fn main() -> std::process::ExitCode {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's option values, before any thread but this one runs;
        // any value is valid for this option.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    rainstorm::cli::main()
}
