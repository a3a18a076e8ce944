//! The `symbolon` binary: parse the command line, then hand over to [`symbolon::cli`].

fn main() -> std::process::ExitCode {
    symbolon::cli::main()
}
