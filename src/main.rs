use clap::Parser;

/// mimalloc instead of glibc's allocator: a request allocates and frees
/// dozens of small buffers, and glibc's malloc/free were about a tenth of
/// the gateway's CPU time under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keep_new_files_private();
    return_freed_memory_to_the_os();
    let cli = keygate::cli::Cli::parse();
    let outcome = keygate::cli::run(cli);
    keygate::log_sink::flush();
    match outcome {
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

/// mimalloc keeps memory it took for large buffers in its arenas and
/// returns it to the OS only seconds later, on a later allocation: an idle
/// server kept the 7 MiB of each argon2 sign-in resident (40 MB instead of
/// 27 MB). Buffers above 1 MiB now come from the OS and go back to it when
/// freed (what glibc's mmap threshold did). mimalloc is built without
/// asking for transparent huge pages (its `no_thp` feature: a 2 MiB page
/// for every touched byte of a fresh arena, already before `main`), and
/// the process refuses them where the system would give them anyway.
fn return_freed_memory_to_the_os() {
    // SAFETY: mi_option_set only changes allocator tuning; it is called
    // before any other thread exists.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_MAX_OBJECT_SIZE, 1024);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) only changes this process's
    // huge-page policy.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// The largest object (in KiB) mimalloc serves from an arena: its index
/// in `mi_option_t` of mimalloc 3 (the mimalloc.h of the pinned
/// libmimalloc-sys), which its Rust bindings leave out. The test below
/// fails if the index no longer means this.
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

#[cfg(test)]
mod tests {
    /// Resident memory in bytes, from /proc/self/statm.
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_freed_large_buffer_leaves_resident_memory_at_once() {
        super::return_freed_memory_to_the_os();
        let size = 64 << 20;
        let before = resident();
        let buffer = std::hint::black_box(vec![1u8; size]);
        let held = resident();
        assert!(held >= before + size / 2, "the buffer was not resident");
        drop(buffer);
        let after = resident();
        assert!(
            after + size / 2 <= held,
            "64 MiB freed, resident memory {held} -> {after} bytes"
        );
    }
}
