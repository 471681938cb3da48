use clap::Parser;

fn main() -> std::process::ExitCode {
    return_large_allocations_to_the_os();
    let cli = keygate::cli::Cli::parse();
    match keygate::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keygate: {message}");
            std::process::ExitCode::from(2)
        }
    }
}

/// glibc raises its mmap threshold after the first large free, and then
/// keeps later large buffers (argon2's 7 MiB per sign-in) on per-thread
/// heaps it never gives back: resident memory climbed from 19 MB to 60 MB
/// after a dozen sign-ins. A fixed 1 MiB threshold returns them at once.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
