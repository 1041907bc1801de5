//! The simulator's Files, Batches, Moderations and Images endpoints: what tailor's passthrough
//! forwards. Uploads are multipart, streamed to a temporary directory (a 500 MB upload does not
//! sit in memory), and downloads stream back from it. A batch completes when it is first
//! retrieved: its output file holds one simulated chat answer per input line.
//!
//! | path (after `/v1`, or Azure's `/openai`) | answer |
//! |---|---|
//! | `POST /files` (multipart: `file`, `purpose`) | the file object |
//! | `GET /files`, `GET /files/{id}`, `GET /files/{id}/content`, `DELETE /files/{id}` | as OpenAI |
//! | `POST /batches` (JSON), `GET /batches/{id}`, `GET /batches` | the batch object(s) |
//! | `POST /moderations` | one result per input; flagged when the text contains `violence-test` |
//! | `POST /images/generations` | one 1x1 PNG per image, with gpt-image-1's `usage` |

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::answer::Sim;
use super::wire::{common_headers, error, now, respond, ChannelBody, MockBody};

/// Which of these APIs a path is, if any: the part after `/v1` (or Azure's `/openai`).
pub fn api_path(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/v1")
        .or_else(|| path.strip_prefix("/openai"))?;
    let first = rest.trim_start_matches('/').split('/').next()?;
    matches!(first, "files" | "batches" | "moderations" | "images").then_some(rest)
}

struct FileRec {
    id: String,
    bytes: u64,
    created_at: u64,
    filename: String,
    purpose: String,
    path: PathBuf,
}

impl FileRec {
    fn json(&self) -> Value {
        json!({"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
               "expires_at": Value::Null, "filename": self.filename, "purpose": self.purpose,
               "status": "processed", "status_details": Value::Null})
    }
}

/// Uploaded files (on disk) and batches.
pub struct Store {
    dir: PathBuf,
    files: Mutex<Vec<FileRec>>,
    batches: Mutex<Vec<Value>>,
    next: AtomicU64,
}

/// Simulators started by this process so far: each has a directory of its own.
static STORES: AtomicU64 = AtomicU64::new(0);

