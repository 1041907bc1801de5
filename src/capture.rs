//! Capture: a route's successful answers, written as an OpenAI fine-tuning dataset (one
//! `{"messages": [...]}` per line, the assistant message last) next to a metadata file (request
//! id, time, route, model, usage, cost per line).
//!
//! The request path only hands a job over (the client's body and the frames it was sent, both
//! refcounted) with a non-blocking `try_send`; a full queue drops the sample and counts it. One
//! writer thread per file parses, reassembles streams, redacts and appends whole lines (one write
//! per line); it fsyncs on rotation and on shutdown. On open, a torn last line (a crash mid-write)
//! is cut off, so every line in the files is whole.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use regex::Regex;
use serde_json::{json, Map, Value};

use crate::usage::Usage;

/// Jobs waiting for a writer, per file; more are dropped (and counted).
pub const QUEUE: usize = 1024;

/// Largest response body kept for a capture.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// How a route captures (from `routes[].capture`).
#[derive(Debug)]
pub struct CaptureConfig {
    pub path: PathBuf,
    /// Fraction of successful requests captured, 0 < s <= 1.
    pub sample: f64,
    /// Capture answers of this model only.
    pub only_model: Option<usize>,
    /// Replaced by `[REDACTED]` in every message string.
    pub redact: Arc<Vec<Regex>>,
    /// Rotate when the file would grow past this.
    pub max_file_bytes: u64,
}

/// One sampled request: what the client sent and what it received.
pub struct Job {
    pub request: Bytes,
    pub response: Vec<Bytes>,
    pub meta: Meta,
    pub redact: Arc<Vec<Regex>>,
    pub max_file_bytes: u64,
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
}

impl Captures {
    /// Starts the writer of `path` if it is not running (it repairs a torn last line at once).
    pub fn ensure(&self, path: &Path) {
        let Ok(mut sinks) = self.sinks.lock() else {
            return;
        };
        Self::start(&mut sinks, path);
    }

    fn start(sinks: &mut HashMap<PathBuf, Sink>, path: &Path) {
        if sinks.contains_key(path) {
            return;
        }
        let (tx, rx) = sync_channel::<Box<Job>>(QUEUE);
        let p = path.to_owned();
        if let Ok(handle) = std::thread::Builder::new()
            .name("tailor-capture".into())
            .spawn(move || writer(&p, &rx))
        {
            sinks.insert(path.to_owned(), (tx, handle));
        }
    }

    /// Queues a job for `path`'s writer (started on first use). False when the queue is full.
    pub fn offer(&self, path: &Path, job: Job) -> bool {
        let Ok(mut sinks) = self.sinks.lock() else {
            return false;
        };
        Self::start(&mut sinks, path);
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
    view: &crate::request::RequestView<'_>,
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
fn writer(path: &Path, rx: &std::sync::mpsc::Receiver<Box<Job>>) {
    let mut files = match Files::open(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "capture file cannot be opened: captures to it are lost");
            while rx.recv().is_ok() {}
            return;
        }
    };
    while let Ok(job) = rx.recv() {
        let Some(example) = example(&job) else {
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
        let data = open_repaired(path)?;
        let meta = open_repaired(&sibling(path, None, true))?;
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
        self.data.write_all(example)?;
        self.meta.write_all(meta)?;
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

/// The dataset line for a job, or None when it must not be captured (not a chat request, an
/// answer cut at `length`, an incomplete stream, an unreadable body).
fn example(job: &Job) -> Option<Vec<u8>> {
    let req: Value = serde_json::from_slice(&job.request).ok()?;
    let mut messages = req.get("messages")?.as_array()?.clone();
    let body: Vec<u8> = job.response.concat();
    let (assistant, finish) = if body.trim_ascii_start().starts_with(b"{") {
        from_json(&body)?
    } else {
        from_stream(&body)?
    };
    if finish.as_deref() == Some("length") {
        return None;
    }
    messages.push(assistant);
    let mut line = Map::new();
    for m in &mut messages {
        redact(m, &job.redact);
    }
    line.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req
        .get("tools")
        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
    {
        line.insert("tools".into(), tools.clone());
    }
    let mut out = serde_json::to_vec(&Value::Object(line)).ok()?;
    out.push(b'\n');
    Some(out)
}

/// The assistant message and finish reason of a chat completion.
fn from_json(body: &[u8]) -> Option<(Value, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let choice = v.get("choices")?.get(0)?;
    let msg = choice.get("message")?;
    let mut out = Map::new();
    out.insert("role".into(), json!("assistant"));
    out.insert(
        "content".into(),
        msg.get("content").cloned().unwrap_or(Value::Null),
    );
    if let Some(calls) = msg
        .get("tool_calls")
        .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
    {
        out.insert("tool_calls".into(), calls.clone());
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((Value::Object(out), finish))
}

/// The assistant message of a streamed chat completion, reassembled from its deltas: content,
/// and tool calls (id, name and arguments joined per index). None if the stream did not end with
/// `[DONE]`.
fn from_stream(body: &[u8]) -> Option<(Value, Option<String>)> {
    let mut content: Option<String> = None;
    let mut calls: Vec<Map<String, Value>> = Vec::new();
    let mut finish = None;
    let mut done = false;
    for line in body.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            done = true;
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            continue;
        };
        if v.get("error").is_some() {
            return None;
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            continue;
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            finish = Some(f.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            continue;
        };
        if let Some(c) = delta.get("content").and_then(Value::as_str) {
            content.get_or_insert_with(String::new).push_str(c);
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let i = tc.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            while calls.len() <= i {
                calls.push(Map::new());
            }
            let call = &mut calls[i];
            for key in ["id", "type"] {
                if let Some(s) = tc.get(key).and_then(Value::as_str) {
                    call.insert(key.into(), json!(s));
                }
            }
            let f = call
                .entry("function")
                .or_insert_with(|| json!({"name": "", "arguments": ""}));
            for key in ["name", "arguments"] {
                if let Some(s) = tc
                    .get("function")
                    .and_then(|f| f.get(key))
                    .and_then(Value::as_str)
                {
                    let prev = f.get(key).and_then(Value::as_str).unwrap_or_default();
                    f[key] = json!(format!("{prev}{s}"));
                }
            }
        }
    }
    if !done {
        return None;
    }
    let mut out = Map::new();
    out.insert("role".into(), json!("assistant"));
    out.insert("content".into(), content.map_or(Value::Null, Value::String));
    if !calls.is_empty() {
        let calls = calls
            .into_iter()
            .map(|mut c| {
                c.entry("type").or_insert_with(|| json!("function"));
                Value::Object(c)
            })
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    Some((Value::Object(out), finish))
}

/// Replaces every match of `rules` in every string of `v` with `[REDACTED]`.
fn redact(v: &mut Value, rules: &[Regex]) {
    match v {
        Value::String(s) => {
            for r in rules {
                if r.is_match(s) {
                    *s = r.replace_all(s, "[REDACTED]").into_owned();
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, rules)),
        Value::Object(o) => o.values_mut().for_each(|x| redact(x, rules)),
        _ => {}
    }
}
