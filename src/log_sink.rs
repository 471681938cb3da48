//! Standard error for the log, written in batches.
//!
//! With the access log on (the default `KEYGATE_LOG=info`), every request
//! writes a line. Into a pipe (journald, a container runtime), whose
//! reader is woken per write, one `write` per line from the worker threads
//! cost a run through the gateway about a fifth of its throughput; into a
//! file batching changes little (see `docs/performance.md`). Here a line
//! is appended to a shared buffer and one thread writes what gathered in
//! [`GATHER_WINDOW`] with one call.
//!
//! What must not wait does not: warnings and errors are written at once
//! (after the lines before them, in order), a buffer that reaches
//! [`MAX_BUFFERED`] (standard error blocked, say) is written by the thread
//! that filled it, and [`flush`] (at exit, and before a panic's message)
//! writes the rest. A process killed outright loses at most the last
//! window's lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long the writing thread lets lines gather before one write.
pub const GATHER_WINDOW: Duration = Duration::from_millis(2);

/// Bytes buffered at most; the line that reaches it writes them itself.
pub const MAX_BUFFERED: usize = 1 << 20;

/// Where the lines go: standard error in the server, anything in tests.
type Output = Box<dyn Write + Send>;

struct Shared {
    /// The lines not yet written, and the output they go to (one lock, so
    /// whoever writes holds the order).
    state: Mutex<State>,
    gathered: Condvar,
}

struct State {
    lines: Vec<u8>,
    output: Output,
    /// False when the writing thread could not be started: every line is
    /// then written at once, as without batching.
    batching: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Writes the buffered lines, then `more`. A failed write of the log
    /// has nowhere to be reported; the lines are dropped.
    fn write_out(&mut self, more: &[u8]) {
        if !self.lines.is_empty() {
            let _ = self.output.write_all(&self.lines);
            self.lines.clear();
        }
        if !more.is_empty() {
            let _ = self.output.write_all(more);
        }
        let _ = self.output.flush();
    }
}

/// The log's writer (a [`MakeWriter`] for `tracing_subscriber`).
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// The writer of the process's log, once [`BatchedWriter::stderr`] made it.
static PROCESS_LOG: OnceLock<BatchedWriter> = OnceLock::new();

impl BatchedWriter {
    /// The process's log on standard error, with its writing thread. Later
    /// calls return the same writer.
    pub fn stderr() -> BatchedWriter {
        PROCESS_LOG
            .get_or_init(|| {
                let writer = BatchedWriter::to(Box::new(std::io::stderr()));
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    flush_unless_busy();
                    hook(info);
                }));
                writer
            })
            .clone()
    }

    /// A writer into `output`, with a thread of its own that writes what
    /// gathered, for the life of the process (the log's writer is made
    /// once, by [`Self::stderr`]).
    pub fn to(output: Output) -> BatchedWriter {
        let writer = BatchedWriter::unthreaded(output);
        let shared = writer.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("keygate-log".into())
            .spawn(move || write_gathered(&shared));
        if spawned.is_err() {
            writer.shared.lock().batching = false;
        }
        writer
    }

    /// A writer that only buffers: lines wait for a warning, a full
    /// buffer or [`Self::flush`] (the writing thread is started by
    /// [`Self::to`]).
    fn unthreaded(output: Output) -> BatchedWriter {
        BatchedWriter {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    lines: Vec::with_capacity(64 * 1024),
                    output,
                    batching: true,
                }),
                gathered: Condvar::new(),
            }),
        }
    }

    /// Writes every buffered line now.
    pub fn flush(&self) {
        self.shared.lock().write_out(&[]);
    }

    fn append(&self, line: &[u8], at_once: bool) {
        let mut state = self.shared.lock();
        if at_once || !state.batching || state.lines.len() + line.len() > MAX_BUFFERED {
            state.write_out(line);
            return;
        }
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(line);
        drop(state);
        if was_empty {
            self.shared.gathered.notify_one();
        }
    }
}

/// Writes every buffered line of the process's log now (at exit).
pub fn flush() {
    if let Some(writer) = PROCESS_LOG.get() {
        writer.flush();
    }
}

/// [`flush`] for the panic hook: a panic on a thread that holds the
/// buffer's lock (in the middle of a write) must not wait for itself.
fn flush_unless_busy() {
    if let Some(writer) = PROCESS_LOG.get() {
        if let Ok(mut state) = writer.shared.state.try_lock() {
            state.write_out(&[]);
        }
    }
}

/// The writing thread: waits for a first line, lets more gather for
/// [`GATHER_WINDOW`], writes them all, and again.
fn write_gathered(shared: &Shared) {
    loop {
        drop(
            shared
                .gathered
                .wait_while(shared.lock(), |state| state.lines.is_empty())
                .unwrap_or_else(|p| p.into_inner()),
        );
        std::thread::sleep(GATHER_WINDOW);
        shared.lock().write_out(&[]);
    }
}

/// One event's line: `tracing_subscriber` formats an event and hands it
/// over in one `write_all`.
pub struct Line<'a> {
    writer: &'a BatchedWriter,
    at_once: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.writer.append(bytes, self.at_once);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            writer: self,
            at_once: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            writer: self,
            at_once: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read, and whose writes it can count.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorded {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut recorded = self.0.lock().unwrap();
            recorded.0.extend_from_slice(bytes);
            recorded.1 += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Recorded {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }

        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    #[test]
    fn lines_wait_and_a_warning_writes_them_first_in_order() {
        let output = Recorded::default();
        let writer = BatchedWriter::unthreaded(Box::new(output.clone()));
        for n in 0..100 {
            writer.append(format!("line {n}\n").as_bytes(), false);
        }
        assert_eq!(output.writes(), 0, "information lines wait");
        writer.append(b"warned\n", true);
        let expected: String = (0..100)
            .map(|n| format!("line {n}\n"))
            .chain(["warned\n".to_string()])
            .collect();
        assert_eq!(output.text(), expected);
        assert_eq!(
            output.writes(),
            2,
            "the 100 lines in one write, then the warning"
        );
    }

    #[test]
    fn a_full_buffer_writes_itself_and_flush_writes_the_rest() {
        let output = Recorded::default();
        let writer = BatchedWriter::unthreaded(Box::new(output.clone()));
        let half = "x".repeat(MAX_BUFFERED / 2);
        writer.append(half.as_bytes(), false);
        writer.append(half.as_bytes(), false);
        assert_eq!(output.writes(), 0);
        writer.append(b"over\n", false);
        assert_eq!(output.text().len(), MAX_BUFFERED + "over\n".len());
        writer.append(b"last\n", false);
        assert!(!output.text().ends_with("last\n"));
        writer.flush();
        assert!(output.text().ends_with("over\nlast\n"));
    }

    #[test]
    fn the_writing_thread_writes_what_gathered_without_a_flush() {
        let output = Recorded::default();
        let writer = BatchedWriter::to(Box::new(output.clone()));
        writer.make_writer().write_all(b"one\n").unwrap();
        writer.make_writer().write_all(b"two\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while output.text() != "one\ntwo\n" && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(output.text(), "one\ntwo\n");
    }
}
