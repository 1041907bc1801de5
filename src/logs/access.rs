//! Access lines: one per request, built field by field into a buffer the worker thread reuses
//! and handed to the batched writer ([`super`]), in text or JSON.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use super::{Line, SHARED};

/// Access lines as JSON (`--log-format json`) rather than text; set once at start-up.
static ACCESS_JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the format of [`access`] lines (the command line's `--log-format`).
pub fn set_json(json: bool) {
    ACCESS_JSON.store(json, Ordering::Relaxed);
}

const ACCESS: &str = "tailor::access";

/// Writes one access line (target `tailor::access`, level INFO) with the fields `fields`
/// appends, if the log filter lets access lines through (`--no-access-log` does not). The line is
/// built in a buffer the worker thread reuses and handed to the batched writer: no `tracing`
/// event, formatter or allocation per request. Other subscribers of `tailor::access` events do
/// not see these lines; the text and JSON are those of [`Access`].
pub fn access(fields: impl FnOnce(&mut AccessLine<'_>)) {
    if !tracing::enabled!(target: "tailor::access", tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // `try_with`: nothing is written from a thread whose locals are being torn down
    let _ = BUF.try_with(|b| {
        let Ok(mut guard) = b.try_borrow_mut() else {
            return;
        };
        let buf: &mut Vec<u8> = &mut guard;
        buf.clear();
        format_line(buf, ACCESS_JSON.load(Ordering::Relaxed), fields);
        let _ = match SHARED.get() {
            Some(s) => Line(s).write_all(buf),
            None => std::io::stderr().write_all(buf),
        };
        // a line with a huge field leaves a large buffer behind: give it back
        if buf.capacity() > 64 << 10 {
            *buf = Vec::new();
        }
    });
}

fn format_line(buf: &mut Vec<u8>, json: bool, fields: impl FnOnce(&mut AccessLine<'_>)) {
    let mut line = AccessLine::start(buf, json, "INFO");
    fields(&mut line);
    line.end();
}

/// One access line being written: `key=value` pairs (quoted only where a value needs it) or one
/// flat JSON object (timestamp, level, fields, target: the keys of tracing's JSON lines).
pub struct AccessLine<'b> {
    buf: &'b mut Vec<u8>,
    json: bool,
}

impl<'b> AccessLine<'b> {
    /// Starts a line: the time (RFC 3339, microseconds), the level and, in text, the target.
    fn start(buf: &'b mut Vec<u8>, json: bool, level: &str) -> AccessLine<'b> {
        if json {
            buf.extend_from_slice(br#"{"timestamp":""#);
            now_rfc3339_micros(buf);
            buf.extend_from_slice(br#"","level":""#);
            buf.extend_from_slice(level.as_bytes());
            buf.push(b'"');
        } else {
            now_rfc3339_micros(buf);
            // the level right-aligned in five columns, as tracing writes it
            buf.resize(buf.len() + 6 - level.len().min(5), b' ');
            buf.extend_from_slice(level.as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(ACCESS.as_bytes());
            buf.push(b':');
        }
        AccessLine { buf, json }
    }

    fn end(&mut self) {
        if self.json {
            self.buf.extend_from_slice(br#","target":""#);
            self.buf.extend_from_slice(ACCESS.as_bytes());
            self.buf.extend_from_slice(b"\"}\n");
        } else {
            self.buf.push(b'\n');
        }
    }

    fn key(&mut self, key: &str) {
        if self.json {
            self.buf.extend_from_slice(b",\"");
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            self.buf.push(b' ');
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.push(b'=');
        }
    }

    /// A text field: bare in text when it is one word of printable ASCII, else quoted with JSON
    /// escapes (control characters and U+2028/9 as `\uXXXX`).
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        // one pass: 0 bare, 1 quoted as it is, 2 quoted with escapes
        let class = value
            .bytes()
            .fold(0, |c, b| c.max(BYTE_CLASS[usize::from(b)]));
        if !self.json && !value.is_empty() && class == 0 {
            self.buf.extend_from_slice(value.as_bytes());
            return self;
        }
        self.buf.push(b'"');
        if class < 2 {
            self.buf.extend_from_slice(value.as_bytes());
        } else {
            for c in value.chars() {
                match c {
                    '"' => self.buf.extend_from_slice(b"\\\""),
                    '\\' => self.buf.extend_from_slice(b"\\\\"),
                    '\n' => self.buf.extend_from_slice(b"\\n"),
                    '\r' => self.buf.extend_from_slice(b"\\r"),
                    '\t' => self.buf.extend_from_slice(b"\\t"),
                    c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                        let _ = write!(self.buf, "\\u{:04x}", c as u32);
                    }
                    c => self
                        .buf
                        .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        self.buf.push(b'"');
        self
    }

    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_u64(self.buf, value);
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// `units / 10^scale` written exactly, without trailing zeros (`182500, 9` is `0.0001825`):
    /// money and durations kept as integers never pass through a float.
    pub fn decimal(&mut self, key: &str, units: u128, scale: u32) -> &mut Self {
        debug_assert!(scale <= 19, "a fraction of up to 19 digits");
        self.key(key);
        let places = scale.min(19);
        let div = 10u128.pow(places);
        match u64::try_from(units / div) {
            Ok(whole) => push_u64(self.buf, whole),
            Err(_) => {
                let _ = write!(self.buf, "{}", units / div);
            }
        }
        // below 10^19: fits
        let mut frac = (units % div) as u64;
        if frac != 0 {
            self.buf.push(b'.');
            let mut places = places;
            while frac.is_multiple_of(10) {
                frac /= 10;
                places -= 1;
            }
            let zeros = places.saturating_sub(frac.ilog10() + 1);
            self.buf.resize(self.buf.len() + zeros as usize, b'0');
            push_u64(self.buf, frac);
        }
        self
    }

    fn f64(&mut self, key: &str, value: f64) -> &mut Self {
        if value.is_finite() || !self.json {
            self.key(key);
            let _ = write!(self.buf, "{value}");
            self
        } else {
            self.str(key, &value.to_string())
        }
    }

    fn debug(&mut self, key: &str, value: &dyn std::fmt::Debug) -> &mut Self {
        let mut s = String::new();
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{value:?}"));
        self.str(key, &s)
    }
}

/// How a byte shows in a value: 0 printable ASCII that needs no quotes, 1 a space or `=` (quoted
/// in text), 2 anything to escape or not ASCII (quoted, and read as characters).
const BYTE_CLASS: [u8; 256] = {
    let mut t = [2u8; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = 0;
        b += 1;
    }
    t[b'"' as usize] = 2;
    t[b'\\' as usize] = 2;
    t[b'=' as usize] = 1;
    t[b' ' as usize] = 1;
    t
};

/// Decimal digits of `n`, without `fmt` (also the upstream request's `content-length`).
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// The time now as `2026-11-28T01:25:04.123456Z`; the part up to the second is formatted once a
/// second per thread.
fn now_rfc3339_micros(buf: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, micros) = (since.as_secs(), since.subsec_micros());
    let (at, mut prefix) = SECOND.get();
    if at != secs {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let s = humantime::format_rfc3339_seconds(t).to_string();
        // `2026-11-28T01:25:04Z`: keep up to the seconds, then the dot
        if let Some(head) = s.as_bytes().get(..19) {
            prefix[..19].copy_from_slice(head);
            prefix[19] = b'.';
            SECOND.set((secs, prefix));
        }
    }
    buf.extend_from_slice(&prefix);
    let mut digits = [0u8; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    buf.extend_from_slice(&digits);
    buf.push(b'Z');
}

/// The event formatter: `tailor::access` events (the rare ones logged through `tracing`, like a
/// rejected request) are written as [`access`] writes its lines; every other event goes to
/// `inner`, tracing's own format.
pub struct Access<F> {
    pub inner: F,
    pub json: bool,
}

impl<S, N, F> FormatEvent<S, N> for Access<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        if meta.target() != ACCESS {
            return self.inner.format_event(ctx, w, event);
        }
        let mut buf = Vec::with_capacity(256);
        let mut line = AccessLine::start(&mut buf, self.json, meta.level().as_str());
        event.record(&mut Fields(&mut line));
        line.end();
        w.write_str(&String::from_utf8_lossy(&buf))
    }
}

struct Fields<'a, 'b>(&'a mut AccessLine<'b>);

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.str(field.name(), value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.u64(field.name(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.key(field.name());
        let _ = write!(self.0.buf, "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.bool(field.name(), value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.f64(field.name(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.debug(field.name(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::tests::Calls;

    /// Formats one access event and one other event with `Access` into a string.
    fn lines(json: bool) -> String {
        let out = Calls::default();
        let w = out.clone();
        let make = move || w.clone();
        let plain = tracing_subscriber::fmt::format().without_time();
        let dispatch = if json {
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .json()
                    .with_writer(make)
                    .event_format(Access {
                        inner: plain.json().flatten_event(true),
                        json: true,
                    })
                    .finish(),
            )
        } else {
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_writer(make)
                    .event_format(Access {
                        inner: plain,
                        json: false,
                    })
                    .finish(),
            )
        };
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(target: "tailor::access", request_id = "tlr-a.b", route = "support", status = 200u64,
                stream = false, cost_usd = 0.0001825, shadow_pair = "", note = "two words \"quoted\"\n");
            tracing::warn!(answer = 42, "something else");
        });
        let bytes = out.0.lock().unwrap().concat();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn access_lines_in_text_and_json() {
        let text = lines(false);
        let first = text.lines().next().unwrap();
        assert!(first.contains(" INFO tailor::access: request_id=tlr-a.b route=support status=200 stream=false cost_usd=0.0001825 shadow_pair=\"\" note=\"two words \\\"quoted\\\"\\n\""), "{first}");
        assert!(
            first.starts_with("20") && first[..27].ends_with('Z'),
            "an RFC 3339 time first: {first}"
        );
        assert!(
            text.lines().nth(1).unwrap().contains("something else"),
            "other events as tracing writes them"
        );
        let json = lines(true);
        let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(v["target"], "tailor::access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["status"], 200);
        assert_eq!(v["stream"], false);
        assert_eq!(v["cost_usd"], 0.0001825);
        assert_eq!(v["note"], "two words \"quoted\"\n");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let other: serde_json::Value = serde_json::from_str(json.lines().nth(1).unwrap()).unwrap();
        assert_eq!(other["answer"], 42);
    }

    #[test]
    fn direct_lines_read_as_the_traced_ones() {
        for json in [false, true] {
            let traced = lines(json).lines().next().unwrap().to_owned();
            let mut buf = Vec::new();
            format_line(&mut buf, json, |l| {
                l.str("request_id", "tlr-a.b")
                    .str("route", "support")
                    .u64("status", 200)
                    .bool("stream", false)
                    .decimal("cost_usd", 182_500_000, 12)
                    .str("shadow_pair", "")
                    .str("note", "two words \"quoted\"\n");
            });
            let direct = String::from_utf8(buf).unwrap();
            assert!(direct.ends_with('\n'));
            let direct = direct.trim_end();
            if json {
                let mut a: serde_json::Value = serde_json::from_str(direct).unwrap();
                let mut b: serde_json::Value = serde_json::from_str(&traced).unwrap();
                let t = a["timestamp"].take();
                let t = t.as_str().unwrap();
                assert!(humantime::parse_rfc3339(t).is_ok(), "{t}");
                b["timestamp"].take();
                assert_eq!(a, b);
            } else {
                // the same after the time, which is RFC 3339 with microseconds
                assert_eq!(direct.get(27..), traced.get(27..), "{direct}\n{traced}");
                let t = direct.get(..27).unwrap();
                assert!(
                    t.ends_with('Z') && humantime::parse_rfc3339(t).is_ok(),
                    "{t}"
                );
            }
        }
    }

    #[test]
    fn values_are_bare_quoted_or_escaped() {
        for (value, text, json) in [
            ("support-ft", "support-ft", "\"support-ft\""),
            ("", "\"\"", "\"\""),
            ("a=b", "\"a=b\"", "\"a=b\""),
            ("two words", "\"two words\"", "\"two words\""),
            ("café", "\"café\"", "\"café\""),
            (
                "a\u{1}\u{2028}\\",
                "\"a\\u0001\\u2028\\\\\"",
                "\"a\\u0001\\u2028\\\\\"",
            ),
        ] {
            for (json_mode, want) in [(false, text), (true, json)] {
                let mut buf = Vec::new();
                AccessLine {
                    buf: &mut buf,
                    json: json_mode,
                }
                .str("k", value);
                let got = String::from_utf8(buf).unwrap();
                let key = if json_mode { ",\"k\":" } else { " k=" };
                assert_eq!(got, format!("{key}{want}"), "{value:?}");
                if json_mode {
                    let v: String = serde_json::from_str(want).unwrap();
                    assert_eq!(v, value);
                }
            }
        }
    }

    #[test]
    fn decimals_are_exact() {
        let cases = [
            (0, 12, "0"),
            (1, 12, "0.000000000001"),
            (1_500_000_000_000, 12, "1.5"),
            (182_500_000, 12, "0.0001825"),
            (123_456_789_012_345, 12, "123.456789012345"),
            (1_234, 3, "1.234"),
            (1_000, 3, "1"),
            (5, 3, "0.005"),
            (u64::MAX as u128, 3, "18446744073709551.615"),
            // both sides of 64 bits, at the largest scale
            (10u128.pow(19), 19, "1"),
            (u64::MAX as u128, 19, "1.8446744073709551615"),
            (u64::MAX as u128 + 1, 19, "1.8446744073709551616"),
            (u64::MAX as u128 + 1, 0, "18446744073709551616"),
            (u128::MAX, 12, "340282366920938463463374607.431768211455"),
        ];
        for (units, scale, want) in cases {
            let mut buf = Vec::new();
            let mut l = AccessLine {
                buf: &mut buf,
                json: true,
            };
            l.decimal("x", units, scale);
            assert_eq!(String::from_utf8(buf).unwrap(), format!(",\"x\":{want}"));
            // as a float would print it
            if units < 1 << 53 {
                assert_eq!(
                    want.parse::<f64>().unwrap(),
                    units as f64 / 10f64.powi(scale as i32)
                );
            }
        }
    }
}
