//! The one `rainstorm` binary; everything it does lives in [`rainstorm::cli`].

/// Tuples are allocated on one thread and freed on another all the time; mimalloc's
/// thread-local free lists make that far cheaper than glibc's arenas (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rainstorm::cli::main()
}
