//! Capture: a route's successful answers, written as an OpenAI fine-tuning dataset (one
//! `{"messages": [...]}` per line, the assistant message last) next to a metadata file (request
//! id, time, route, model, usage, cost per line).
//!
//! The request path only hands a job over (the client's body and the frames it was sent, both
//! refcounted) with a non-blocking `try_send`; a full queue drops the sample and counts it. One
//! writer thread per file parses, reassembles streams, redacts and appends whole lines (one write
//! per line); it fsyncs on rotation and on shutdown. On open, a torn last line (a crash mid-write)
//! is cut off, so every line in the files is whole.
//!
//! - [`Sample`]: a sampled request, subscribed to its own end; offers the job when it was answered.
//! - [`example`]: the request and answer → one dataset line (stream reassembly, redaction).

pub mod example;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use prometheus::IntCounter;
use regex::Regex;
use serde_json::{json, Map, Value};

use crate::config::CaptureConfig;
use crate::request::RequestView;
use crate::usage::event::{Finished, Subscriber};
use crate::usage::price::PICO_PER_USD;
use crate::usage::Usage;

/// Jobs waiting for a writer, per file; more are dropped (and counted).
pub const QUEUE: usize = 1024;

/// Bytes (requests and answers) waiting for the writers, all files together; more are dropped
/// (and counted), so a slow disk cannot make captures hold unbounded memory.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// One sampled request: what the client sent and what it received.
pub struct Job {
    pub request: Bytes,
    pub response: Vec<Bytes>,
    pub meta: Meta,
    pub redact: Arc<Vec<Regex>>,
    pub max_file_bytes: u64,
}

impl Job {
    /// The bytes it holds (counted against [`QUEUE_BYTES`] while queued).
    fn size(&self) -> usize {
        self.request.len() + self.response.iter().map(Bytes::len).sum::<usize>()
    }
}

/// The metadata line of a captured example.
pub struct Meta {
    /// What `tailor simulate` needs to route the request again: the model asked for, endpoint,
    /// user, metadata, non-secret headers, stream, and the arm prompt's estimated tokens.
    pub request: Value,
    pub request_id: String,
    pub unix_time: f64,
    pub route: Arc<str>,
    pub model: Arc<str>,
    pub usage: Usage,
    pub cost_usd: f64,
}

/// A running writer: its queue and its thread.
type Sink = (SyncSender<Box<Job>>, JoinHandle<()>);

/// The writers, one per capture file, shared by every config generation (a reload keeps them).
#[derive(Default)]
pub struct Captures {
    sinks: Mutex<HashMap<PathBuf, Sink>>,
    /// Bytes of the jobs queued and not yet written.
    queued: Arc<AtomicUsize>,
}

impl Captures {
    /// Starts the writer of `path` if it is not running (it repairs a torn last line at once).
    pub fn ensure(&self, path: &Path) {
        let Ok(mut sinks) = self.sinks.lock() else {
            return;
        };
        self.start(&mut sinks, path);
    }

    fn start(&self, sinks: &mut HashMap<PathBuf, Sink>, path: &Path) {
        if sinks.contains_key(path) {
            return;
        }
        let (tx, rx) = sync_channel::<Box<Job>>(QUEUE);
        let p = path.to_owned();
        let queued = self.queued.clone();
        if let Ok(handle) = std::thread::Builder::new()
            .name("tailor-capture".into())
            .spawn(move || writer(&p, &rx, &queued))
        {
            sinks.insert(path.to_owned(), (tx, handle));
        }
    }

