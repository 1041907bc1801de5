//! The cursor against serde_json itself, on the same bytes: skipping against `IgnoredAny`, raw
//! values against `&RawValue`, strings against `String`, and visiting everything against `Value`.

use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::Value;

use super::*;
use crate::json::testgen::{edits, mutate, renderings, tree};

/// Visits every value, as `serde_json::Value` does (recursion bounded by the cursor's depth).
fn visit(c: &mut Cursor<'_>) -> Result<()> {
    match c.peek() {
        Some(b'{') => {
            let mut obj = c.object()?;
            while obj.key(c)?.is_some() {
                visit(c)?;
            }
            Ok(())
        }
        Some(b'[') => {
            let mut arr = c.array()?;
            while arr.next(c)? {
                visit(c)?;
            }
            Ok(())
        }
        Some(b'"') => c.string().map(drop),
        _ => c.scalar(),
    }
}

fn whole<'a, T>(bytes: &'a [u8], read: impl FnOnce(&mut Cursor<'a>) -> Result<T>) -> Option<T> {
    let mut c = Cursor::new(bytes);
    let v = read(&mut c).ok()?;
    c.end().ok()?;
    Some(v)
}

fn agree(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
    let skip = whole(bytes, Cursor::skip);
    prop_assert_eq!(
        skip.is_some(),
        serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
    );
    let raw = whole(bytes, |c| c.raw().map(<[u8]>::to_vec));
    let serde_raw = serde_json::from_slice::<&RawValue>(bytes).map(|r| r.get().as_bytes().to_vec());
    prop_assert_eq!(raw, serde_raw.ok());
    let visited = whole(bytes, visit);
    prop_assert_eq!(
        visited.is_some(),
        serde_json::from_slice::<Value>(bytes).is_ok()
    );
    let s = whole(bytes, |c| c.string().map(|s| s.into_owned()));
    prop_assert_eq!(&s, &serde_json::from_slice::<String>(bytes).ok());
    let b = whole(bytes, |c| c.string_bytes().map(|s| s.into_owned()));
    prop_assert_eq!(b, s.map(String::into_bytes));
    let n = whole(bytes, Cursor::u64);
    prop_assert_eq!(n, serde_json::from_slice::<u64>(bytes).ok());
    // a cursor made from text (no ASCII pass, no check per string) reads text the same way
    if let Ok(text) = std::str::from_utf8(bytes) {
        let from_text = |read: &dyn Fn(&mut Cursor<'_>) -> Result<String>| {
            let mut c = Cursor::from_text(text);
            let v = read(&mut c).ok()?;
            c.end().ok()?;
            Some(v)
        };
        prop_assert_eq!(
            from_text(&|c| visit(c).map(|()| String::new())).is_some(),
            visited.is_some()
        );
        let string = from_text(&|c| c.string().map(|s| s.into_owned()));
        prop_assert_eq!(string, serde_json::from_slice::<String>(bytes).ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cursor_reads_as_serde_json_does(j in tree(), noise in prop::collection::vec(any::<u8>(), 0..64)) {
        for bytes in renderings(&j, &noise) {
            agree(&bytes)?;
        }
    }

    #[test]
    fn cursor_rejects_what_serde_json_rejects(
        j in tree(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
        e in edits(),
    ) {
        for mut bytes in renderings(&j, &noise) {
            mutate(&mut bytes, &e);
            agree(&bytes)?;
        }
    }

    #[test]
    fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        agree(&bytes)?;
    }
}

#[test]
fn strings_numbers_and_literals() {
    for s in [
        r#""""#,
        r#""a\"b\\c\/d\b\f\n\r\t""#,
        r#""caf\u00e9 \uD83D\uDE00""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800\\""#,
        r#""\ud800""#,
        r#""\u12""#,
        r#""\u12g4""#,
        r#""\x""#,
        "\"a\u{1}b\"",
        "\"tab\there\"",
        "\"\u{7f}\"",
        "\"abc",
        "\"abc\\",
        "\"0123456789abcdef\\u0041xyz0123456789\"",
        "0",
        "-0",
        "01",
        "-",
        "1.",
        "1.e5",
        ".5",
        "1e",
        "1e+",
        "1E-7",
        "1e400",
        "-1e400",
        "1e-400",
        "0e99999999999",
        "2e99999999999",
        "18446744073709551616",
        "nul",
        "nulll",
        "true",
        "tru",
        "false",
        " \r\n\t null \n",
        "         \n                 1",
        "18446744073709551615",
        "-1",
        "1.0",
        "\u{c}null",
        "[]",
        "[,]",
        "[1,]",
        "[1 2]",
        "{}",
        "{,}",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{"a":}"#,
        r#"{1:2}"#,
        r#"{"a":1}}"#,
        r#"[{"a":[1,{"b":null}]},"x"]"#,
    ] {
        agree(s.as_bytes()).unwrap();
    }
    // bytes that are not UTF-8: fine where only the form is checked, not in text
    for b in [
        &b"\"\xff\""[..],
        b"[\"\xc3\"]",
        b"{\"\xff\":1}",
        b"{\"a\":\"\xe2\x82\"}",
        b"\"\xc3\xa9\"",
    ] {
        agree(b).unwrap();
    }
}

#[test]
fn nesting_is_limited_where_serde_json_limits_it() {
    for n in [1, 63, 64, 65, 126, 127, 128, 129, 200, 5000] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}"), ("[{\"a\":", "}]")] {
            let deep = format!("{}0{}", open.repeat(n), close.repeat(n));
            agree(deep.as_bytes()).unwrap();
            let unclosed = format!("{}0{}", open.repeat(n), close.repeat(n - 1));
            agree(unclosed.as_bytes()).unwrap();
            let wrong = format!("{}0{}]}}", open.repeat(n), close.repeat(n - 1));
            agree(wrong.as_bytes()).unwrap();
        }
    }
}

