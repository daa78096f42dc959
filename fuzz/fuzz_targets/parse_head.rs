//! Fuzzes the request-head rules: any bytes must give Partial, Rejected or a Complete head
//! whose spans lie inside the input, under tight limits and default ones, without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twiggy_core::h1::parse::{parse_head, percent_decode_into, split_target, HeadLimits, Parsed};

const LIMITS: [HeadLimits; 2] = [
    HeadLimits { request_line: 8190, head: 65536, headers: 100 },
    HeadLimits { request_line: 16, head: 64, headers: 2 },
];

fuzz_target!(|data: &[u8]| {
    for limits in &LIMITS {
        if let Parsed::Complete(head) = parse_head(data, limits) {
            assert!(head.head_len <= data.len() && head.head_len <= limits.head);
            assert!(head.headers.len() <= limits.headers);
            let target = head.target.get(data);
            head.method.get(data);
            for (name, value) in &head.headers {
                name.get(data);
                value.get(data);
            }
            let (path, query) = split_target(target);
            assert!(path.len() + query.len() <= target.len());
            let mut decoded = Vec::new();
            percent_decode_into(path, &mut decoded);
            assert!(decoded.len() <= path.len());
        }
    }
});