    /// Queues a job for `path`'s writer (started on first use). False when the queue is full, in
    /// jobs or in bytes.
    pub fn offer(&self, path: &Path, job: Job) -> bool {
        let size = job.size();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > QUEUE_BYTES {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        let sent = self.send(path, job);
        if !sent {
            self.queued.fetch_sub(size, Ordering::Relaxed);
        }
        sent
    }

    fn send(&self, path: &Path, job: Job) -> bool {
        let Ok(mut sinks) = self.sinks.lock() else {
            return false;
        };
        self.start(&mut sinks, path);
        match sinks.get(path).map(|(tx, _)| tx.try_send(Box::new(job))) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_))) | None => false,
            Some(Err(TrySendError::Disconnected(_))) => {
                sinks.remove(path);
                false
            }
        }
    }

    /// Lets every writer drain its queue, fsync and stop (shutdown).
    pub fn close(&self) {
        let sinks: Vec<_> = match self.sinks.lock() {
            Ok(mut s) => s.drain().collect(),
            Err(_) => return,
        };
        for (_, (tx, handle)) in sinks {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// A request sampled for its route's dataset, subscribed to its own end: when it was answered
/// completely (by `only_model`, when set), the job goes to the writer; a full queue drops it and
/// counts it in `tailor_capture_dropped_total`.
pub struct Sample {
    pending: Mutex<Option<Pending>>,
    only_model: Option<Arc<str>>,
    path: PathBuf,
    redact: Arc<Vec<Regex>>,
    max_file_bytes: u64,
    captures: Arc<Captures>,
    dropped: IntCounter,
}

/// What is known of a sampled request before it ends.
struct Pending {
    request: Bytes,
    request_info: Value,
}

impl Sample {
    /// `request`: the body the client sent; `request_info`: see [`request_info`].
    pub fn new(
        c: &CaptureConfig,
        only_model: Option<&str>,
        request: Bytes,
        request_info: Value,
        captures: Arc<Captures>,
        dropped: IntCounter,
    ) -> Sample {
        Sample {
            pending: Mutex::new(Some(Pending {
                request,
                request_info,
            })),
            only_model: only_model.map(Arc::from),
            path: c.path.clone(),
            redact: c.redact.clone(),
            max_file_bytes: c.max_file_bytes,
            captures,
            dropped,
        }
    }
}

impl Subscriber for Sample {
    fn wants_answer(&self) -> bool {
        true
    }

    fn finished(&self, f: &Finished<'_>) {
        // an answer too large to keep whole would be a training example with a hole in it
        if !f.answered || f.answer_truncated {
            return;
        }
        if self.only_model.as_ref().is_some_and(|only| only != f.model) {
            return;
        }
        let Some(p) = self.pending.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let job = Job {
            request: p.request,
            response: f.answer.to_vec(),
            meta: Meta {
                request: p.request_info,
                request_id: f.request_id.to_owned(),
                unix_time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                route: f.route.clone(),
                model: f.model.clone(),
                usage: f.usage,
                cost_usd: f.cost_pico as f64 / PICO_PER_USD,
            },
            redact: self.redact.clone(),
            max_file_bytes: self.max_file_bytes,
        };
        if !self.captures.offer(&self.path, job) {
            self.dropped.inc();
        }
    }
}

/// Headers never written to a metadata file.
const SECRET_HEADERS: [&str; 6] = [
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "proxy-authorization",
    "openai-organization",
];

/// What `tailor simulate` needs to route a captured request again.
pub fn request_info(
    view: &RequestView<'_>,
    headers: &http::HeaderMap,
    arm_prompt_tokens: u64,
) -> Value {
    let mut h = Map::new();
    for (k, v) in headers {
        if SECRET_HEADERS.contains(&k.as_str()) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            h.insert(k.as_str().to_owned(), json!(v));
        }
    }
    json!({
        "endpoint": view.endpoint.as_str(),
        "model": &*view.model,
        "user": view.user.as_deref(),
        "metadata": view.metadata_value(),
        "stream": view.stream,
        "headers": h,
        "arm_prompt_tokens": arm_prompt_tokens,
    })
}

/// The writer thread of one capture file.
fn writer(path: &Path, rx: &std::sync::mpsc::Receiver<Box<Job>>, queued: &AtomicUsize) {
    let mut files = match Files::open(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "capture file cannot be opened: captures to it are lost");
            while let Ok(job) = rx.recv() {
                queued.fetch_sub(job.size(), Ordering::Relaxed);
            }
            return;
        }
    };
    while let Ok(job) = rx.recv() {
        queued.fetch_sub(job.size(), Ordering::Relaxed);
        let Some(example) = example::example(&job.request, &job.response, &job.redact) else {
            continue;
        };
        let meta = meta_line(&job.meta);
        if let Err(e) = files.append(&example, &meta, job.max_file_bytes) {
            tracing::error!(path = %path.display(), error = %e, "capture write failed");
        }
    }
    let _ = files.sync();
}

/// `support.jsonl` → `support.meta.jsonl`; with `n`, the rotated `support.n.jsonl` names.
pub fn sibling(path: &Path, n: Option<u32>, meta: bool) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "capture".into(), |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(|| "jsonl".into(), |s| s.to_string_lossy().into_owned());
    let mut name = stem;
    if let Some(n) = n {
        name.push_str(&format!(".{n}"));
    }
    if meta {
        name.push_str(".meta");
    }
    name.push('.');
    name.push_str(&ext);
    path.with_file_name(name)
}

struct Files {
    path: PathBuf,
    data: File,
    meta: File,
    size: u64,
}