#[test]
fn special_bytes_are_found_in_every_lane() {
    // past `SHORT_RUN` (128) plain bytes the search changes hands (SIMD): every place on both
    // sides, from several starts, with a second special byte after the first
    for len in (0..140).chain([255, 256, 257, 1000]) {
        for at in 0..len {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                let mut b = vec![b'a'; len];
                b[at] = special;
                for from in [0, 1, 7, 8, 31].into_iter().filter(|f| *f <= at) {
                    let found = Cursor::new(&b).find_special(from);
                    assert_eq!(found, at, "{len} {at} {special} from {from}");
                }
                for second in [b'"', 0x01] {
                    let mut two = b.clone();
                    if let Some(later) = two.get_mut(at + 1 + (len - at) / 2) {
                        *later = second;
                        assert_eq!(Cursor::new(&two).find_special(0), at);
                    }
                }
                if at > 0 {
                    b[at - 1] = 0x80;
                    assert_eq!(Cursor::new(&b).find_special(0), at);
                }
            }
        }
        for plain in [0xffu8, b'a', 0x20, 0x7f] {
            assert_eq!(Cursor::new(&vec![plain; len]).find_special(0), len);
        }
    }
}

#[test]
fn long_strings_read_as_serde_json_reads_them() {
    // on both sides of `SHORT_RUN`, where the search changes hands
    for len in [33, 100, 127, 128, 129, 136, 200, 1000] {
        for at in (0..len).step_by(3) {
            for inner in [
                "\\n", "\\u00e9", "\\ud800", "\\x", "\u{1}", "\t", "\u{e9}", "\"", "\\",
            ] {
                let text = format!("\"{}{inner}{}\"", "a".repeat(at), "b".repeat(len - at));
                agree(text.as_bytes()).unwrap();
                agree(format!("[{text},{text}]").as_bytes()).unwrap();
            }
        }
    }
}
