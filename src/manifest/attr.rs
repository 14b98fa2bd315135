//! HLS attribute lists (`NAME=value,NAME="quoted, with commas"`), parsed with the byte
//! span of every value so one value can be replaced and the rest of the line kept as is.

/// One attribute of a list: its name and raw value (quotes included), and where the value
/// sits in the list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attr<'a> {
    pub name: &'a str,
    pub raw: &'a str,
    pub start: usize,
    pub end: usize,
}

impl<'a> Attr<'a> {
    /// The value without its quotes (a quoted-string), or as is.
    pub fn value(&self) -> &'a str {
        let r = self.raw;
        if r.len() >= 2 && r.starts_with('"') && r.ends_with('"') {
            &r[1..r.len() - 1]
        } else {
            r
        }
    }

    pub fn is_quoted(&self) -> bool {
        self.raw.len() >= 2 && self.raw.starts_with('"') && self.raw.ends_with('"')
    }
}

/// Parses an attribute list. Spaces around names are tolerated (some origins write them);
/// an unterminated quote or a name without `=` is an error.
pub fn parse(list: &str) -> Result<Vec<Attr<'_>>, String> {
    let b = list.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let eq = list[i..]
            .find('=')
            .map(|k| i + k)
            .ok_or_else(|| format!("attribute without `=` at {i}"))?;
        let name = list[i..eq].trim();
        if name.is_empty() || name.contains(',') || name.contains('"') {
            return Err(format!("bad attribute name `{name}`"));
        }
        let start = eq + 1;
        let end = if b.get(start) == Some(&b'"') {
            let close = list[start + 1..]
                .find('"')
                .ok_or_else(|| format!("unterminated quoted value of {name}"))?;
            start + 1 + close + 1
        } else {
            list[start..].find(',').map_or(b.len(), |k| start + k)
        };
        out.push(Attr {
            name,
            raw: &list[start..end],
            start,
            end,
        });
        i = end;
        if i < b.len() {
            if b[i] != b',' {
                return Err(format!("expected `,` after the value of {name}"));
            }
            i += 1;
        }
    }
    Ok(out)
}

pub fn get<'a>(attrs: &[Attr<'a>], name: &str) -> Option<Attr<'a>> {
    attrs.iter().find(|a| a.name == name).copied()
}

/// `list` with the value of `attr` replaced by `new_raw` (quotes included if wanted).
pub fn replace(list: &str, attr: &Attr, new_raw: &str) -> String {
    let mut s = String::with_capacity(list.len() + new_raw.len());
    s.push_str(&list[..attr.start]);
    s.push_str(new_raw);
    s.push_str(&list[attr.end..]);
    s
}

/// A value safe inside a quoted-string: `"`, CR, LF (forbidden by RFC 8216) and `%` are
/// percent-encoded.
pub fn quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("%22"),
            '\r' => s.push_str("%0D"),
            '\n' => s.push_str("%0A"),
            '%' => s.push_str("%25"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A URI as a quoted-string (URLs we build never hold `"`, CR or LF; a stray `"` is
/// percent-encoded anyway).
pub fn quote_uri(u: &str) -> String {
    format!(
        "\"{}\"",
        u.replace('"', "%22")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_commas_and_spans() {
        let l = r#"METHOD=AES-128,URI="k.key?a=1,b=2",IV=0x0A, KEYFORMAT="identity""#;
        let a = parse(l).unwrap();
        let names: Vec<_> = a.iter().map(|a| a.name).collect();
        assert_eq!(names, ["METHOD", "URI", "IV", "KEYFORMAT"]);
        let uri = get(&a, "URI").unwrap();
        assert_eq!(uri.value(), "k.key?a=1,b=2");
        assert!(uri.is_quoted());
        assert_eq!(
            replace(l, &uri, "\"https://o/k\""),
            r#"METHOD=AES-128,URI="https://o/k",IV=0x0A, KEYFORMAT="identity""#
        );
        assert_eq!(get(&a, "IV").unwrap().value(), "0x0A");
    }

    #[test]
    fn errors_and_quoting() {
        assert!(parse("A=\"x").is_err());
        assert!(parse("A").is_err());
        assert!(parse("A=\"x\"B=1").is_err());
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(quote("a\"b%\n"), "\"a%22b%25%0A\"");
    }
}
