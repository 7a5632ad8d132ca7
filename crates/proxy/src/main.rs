//! The `mizzen-proxy` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    mizzen_proxy::cli::main()
}
