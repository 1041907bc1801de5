//! Inputs for the JSON readers' equivalence tests: random JSON trees (with the keys the usage
//! readers look for, repeated keys, odd numbers, escapes and lone surrogates) written as different
//! servers write them (compact, serde_json's pretty form, spaces, tabs and `\r\n` anywhere, `\u`
//! escapes in keys and values), and byte mutations of them.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

/// A JSON value as written, so that it can hold what `serde_json::Value` cannot: repeated keys,
/// numbers out of range, escapes that are not text.
#[derive(Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(Vec<Seg>),
    Arr(Vec<Json>),
    Obj(Vec<(Vec<Seg>, Json)>),
}

/// A piece of a string: a character (escaped or not when written), or escapes written as given.
#[derive(Debug, Clone)]
pub enum Seg {
    Char(char),
    Raw(&'static str),
}

/// The keys the usage readers care about, and some of their neighbours.
pub const KEYS: &[&str] = &[
    "usage",
    "choices",
    "delta",
    "content",
    "tool_calls",
    "response",
    "type",
    "text",
    "refusal",
    "arguments",
    "message",
    "function",
    "index",
    "id",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "output_tokens_details",
    "reasoning_tokens",
];

const ESCAPES: &[&str] = &[
    r"\ud83d\ude00",
    r"\uD83D\uDE00",
    r"\u00e9",
    r"\u0000",
    r"\/",
    r"\ud800",
    r"\udc00",
    r"\ud800\u0041",
    r"\ud800\n",
    r"\udbff\udfff",
    r"\ud800\ud800\udc00",
];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1.5",
    "-2.25e-3",
    "1E+2",
    "1e400",
    "-1e400",
    "1e-400",
    "0e99999999999",
    "1e99999999999",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "179769313486231580000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
];

pub fn plain(s: &str) -> Vec<Seg> {
    s.chars().map(Seg::Char).collect()
}

/// A key: mostly one the readers look for.
pub fn key() -> BoxedStrategy<Vec<Seg>> {
    prop_oneof![8 => select(KEYS).prop_map(plain), 1 => string()].boxed()
}

/// A string's pieces: letters, characters that need escapes, non-ASCII, escapes, key names.
pub fn string() -> BoxedStrategy<Vec<Seg>> {
    let seg = prop_oneof![
        6 => prop::char::range('a', 'z').prop_map(Seg::Char),
        2 => select(&['"', '\\', '/', '\n', '\t', '\0', '\u{1f}', '\u{7f}', 'é', '中', '😀', '\u{2028}', ' '][..])
            .prop_map(Seg::Char),
        1 => select(ESCAPES).prop_map(Seg::Raw),
        1 => select(KEYS).prop_map(Seg::Raw),
    ];
    vec(seg, 0..8).boxed()
}

pub fn number() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0u64..1000).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
        2 => select(NUMBERS).prop_map(str::to_owned),
    ]
    .boxed()
}

pub fn leaf() -> BoxedStrategy<Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number().prop_map(Json::Num),
        string().prop_map(Json::Str),
    ]
    .boxed()
}

/// Any value.
pub fn tree() -> BoxedStrategy<Json> {
    leaf()
        .prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(Json::Arr),
                vec((key(), inner), 0..5).prop_map(Json::Obj),
            ]
        })
        .boxed()
}

