//! Capture reassembly: any request and answer bytes give a dataset line or nothing, never a panic
//! or an allocation the input chose.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tailor::capture::example::example;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |c| usize::from(*c)).min(data.len());
    let (request, answer) = data.split_at(cut);
    let frames: Vec<Bytes> = answer.chunks(97).map(Bytes::copy_from_slice).collect();
    if let Some(line) = example(request, &frames, &[]) {
        assert!(line.ends_with(b"\n"));
    }
});