impl Default for Store {
    fn default() -> Self {
        let n = STORES.fetch_add(1, Ordering::Relaxed);
        Store {
            dir: std::env::temp_dir().join(format!("tailor-mock-files-{}-{n}", std::process::id())),
            files: Mutex::default(),
            batches: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Store {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{:024x}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn file_json(&self, id: &str) -> Option<Value> {
        let files = self.files.lock().ok()?;
        files.iter().find(|f| f.id == id).map(FileRec::json)
    }

    fn file_path(&self, id: &str) -> Option<(PathBuf, u64)> {
        let files = self.files.lock().ok()?;
        files
            .iter()
            .find(|f| f.id == id)
            .map(|f| (f.path.clone(), f.bytes))
    }

    /// Writes `data` as a new file (batch output).
    fn add(&self, filename: &str, purpose: &str, data: &[u8]) -> std::io::Result<String> {
        let id = self.id("file-");
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(&id);
        std::fs::write(&path, data)?;
        self.push(FileRec {
            id: id.clone(),
            bytes: data.len() as u64,
            created_at: now(),
            filename: filename.into(),
            purpose: purpose.into(),
            path,
        });
        Ok(id)
    }

    fn push(&self, rec: FileRec) {
        if let Ok(mut f) = self.files.lock() {
            f.push(rec);
        }
    }
}

fn ok_json(v: Value, rid: &str) -> Response<MockBody> {
    respond(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec_pretty(&v).unwrap_or_default()),
        "application/json",
        rid,
    )
}

fn not_found(what: &str, id: &str, rid: &str) -> Response<MockBody> {
    let b = json!({"error": {"message": format!("No such {what}: '{id}'"), "type": "invalid_request_error", "param": "id", "code": Value::Null}});
    respond(
        StatusCode::NOT_FOUND,
        Bytes::from(b.to_string()),
        "application/json",
        rid,
    )
}

fn bad_request(message: &str, rid: &str) -> Response<MockBody> {
    let b = json!({"error": {"message": message, "type": "invalid_request_error", "param": Value::Null, "code": Value::Null}});
    respond(
        StatusCode::BAD_REQUEST,
        Bytes::from(b.to_string()),
        "application/json",
        rid,
    )
}

/// Serves one request of these APIs (`rest`: the path after `/v1`).
pub async fn handle(
    store: &Store,
    parts: &Parts,
    rest: &str,
    body: Incoming,
    rid: &str,
) -> Response<MockBody> {
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let m = &parts.method;
    match (m, segs.as_slice()) {
        (&Method::POST, ["files"]) => upload(store, parts, body, rid).await,
        (&Method::GET, ["files"]) => {
            let data: Vec<Value> = store
                .files
                .lock()
                .map(|f| f.iter().map(FileRec::json).collect())
                .unwrap_or_default();
            ok_json(
                json!({"object": "list", "data": data, "has_more": false}),
                rid,
            )
        }
        (&Method::GET, ["files", id]) => match store.file_json(id) {
            Some(v) => ok_json(v, rid),
            None => not_found("file", id, rid),
        },
        (&Method::DELETE, ["files", id]) => {
            let gone = store.files.lock().ok().and_then(|mut f| {
                let i = f.iter().position(|r| r.id == *id)?;
                Some(f.remove(i))
            });
            match gone {
                Some(r) => {
                    let _ = std::fs::remove_file(&r.path);
                    ok_json(json!({"id": id, "object": "file", "deleted": true}), rid)
                }
                None => not_found("file", id, rid),
            }
        }
        (&Method::GET, ["files", id, "content"]) => match store.file_path(id) {
            Some((path, len)) => download(path, len, rid),
            None => not_found("file", id, rid),
        },
        (&Method::POST, ["batches"]) => match json_body(body).await {
            Some(req) => create_batch(store, &req, rid),
            None => bad_request("We could not parse the JSON body of your request.", rid),
        },
        (&Method::GET, ["batches"]) => {
            let data = store.batches.lock().map(|b| b.clone()).unwrap_or_default();
            ok_json(
                json!({"object": "list", "data": data, "has_more": false}),
                rid,
            )
        }
        (&Method::GET, ["batches", id]) => retrieve_batch(store, id, rid),
        (&Method::POST, ["moderations"]) => match json_body(body).await {
            Some(req) => ok_json(moderation(store, &req), rid),
            None => bad_request("We could not parse the JSON body of your request.", rid),
        },
        (&Method::POST, ["images", "generations"]) => match json_body(body).await {
            Some(req) => ok_json(image(&req), rid),
            None => bad_request("We could not parse the JSON body of your request.", rid),
        },
        _ => error(404, "", rid),
    }
}

async fn json_body(body: Incoming) -> Option<Value> {
    let bytes = body.collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// `POST /files`: the multipart body streamed to disk, field by field.
async fn upload(store: &Store, parts: &Parts, body: Incoming, rid: &str) -> Response<MockBody> {
    let boundary = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok());
    let Some(boundary) = boundary else {
        return bad_request("Expected a multipart/form-data body.", rid);
    };
    let id = store.id("file-");
    if std::fs::create_dir_all(&store.dir).is_err() {
        return error(500, "", rid);
    }
    let path = store.dir.join(&id);
    let mut multipart = multer::Multipart::new(http_body_util::BodyDataStream::new(body), boundary);
    let (mut purpose, mut filename, mut bytes) = (None, None, None);
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return bad_request(&format!("Invalid multipart body: {e}"), rid),
        };
        match field.name() {
            Some("purpose") => purpose = field.text().await.ok(),
            Some("file") => {
                filename = Some(field.file_name().unwrap_or("upload").to_owned());
                let Ok(mut out) = std::fs::File::create(&path) else {
                    return error(500, "", rid);
                };
                let mut n = 0u64;
                loop {
                    match field.chunk().await {
                        Ok(Some(c)) => {
                            n += c.len() as u64;
                            if out.write_all(&c).is_err() {
                                return error(500, "", rid);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return bad_request(&format!("Invalid multipart body: {e}"), rid),
                    }
                }
                bytes = Some(n);
            }
            _ => {}
        }
    }
    let (Some(purpose), Some(filename), Some(bytes)) = (purpose, filename, bytes) else {
        let _ = std::fs::remove_file(&path);
        return bad_request("Both `file` and `purpose` are required.", rid);
    };
    let rec = FileRec {
        id,
        bytes,
        created_at: now(),
        filename,
        purpose,
        path,
    };
    let v = rec.json();
    store.push(rec);
    ok_json(v, rid)
}

/// `GET /files/{id}/content`: streamed from disk in 64 KiB chunks.
fn download(path: PathBuf, len: u64, rid: &str) -> Response<MockBody> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
    common_headers(r.headers_mut(), "application/octet-stream", rid);
    if let Ok(v) = http::HeaderValue::from_str(&len.to_string()) {
        r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    r
}

fn create_batch(store: &Store, req: &Value, rid: &str) -> Response<MockBody> {
    let Some(input) = req["input_file_id"].as_str() else {
        return bad_request("Missing required parameter: 'input_file_id'.", rid);
    };
    if store.file_json(input).is_none() {
        return not_found("file", input, rid);
    }
    let created = now();
    let batch = json!({
        "id": store.id("batch_"), "object": "batch", "endpoint": req["endpoint"],
        "errors": Value::Null, "input_file_id": input,
        "completion_window": req["completion_window"], "status": "validating",
        "output_file_id": Value::Null, "error_file_id": Value::Null, "created_at": created,
        "in_progress_at": Value::Null, "expires_at": created + 86_400, "finalizing_at": Value::Null,
        "completed_at": Value::Null, "failed_at": Value::Null, "expired_at": Value::Null,
        "cancelling_at": Value::Null, "cancelled_at": Value::Null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": req.get("metadata").cloned().unwrap_or(Value::Null),
    });
    if let Ok(mut b) = store.batches.lock() {
        b.push(batch.clone());
    }
    ok_json(batch, rid)
}

/// A batch completes when first retrieved: one simulated answer per line of its input file.
fn retrieve_batch(store: &Store, id: &str, rid: &str) -> Response<MockBody> {
    let found = store
        .batches
        .lock()
        .ok()
        .and_then(|b| b.iter().find(|x| x["id"] == id).cloned());
    let Some(mut batch) = found else {
        return not_found("batch", id, rid);
    };
    if batch["status"] == "validating" {
        let input = batch["input_file_id"].as_str().unwrap_or_default();
        let text = store
            .file_path(input)
            .and_then(|(p, _)| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut total = 0u64;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            total += 1;
            let Ok(item) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let body = &item["body"];
            let model = body["model"].as_str().unwrap_or("gpt-4o");
            let sim = Sim::new(body, "/chat/completions", model, &http::HeaderMap::new());
            let answer: Value = serde_json::from_slice(&sim.complete("/chat/completions", body))
                .unwrap_or_default();
            let row = json!({"id": format!("batch_req_{total}"), "custom_id": item["custom_id"],
                "response": {"status_code": 200, "request_id": format!("req_{total}"), "body": answer},
                "error": Value::Null});
            out.extend_from_slice(row.to_string().as_bytes());
            out.push(b'\n');
        }
        let output = store.add("batch_output.jsonl", "batch_output", &out).ok();
        let t = now();
        batch["status"] = json!("completed");
        batch["output_file_id"] = json!(output);
        batch["in_progress_at"] = json!(t);
        batch["finalizing_at"] = json!(t);
        batch["completed_at"] = json!(t);
        batch["request_counts"] = json!({"total": total, "completed": total, "failed": 0});
        if let Ok(mut b) = store.batches.lock() {
            if let Some(x) = b.iter_mut().find(|x| x["id"] == id) {
                *x = batch.clone();
            }
        }
    }
    ok_json(batch, rid)
}

const MODERATION_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

fn moderation(store: &Store, req: &Value) -> Value {
    let inputs: Vec<String> = match &req["input"] {
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        v => vec![v.as_str().unwrap_or_default().to_owned()],
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let flagged = text.contains("violence-test");
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            let mut applied = serde_json::Map::new();
            for c in MODERATION_CATEGORIES {
                let hit = flagged && c == "violence";
                categories.insert(c.into(), json!(hit));
                scores.insert(c.into(), json!(if hit { 0.93 } else { 0.0001 }));
                applied.insert(c.into(), json!(["text"]));
            }
            json!({"flagged": flagged, "categories": categories, "category_scores": scores,
                   "category_applied_input_types": applied})
        })
        .collect();
    json!({"id": store.id("modr-"), "model": req["model"].as_str().unwrap_or("omni-moderation-latest"),
           "results": results})
}

/// A transparent 1x1 PNG.
const PNG_1X1: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

fn image(req: &Value) -> Value {
    let n = req["n"].as_u64().unwrap_or(1).clamp(1, 10);
    let prompt_tokens = req["prompt"].as_str().map_or(0, |p| p.len().div_ceil(4)) as u64;
    // gpt-image-1 bills 272 output tokens for a low-quality 1024x1024 image
    let output = 272 * n;
    json!({"created": now(), "data": (0..n).map(|_| json!({"b64_json": PNG_1X1})).collect::<Vec<_>>(),
           "usage": {"input_tokens": prompt_tokens, "output_tokens": output,
                     "total_tokens": prompt_tokens + output,
                     "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0}}})
}
