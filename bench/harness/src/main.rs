//! The `mizzen-bench` binary: a thin shell over the library.

fn main() -> std::process::ExitCode {
    mizzen_bench::cli::main()
}
