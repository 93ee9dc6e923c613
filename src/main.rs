//! The `pgsluice` binary: everything lives in the library; see `pgsluice::cli`.

fn main() -> std::process::ExitCode {
    pgsluice::cli::main()
}
