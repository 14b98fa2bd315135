//! Named config variants of the capacity bench: `name:section.key=value,section.key=value`,
//! applied on top of the settings file through the same `SHOPCUE__SECTION__KEY` layer that
//! `shopcue run` reads from the environment ([`Settings::load`]), so values parse exactly
//! as they would there.

use std::path::Path;

use anyhow::{Context, bail};
use shopcue::config::{ENV_PREFIX, Settings};

/// One named set of config overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    /// `(section.key, value)` in the order given; later ones win.
    pub overrides: Vec<(String, String)>,
}

/// The defaults before issue 14 (`before`) and the shipped defaults (`after`).
pub fn defaults() -> Vec<Variant> {
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    vec![
        Variant {
            name: "before".into(),
            overrides: vec![
                pair("inference.sessions_per_model", "1"),
                pair("matching.change_gate", "false"),
                pair("media.decoder_threads", "0"),
            ],
        },
        Variant {
            name: "after".into(),
            overrides: Vec::new(),
        },
    ]
}

impl std::str::FromStr for Variant {
    type Err = String;

    /// `name`, `name:` or `name:key=value,key=value` (a value may be a TOML array or table;
    /// commas inside brackets, braces or quotes do not split).
    fn from_str(spec: &str) -> Result<Self, String> {
        let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(format!(
                "variant `{spec}`: the name must be letters, digits, `-` or `_`, then `:key=value,...`"
            ));
        }
        let mut overrides = Vec::new();
        for item in split_top_level(rest)
            .into_iter()
            .filter(|s| !s.trim().is_empty())
        {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("variant `{name}`: `{item}` is not section.key=value"))?;
            let key = key.trim().to_ascii_lowercase();
            let well_formed = key.split('.').count() >= 2
                && key.split('.').all(|k| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if !well_formed {
                return Err(format!(
                    "variant `{name}`: `{key}` is not a section.key path"
                ));
            }
            overrides.push((key, value.trim().to_string()));
        }
        Ok(Self {
            name: name.to_string(),
            overrides,
        })
    }
}

/// Splits at commas that are not inside `[]`, `{}` or a quoted string.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut quote, mut from) = (Vec::new(), 0i32, None, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&s[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[from..]);
    parts
}

/// `matching.change_gate` → `SHOPCUE__MATCHING__CHANGE_GATE`.
fn env_var(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

impl Variant {
    /// `name (key=value, ...)`, or `name (the defaults)`.
    pub fn describe(&self) -> String {
        if self.overrides.is_empty() {
            return format!("`{}` (the defaults)", self.name);
        }
        let kv: Vec<String> = self
            .overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("`{}` ({})", self.name, kv.join(", "))
    }

    /// The settings file (and the process's `SHOPCUE__…` variables), then these overrides,
    /// validated. A key the settings do not have is one error naming the variant and key.
    pub fn settings(&self, file: Option<&Path>) -> anyhow::Result<Settings> {
        let base = Settings::from_env(file).context("settings")?;
        let tree = toml::Value::try_from(&base).context("settings as a tree")?;
        for (key, value) in &self.overrides {
            if !has_key(&tree, key) {
                bail!(
                    "variant `{}`: unknown config key `{key}` (in `{key}={value}`); \
                     see config/shopcue.toml for the keys",
                    self.name
                );
            }
        }
        let env =
            std::env::vars().chain(self.overrides.iter().map(|(k, v)| (env_var(k), v.clone())));
        Settings::load(file, env).with_context(|| format!("variant {}", self.describe()))
    }
}

fn has_key(tree: &toml::Value, dotted: &str) -> bool {
    let mut node = tree;
    for k in dotted.split('.') {
        match node.get(k) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_overrides() {
        let v: Variant = "before:inference.sessions_per_model=1, matching.change_gate=false"
            .parse()
            .unwrap();
        assert_eq!(v.name, "before");
        assert_eq!(
            v.overrides,
            vec![
                ("inference.sessions_per_model".into(), "1".into()),
                ("matching.change_gate".into(), "false".into())
            ]
        );
        let plain: Variant = "after".parse().unwrap();
        assert!(plain.overrides.is_empty());
        assert_eq!("after:".parse::<Variant>().unwrap(), plain);
        let arr: Variant =
            r#"x:matching.deny_classes=["person","chair"],media.analysis_height=480"#
                .parse()
                .unwrap();
        assert_eq!(arr.overrides[0].1, r#"["person","chair"]"#);
        assert_eq!(arr.overrides[1].0, "media.analysis_height");
    }

    #[test]
    fn bad_specs_are_named() {
        for bad in [":a.b=1", "a b:x.y=1", "v:nokey", "v:novalue.x", "v:.x=1"] {
            let e = bad.parse::<Variant>().unwrap_err();
            assert!(e.contains("variant"), "{bad}: {e}");
        }
    }

    #[test]
    fn overrides_apply_and_unknown_keys_fail_once() {
        let v: Variant = "v:inference.sessions_per_model=3,media.analysis_height=480"
            .parse()
            .unwrap();
        let s = v.settings(None).unwrap();
        assert_eq!(s.inference.sessions_per_model, 3);
        assert_eq!(s.media.analysis_height, 480);
        let bad: Variant = "v:matching.no_such_switch=false".parse().unwrap();
        let e = bad.settings(None).unwrap_err().to_string();
        assert!(
            e.contains("`matching.no_such_switch`") && e.contains("`v`"),
            "{e}"
        );
        let invalid: Variant = "v:media.analysis_height=7".parse().unwrap();
        let e = format!("{:#}", invalid.settings(None).unwrap_err());
        assert!(e.contains("media.analysis_height"), "{e}");
    }
}