fn obj(members: Vec<(&'static str, Json)>) -> Json {
    Json::Obj(members.into_iter().map(|(k, v)| (plain(k), v)).collect())
}

/// A usage object (repeated, aliased and odd members included), `null`, or anything.
fn usage() -> BoxedStrategy<Json> {
    let count = prop_oneof![
        6 => (0u64..100_000).prop_map(|n| Json::Num(n.to_string())),
        1 => leaf(),
    ];
    // serde's derive also reads a struct from an array of its fields in order
    let details = |inner: &'static str| {
        prop_oneof![
            3 => vec((select(vec![inner, "audio_tokens"]), count.clone()), 0..3).prop_map(obj),
            1 => vec(count.clone(), 0..3).prop_map(Json::Arr),
        ]
    };
    let member = prop_oneof![
        4 => (select(&["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens"][..]), count.clone()),
        1 => (select(&["prompt_tokens_details", "input_tokens_details"][..]), details("cached_tokens")),
        1 => (select(&["completion_tokens_details", "output_tokens_details"][..]), details("reasoning_tokens")),
    ];
    let in_order = vec(
        prop_oneof![
            3 => count.clone(),
            1 => details("cached_tokens"),
            1 => Just(Json::Null),
        ],
        0..6,
    )
    .prop_map(Json::Arr);
    prop_oneof![
        6 => vec(member, 0..5).prop_map(obj),
        3 => Just(Json::Null),
        1 => in_order,
        1 => tree(),
    ]
    .boxed()
}

/// A payload as the chat, completions and Responses APIs write them (mostly), or any object.
pub fn payload() -> BoxedStrategy<Json> {
    let text = prop_oneof![4 => string().prop_map(Json::Str), 1 => tree()];
    let function = vec((select(&["arguments", "name"][..]), text.clone()), 0..3).prop_map(obj);
    let call = vec(
        prop_oneof![
            (Just("index"), number().prop_map(Json::Num)),
            (Just("function"), function),
        ],
        0..3,
    )
    .prop_map(obj);
    let inner = prop_oneof![
        3 => (select(&["content", "text", "refusal", "arguments"][..]), text.clone()),
        1 => (Just("tool_calls"), vec(call, 0..3).prop_map(Json::Arr)),
        1 => (Just("role"), Just(Json::Str(plain("assistant")))),
    ];
    let delta = vec(inner, 0..4).prop_map(obj);
    let choice = vec(
        prop_oneof![
            (select(&["delta", "message"][..]), delta),
            (Just("text"), text.clone()),
            (Just("index"), number().prop_map(Json::Num)),
            (Just("finish_reason"), leaf()),
        ],
        0..4,
    )
    .prop_map(obj);
    let response = vec(
        prop_oneof![3 => (Just("usage"), usage()), 1 => (Just("id"), leaf()), 1 => (Just("output"), tree())],
        0..3,
    )
    .prop_map(obj);
    let member = prop_oneof![
        3 => (Just("choices"), prop_oneof![4 => vec(choice, 0..3).prop_map(Json::Arr), 1 => tree()]),
        2 => (Just("usage"), usage()),
        1 => (Just("type"), prop_oneof![3 => string().prop_map(Json::Str), 1 => leaf()]),
        1 => (Just("delta"), text),
        1 => (Just("response"), prop_oneof![3 => response, 1 => tree()]),
        1 => (Just("id"), string().prop_map(Json::Str)),
    ];
    let chat_like = vec(member, 0..5).prop_map(obj);
    let any_obj = vec((key(), tree()), 0..5).prop_map(Json::Obj);
    prop_oneof![3 => chat_like, 1 => any_obj, 1 => tree()].boxed()
}

/// How a tree is written: with `noise`, whitespace and escapes are chosen by its bytes in turn;
/// without, it is written compact with the fewest escapes.
pub struct Style<'n> {
    noise: &'n [u8],
    at: usize,
}

impl<'n> Style<'n> {
    pub fn new(noise: &'n [u8]) -> Style<'n> {
        Style { noise, at: 0 }
    }

    fn pick(&mut self) -> u8 {
        let b = self.noise.get(self.at % self.noise.len().max(1)).copied();
        self.at += 1;
        b.unwrap_or(0)
    }

    fn ws(&mut self, out: &mut Vec<u8>) {
        let s: &[u8] = match self.pick() % 10 {
            5 => b" ",
            6 => b"\r\n",
            7 => b"\t",
            8 => b"\n    ",
            9 => b"  ",
            _ => b"",
        };
        out.extend_from_slice(s);
    }
}

/// Writes `j`.
pub fn render(j: &Json, style: &mut Style<'_>, out: &mut Vec<u8>) {
    match j {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Num(n) => out.extend_from_slice(n.as_bytes()),
        Json::Str(segs) => render_str(segs, style, out),
        Json::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                style.ws(out);
                if i > 0 {
                    out.push(b',');
                    style.ws(out);
                }
                render(item, style, out);
            }
            style.ws(out);
            out.push(b']');
        }
        Json::Obj(members) => {
            out.push(b'{');
            for (i, (k, v)) in members.iter().enumerate() {
                style.ws(out);
                if i > 0 {
                    out.push(b',');
                    style.ws(out);
                }
                render_str(k, style, out);
                style.ws(out);
                out.push(b':');
                style.ws(out);
                render(v, style, out);
            }
            style.ws(out);
            out.push(b'}');
        }
    }
}

