//! HTTP `Range` headers of segment requests (`http::proxy::parse_range_header`), against
//! the header ingest writes for a byte range (`ingest::hls::range_header`): what parses
//! is a non-empty range inside 2^64 bytes, and writing it back gives the same range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shopcue::http::proxy::parse_range_header;
use shopcue::ingest::hls::range_header;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Some((offset, length)) = parse_range_header(value) else {
        return;
    };
    assert!(length >= 1, "empty range from {value:?}");
    let last = offset
        .checked_add(length - 1)
        .unwrap_or_else(|| panic!("range of {value:?} ends beyond 2^64"));
    // The Content-Range the proxy answers with.
    let _ = format!("bytes {offset}-{last}/*");
    if let Ok(written) = range_header(offset, length, usize::MAX) {
        assert_eq!(
            parse_range_header(&written),
            Some((offset, length)),
            "{written}"
        );
    }
});
