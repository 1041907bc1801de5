//! Log lines written off the request path. A request's access line is formatted on its worker
//! thread and appended to one shared buffer (a mutex held for a copy, no system call); a writer
//! thread wakes once per batch, at most every [`BATCH`], and writes the whole batch to stderr in one
//! call. So a busy proxy makes at most about fifty writes a second whatever its request rate, and a
//! worker never waits on a slow terminal or pipe, unless the buffer holds [`MAX_PENDING`] bytes:
//! then the worker waits for the writer (lines are never dropped).
//!
//! What can be lost: lines of the last [`BATCH`] when the process is killed with SIGKILL. An
//! ordinary exit (the end of `serve`, a command's end, a panic's message) calls [`flush`] first.
//!
//! [`access`] builds the access lines themselves.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long the writer gathers lines before writing them.
pub const BATCH: Duration = Duration::from_millis(20);
/// Bytes waiting to be written before a worker waits for the writer.
pub const MAX_PENDING: usize = 8 << 20;

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Batches taken by the writer, and written, so far (a flush waits for the one holding its
    /// lines).
    taken: u64,
    written: u64,
    /// A flush is waiting: write now.
    urgent: bool,
}

#[derive(Default)]
struct Shared {
    /// The writer thread runs; without it, lines are written at once.
    writer: std::sync::atomic::AtomicBool,
    pending: Mutex<Pending>,
    /// The buffer went from empty to not empty, or a flush asks.
    data: Condvar,
    /// A batch was written.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // a panic while holding the lock leaves a byte buffer, still usable
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// The `MakeWriter` for tracing's formatter: every event's bytes go to the shared buffer.
#[derive(Clone)]
pub struct Batched(Arc<Shared>);

/// One event's writer (tracing writes a formatted line with one `write_all`).
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if !self.0.writer.load(std::sync::atomic::Ordering::Relaxed) {
            return std::io::stderr().write(bytes);
        }
        let mut p = self.0.lock();
        while p.buf.len() >= MAX_PENDING {
            p.urgent = true;
            self.0.data.notify_one();
            p = self.0.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = p.buf.is_empty();
        p.buf.extend_from_slice(bytes);
        drop(p);
        if was_empty {
            self.0.data.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.0)
    }
}

/// The process's batched stderr writer; the first call starts the writer thread.
pub fn stderr() -> Batched {
    let shared = SHARED.get_or_init(|| {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let started = std::thread::Builder::new()
            .name("tailor-log".into())
            .spawn(move || write_loop(&s, &mut std::io::stderr()));
        match started {
            Ok(_) => shared
                .writer
                .store(true, std::sync::atomic::Ordering::Relaxed),
            // no thread: every line is written at once, on its own thread
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "tailor: no log writer thread: {e}");
            }
        }
        shared
    });
    Batched(shared.clone())
}

fn write_loop(s: &Shared, out: &mut impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut p = s.lock();
        while p.buf.is_empty() {
            p = s.data.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if !p.urgent {
            // gather: more lines arrive while we wait, or a flush cuts the wait short
            p = s
                .data
                .wait_timeout_while(p, BATCH, |p| !p.urgent)
                .map(|(p, _)| p)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        std::mem::swap(&mut p.buf, &mut batch);
        p.taken += 1;
        p.urgent = false;
        drop(p);
        let _ = out.write_all(&batch);
        let _ = out.flush();
        batch.clear();
        // a burst can leave a large buffer behind: give it back
        if batch.capacity() > MAX_PENDING {
            batch = Vec::new();
        }
        s.lock().written += 1;
        s.done.notify_all();
    }
}

/// Writes every line logged so far before returning (waits at most a second for the writer).
pub fn flush() {
    let Some(s) = SHARED.get() else { return };
    let mut p = s.lock();
    // the batch being written now, or the next one when lines wait in the buffer
    let want = p.taken + u64::from(!p.buf.is_empty());
    if p.written >= want {
        return;
    }
    p.urgent = true;
    s.data.notify_one();
    let (p, timeout) = s
        .done
        .wait_timeout_while(p, Duration::from_secs(1), |p| p.written < want)
        .unwrap_or_else(|e| e.into_inner());
    if timeout.timed_out() {
        // no writer thread (or a stuck stderr): write what is left from here
        let mut p = p;
        let _ = std::io::stderr().write_all(&p.buf);
        p.buf.clear();
        drop(p);
        s.done.notify_all();
    }
}

mod access;
pub(crate) use access::push_u64;
pub use access::{access, set_json, Access, AccessLine};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A writer that records each write call.
    #[derive(Clone, Default)]
    pub(super) struct Calls(pub(super) Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Calls {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_few_writes() {
        let shared = Arc::new(Shared::default());
        shared
            .writer
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let calls = Calls::default();
        let (s, mut c) = (shared.clone(), calls.clone());
        std::thread::spawn(move || write_loop(&s, &mut c));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = shared.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        Line(&s)
                            .write_all(format!("t{t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let all = loop {
            let all: Vec<u8> = calls.0.lock().unwrap().concat();
            if all.iter().filter(|b| **b == b'\n').count() == 4000
                || std::time::Instant::now() > deadline
            {
                break all;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let text = String::from_utf8(all).unwrap();
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), 1000, "thread {t}: every line, none cut");
            assert!(
                mine.iter()
                    .enumerate()
                    .all(|(i, l)| *l == format!("t{t} line {i}")),
                "in order"
            );
        }
        let writes = calls.0.lock().unwrap().len();
        assert!(writes < 4000 / 10, "{writes} writes for 4000 lines");
    }
}
