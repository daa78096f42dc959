//! Fuzzes the chunked decoder: fed whole or split at an arbitrary point, it must agree with
//! itself, never produce more bytes than it was given, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twiggy_core::h1::decode::ChunkedDecoder;

fuzz_target!(|data: &[u8]| {
    let mut whole = ChunkedDecoder::default();
    let mut whole_out = Vec::new();
    let whole_result = whole.decode(data, &mut whole_out);

    let split = if data.is_empty() { 0 } else { data[0] as usize % (data.len() + 1) };
    let mut parts = ChunkedDecoder::default();
    let mut parts_out = Vec::new();
    let mut parts_result = parts.decode(&data[..split], &mut parts_out);
    if let Ok(used) = parts_result {
        if used == split && !parts.is_done() {
            parts_result = parts.decode(&data[split..], &mut parts_out).map(|more| used + more);
        }
    }
    match (&whole_result, &parts_result) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "consumed the same");
            assert_eq!(whole_out, parts_out, "decoded the same");
            assert_eq!(whole.is_done(), parts.is_done());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("split input changed the outcome: {whole_result:?} vs {parts_result:?}"),
    }
    assert!(whole_out.len() <= data.len());
});
