//! The `pgsluice` binary: everything lives in the library; see `pgsluice::cli`.

fn main() -> std::process::ExitCode {
    pgsluice::cli::main()
}

/// jemalloc, chosen by benchmark: it serves tokio's 128-byte-aligned tasks and socket states from
/// size classes, where glibc's memalign leaves padding around each; an idle client takes 0.91 KiB
/// instead of 1.17 (benches/pgbench_compare.sh -I 10000).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
