//! ID3v2 tags (`manifest::id3`): any tag that decodes encodes, and what it encodes to
//! decodes to the same frames; a cue read from a tag travels back through `cue_tag`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shopcue::manifest::id3::{cue_from_tag, cue_tag, decode_tag, encode_tag};

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = decode_tag(data)
        && let Ok(tag) = encode_tag(&frames)
    {
        let again = decode_tag(&tag).unwrap_or_else(|e| panic!("encoded {frames:?}: {e}"));
        assert_eq!(again, frames, "decode(encode(frames)) != frames");
        assert_eq!(encode_tag(&again).unwrap(), tag, "encoding is not stable");
    }
    if let Ok(cue) = cue_from_tag(data) {
        let tag = cue_tag(&cue).unwrap_or_else(|e| panic!("cue {cue:?} from a tag: {e}"));
        assert_eq!(cue_from_tag(&tag).expect("our own tag"), cue);
    }
});
