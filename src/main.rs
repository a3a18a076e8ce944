//! The `symbolon` binary: parse the command line, then hand over to [`symbolon::cli`].

/// mimalloc: the TLS handshake allocates and frees many short-lived buffers; glibc's allocator
/// spent about 5 % of a full mTLS handshake in malloc/free on the benchmark machine.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    symbolon::cli::main()
}