impl Files {
    fn open(path: &Path) -> std::io::Result<Files> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut data = open_repaired(path)?;
        let mut meta = open_repaired(&sibling(path, None, true))?;
        align(path, &mut data, &mut meta)?;
        let size = data.metadata()?.len();
        Ok(Files {
            path: path.to_owned(),
            data,
            meta,
            size,
        })
    }

    /// Appends one example and its metadata, each as one whole line written at once.
    fn append(&mut self, example: &[u8], meta: &[u8], max: u64) -> std::io::Result<()> {
        if self.size > 0 && self.size + example.len() as u64 > max {
            self.rotate()?;
        }
        // both lines, or neither: a failed write (a full disk) is cut back in both files, so the
        // files never go out of step while tailor runs
        let meta_len = self.meta.metadata()?.len();
        let written = self
            .data
            .write_all(example)
            .and_then(|()| self.meta.write_all(meta));
        if let Err(e) = written {
            let _ = self.data.set_len(self.size);
            let _ = self.meta.set_len(meta_len);
            return Err(e);
        }
        self.size += example.len() as u64;
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        self.data.sync_all()?;
        self.meta.sync_all()
    }

    /// `x.jsonl` → `x.1.jsonl` (and older ones one number up), the same for the metadata file;
    /// then fresh files.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.sync()?;
        let mut n = 1;
        while sibling(&self.path, Some(n), false).exists() {
            n += 1;
        }
        for i in (1..n).rev() {
            for meta in [false, true] {
                let from = sibling(&self.path, Some(i), meta);
                if from.exists() {
                    std::fs::rename(&from, sibling(&self.path, Some(i + 1), meta))?;
                }
            }
        }
        std::fs::rename(&self.path, sibling(&self.path, Some(1), false))?;
        std::fs::rename(
            sibling(&self.path, None, true),
            sibling(&self.path, Some(1), true),
        )?;
        *self = Files::open(&self.path)?;
        Ok(())
    }
}

/// Opens for appending; a last line without its newline (a crash mid-write) is cut off.
fn open_repaired(path: &Path) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        // find the last newline, reading backwards in blocks
        let mut end = len;
        let mut keep = 0;
        let mut buf = vec![0u8; 64 * 1024];
        'scan: while end > 0 {
            let start = end.saturating_sub(buf.len() as u64);
            let n = (end - start) as usize;
            f.seek(SeekFrom::Start(start))?;
            f.read_exact(&mut buf[..n])?;
            if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
                keep = start + i as u64 + 1;
                break 'scan;
            }
            end = start;
        }
        if keep != len {
            tracing::warn!(path = %path.display(), cut = len - keep, "capture file ended in a torn line: cut off");
            f.set_len(keep)?;
        }
    }
    Ok(f)
}

/// Cuts the longer of a dataset file and its metadata file back to the other's number of lines
/// when they differ by one (a crash between writing an example and its metadata line must not
/// shift every later line). A larger difference is not a crash mid-append (a rotation cut short,
/// a file edited by hand): nothing is cut then, and a warning says so.
fn align(path: &Path, data: &mut File, meta: &mut File) -> std::io::Result<()> {
    // a FIFO or a device (a test's stand-in for a stuck disk) has no lines to count
    if !data.metadata()?.is_file() || !meta.metadata()?.is_file() {
        return Ok(());
    }
    let (d, m) = (count_lines(data)?, count_lines(meta)?);
    if d == m {
        return Ok(());
    }
    if d.abs_diff(m) > 1 {
        tracing::warn!(path = %path.display(), dataset_lines = d, metadata_lines = m, "capture files differ by more than one line: left as they are");
        return Ok(());
    }
    let (longer, keep) = if d > m { (data, m) } else { (meta, d) };
    let cut = after_lines(longer, keep)?;
    tracing::warn!(path = %path.display(), dataset_lines = d, metadata_lines = m, "capture files out of step after a crash: the extra lines are cut off");
    longer.set_len(cut)
}

/// Calls `f` on each block of the file, from the start, until it returns false.
fn each_block(f: &mut File, mut on: impl FnMut(u64, &[u8]) -> bool) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        let Some(block) = buf.get(..n).filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        if !on(at, block) {
            return Ok(());
        }
        at += n as u64;
    }
}

fn count_lines(f: &mut File) -> std::io::Result<u64> {
    let mut n = 0u64;
    each_block(f, |_, b| {
        n += memchr::memchr_iter(b'\n', b).count() as u64;
        true
    })?;
    Ok(n)
}

/// The offset just after the `lines`th newline (0 for none).
fn after_lines(f: &mut File, lines: u64) -> std::io::Result<u64> {
    let (mut seen, mut cut) = (0u64, 0u64);
    if lines == 0 {
        return Ok(0);
    }
    each_block(f, |at, b| {
        for i in memchr::memchr_iter(b'\n', b) {
            seen += 1;
            if seen == lines {
                cut = at + i as u64 + 1;
                return false;
            }
        }
        true
    })?;
    Ok(cut)
}

fn meta_line(m: &Meta) -> Vec<u8> {
    let mut v = serde_json::to_vec(&json!({
        "request": m.request,
        "request_id": m.request_id,
        "time": m.unix_time,
        "route": &*m.route,
        "model": &*m.model,
        "usage": {"input_tokens": m.usage.input, "cached_tokens": m.usage.cached, "output_tokens": m.usage.output},
        "cost_usd": m.cost_usd,
    }))
    .unwrap_or_default();
    v.push(b'\n');
    v
}
