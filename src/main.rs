use clap::Parser;

fn main() -> std::process::ExitCode {
    keep_new_files_private();
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

/// Everything keygate creates (the data directory, the SQLite database
/// and its `-wal`/`-shm`, the secret file) holds secrets or their hashes:
/// owner-only from the start, whatever the operator's umask, set before
/// anything is created.
fn keep_new_files_private() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it is
    // called once, before any other thread exists.
    unsafe {
        libc::umask(0o077);
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