fn render_str(segs: &[Seg], style: &mut Style<'_>, out: &mut Vec<u8>) {
    out.push(b'"');
    for seg in segs {
        match seg {
            Seg::Raw(r) => out.extend_from_slice(r.as_bytes()),
            Seg::Char(c) => {
                let short: Option<&[u8]> = match c {
                    '"' => Some(b"\\\""),
                    '\\' => Some(b"\\\\"),
                    '\n' => Some(b"\\n"),
                    '\t' => Some(b"\\t"),
                    _ => None,
                };
                let must = short.is_some() || u32::from(*c) < 0x20;
                if style.pick() % 4 == 3 || (must && short.is_none()) {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        let hex = if style.pick().is_multiple_of(2) {
                            format!("\\u{u:04x}")
                        } else {
                            format!("\\u{u:04X}")
                        };
                        out.extend_from_slice(hex.as_bytes());
                    }
                } else if let Some(s) = short {
                    out.extend_from_slice(s);
                } else {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// The tree as a `serde_json::Value` (repeated keys merge; numbers and escapes serde_json cannot
/// hold become `null` and U+FFFD), for writing it as serde_json does.
pub fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Num(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        Json::Str(segs) => Value::String(decode(segs)),
        Json::Arr(items) => Value::Array(items.iter().map(to_value).collect()),
        Json::Obj(members) => {
            let mut m = Map::new();
            for (k, v) in members {
                m.insert(decode(k), to_value(v));
            }
            Value::Object(m)
        }
    }
}

fn decode(segs: &[Seg]) -> String {
    segs.iter()
        .map(|s| match s {
            Seg::Char(c) => c.to_string(),
            Seg::Raw(r) => serde_json::from_str(&format!("\"{r}\"")).unwrap_or("\u{fffd}".into()),
        })
        .collect()
}

/// The ways a tree is written: compact, serde_json's compact and pretty forms, and noisy.
pub fn renderings(j: &Json, noise: &[u8]) -> Vec<Vec<u8>> {
    let mut compact = Vec::new();
    render(j, &mut Style::new(&[]), &mut compact);
    let mut noisy = Vec::new();
    render(j, &mut Style::new(noise), &mut noisy);
    let v = to_value(j);
    vec![
        compact,
        noisy,
        serde_json::to_vec(&v).unwrap_or_default(),
        serde_json::to_vec_pretty(&v).unwrap_or_default(),
    ]
}

/// One edit of a byte string: `(kind, where, byte)`.
pub type Edit = (u8, usize, u8);

/// Edits: deletions, insertions (often of bytes that matter to JSON), replacements, truncations.
pub fn edits() -> BoxedStrategy<Vec<Edit>> {
    let byte = prop_oneof![
        any::<u8>(),
        select(&b"{}[],:\"\\ \r\n\t0123456789-+.eEnulltruefalse\x00\x1f\x80\xff"[..]),
    ];
    vec((0u8..4, any::<usize>(), byte), 1..4).boxed()
}

pub fn mutate(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for &(kind, at, b) in edits {
        let i = at % (bytes.len() + 1);
        match kind {
            0 if i < bytes.len() => {
                bytes.remove(i);
            }
            1 => bytes.insert(i, b),
            2 => {
                if let Some(x) = bytes.get_mut(i) {
                    *x = b;
                }
            }
            _ => bytes.truncate(i),
        }
    }
}
