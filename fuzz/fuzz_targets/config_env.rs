//! Configuration from `SHOPCUE__SECTION__KEY` environment variables (`config::Settings::load`
//! with no file). Input: one `NAME=value` per line. What loads validates, holds no NaN
//! (validation refuses it everywhere), and survives a trip through TOML: written out and
//! read back, it loads and writes the same text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shopcue::config::Settings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Ok(settings) = Settings::load(None, env) else {
        return;
    };
    settings.validate().expect("what loads validates");
    let tree = toml::Value::try_from(&settings).expect("settings serialise");
    assert!(!has_nan(&tree), "a NaN passed validation: {tree}");
    let written = toml::to_string(&settings).expect("settings serialise");
    let back: Settings = toml::from_str(&written)
        .unwrap_or_else(|e| panic!("written settings do not load: {e}\n{written}"));
    back.validate().expect("read back, they still validate");
    assert_eq!(toml::to_string(&back).expect("serialise"), written);
});

fn has_nan(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(f) => f.is_nan(),
        toml::Value::Array(a) => a.iter().any(has_nan),
        toml::Value::Table(t) => t.values().any(has_nan),
        _ => false,
    }
}
