//! An upstream's bytes: the SSE scanner (any cut into reads, stripping on or off) and the JSON
//! usage reader never panic, and without stripping the bytes pass unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tailor::usage::find_in_json;
use tailor::usage::sse::SseScanner;

fuzz_target!(|data: &[u8]| {
    tailor::tokens::Encoding::O200kBase.load();
    let _ = find_in_json(data);
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut % 64) + 1;
    for strip in [false, true] {
        let mut s = SseScanner::with_limit(strip, 4096);
        let mut out = Vec::new();
        for piece in body.chunks(step) {
            out.extend_from_slice(&s.feed(Bytes::copy_from_slice(piece)));
            if s.overflowed() {
                break;
            }
        }
        if !s.overflowed() {
            out.extend_from_slice(&s.finish());
            if !strip {
                assert_eq!(out, body);
            }
        }
        // the broken-stream estimate: the text's tokens (bytes / 4 until an encoder is loaded)
        let _ = (s.usage(), s.complete(), s.text_bytes(), s.text().tokens());
    }
});
