//! `request_headers_to_add/remove` and `response_headers_to_add/remove`: compiled once, applied
//! as Envoy's HeaderParser does (removals first, then additions in order; values may hold
//! format commands such as `%DOWNSTREAM_REMOTE_ADDRESS%`).

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, header_value_option::HeaderAppendAction,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::format::{Context, Formatter};
use crate::config::ConfigError;

/// How an added header combines with existing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone)]
enum Template {
    Literal(HeaderValue),
    Format(Formatter),
}

#[derive(Debug, Clone)]
struct Add {
    name: HeaderName,
    value: Template,
    action: AppendAction,
    keep_empty: bool,
}

/// One level's header additions and removals.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    remove: Vec<HeaderName>,
    add: Vec<Add>,
    /// A value reads request headers (`%REQ(...)%`).
    reads_request: bool,
}

// === impl HeaderMutations ===

impl HeaderMutations {
    /// Compiles `*_headers_to_add` and `*_headers_to_remove`. Pseudo-headers and `host`
    /// cannot be changed this way, as in Envoy.
    pub fn new(add: &[HeaderValueOption], remove: &[String]) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        for (i, name) in remove.iter().enumerate() {
            out.remove
                .push(modifiable(name).map_err(|e| e.at(format!("headers_to_remove[{i}]")))?);
        }
        for (i, opt) in add.iter().enumerate() {
            out.add
                .push(compile(opt).map_err(|e| e.at(format!("headers_to_add[{i}]")))?);
        }
        out.reads_request = out.add.iter().any(|a| match &a.value {
            Template::Format(f) => {
                let mut keys = Vec::new();
                f.request_keys(&mut keys);
                !keys.is_empty()
            }
            Template::Literal(_) => false,
        });
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Whether a value reads request headers (`%REQ(...)%`).
    pub fn reads_request_headers(&self) -> bool {
        self.reads_request
    }

    /// Applies removals, then additions.
    pub fn apply(&self, headers: &mut HeaderMap, ctx: Option<&Context<'_>>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for add in &self.add {
            let value = match &add.value {
                Template::Literal(v) => v.clone(),
                Template::Format(f) => {
                    let Some(ctx) = ctx else { continue };
                    match HeaderValue::from_str(&f.render_header(ctx)) {
                        Ok(v) => v,
                        Err(_) => continue,
                    }
                }
            };
            if value.is_empty() && !add.keep_empty {
                continue;
            }
            match add.action {
                AppendAction::AppendIfExistsOrAdd => {
                    headers.append(add.name.clone(), value);
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(&add.name) {
                        headers.insert(add.name.clone(), value);
                    }
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&add.name) {
                        headers.insert(add.name.clone(), value);
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(add.name.clone(), value);
                }
            }
        }
    }
}

fn modifiable(name: &str) -> Result<HeaderName, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(':') || lower == "host" {
        return Err(ConfigError::new(format!(
            "{name:?}: :-prefixed or host headers may not be modified"
        )));
    }
    HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| ConfigError::new(format!("invalid header name {name:?}")))
}

#[allow(deprecated)]
fn compile(opt: &HeaderValueOption) -> Result<Add, ConfigError> {
    let header = opt
        .header
        .as_ref()
        .ok_or_else(|| ConfigError::new("header is required"))?;
    let name = modifiable(&header.key).map_err(|e| e.at("header.key"))?;
    if opt.append.is_some() && opt.append_action != 0 {
        return Err(ConfigError::new(
            "Both append and append_action are set and it's not allowed",
        ));
    }
    let action = match opt.append.as_ref() {
        Some(b) if b.value => AppendAction::AppendIfExistsOrAdd,
        Some(_) => AppendAction::OverwriteIfExistsOrAdd,
        None => match HeaderAppendAction::try_from(opt.append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                return Err(ConfigError::new(format!(
                    "unknown append_action {}",
                    opt.append_action
                )));
            }
        },
    };
    let raw = if header.raw_value.is_empty() {
        header.value.clone()
    } else {
        String::from_utf8(header.raw_value.clone())
            .map_err(|_| ConfigError::new("raw_value is not UTF-8").at("header"))?
    };
    let formatter =
        Formatter::parse(&raw).map_err(|e| ConfigError::new(e.to_string()).at("header.value"))?;
    let value = if formatter.is_literal() {
        let literal = formatter.literal_text();
        Template::Literal(HeaderValue::from_str(&literal).map_err(|_| {
            ConfigError::new(format!("invalid header value {raw:?}")).at("header.value")
        })?)
    } else {
        Template::Format(formatter)
    };
    Ok(Add {
        name,
        value,
        action,
        keep_empty: opt.keep_empty_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as HeaderValueProto;
    use envoy_types::pb::google::protobuf::BoolValue;

    fn opt(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValueProto {
                key: key.into(),
                value: value.into(),
                raw_value: Vec::new(),
            }),
            append_action: action as i32,
            ..Default::default()
        }
    }

    #[test]
    fn append_actions_behave_as_envoy() {
        let m = HeaderMutations::new(
            &[
                opt("x-a", "1", HeaderAppendAction::AppendIfExistsOrAdd),
                opt("x-b", "2", HeaderAppendAction::AddIfAbsent),
                opt("x-c", "3", HeaderAppendAction::OverwriteIfExists),
                opt("x-d", "4", HeaderAppendAction::OverwriteIfExists),
                opt("x-e", "5", HeaderAppendAction::OverwriteIfExistsOrAdd),
            ],
            &["x-gone".to_string()],
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-a", "0"),
            ("x-b", "0"),
            ("x-c", "0"),
            ("x-e", "0"),
            ("x-gone", "0"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        m.apply(&mut h, None);
        let all = |k: &str| {
            h.get_all(k)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-a"), ["0", "1"]);
        assert_eq!(all("x-b"), ["0"]);
        assert_eq!(all("x-c"), ["3"]);
        assert!(all("x-d").is_empty());
        assert_eq!(all("x-e"), ["5"]);
        assert!(all("x-gone").is_empty());
    }

    #[test]
    fn deprecated_append_false_overwrites() {
        #[allow(deprecated)]
        let o = HeaderValueOption {
            append: Some(BoolValue { value: false }),
            ..opt("x-a", "1", HeaderAppendAction::AppendIfExistsOrAdd)
        };
        let m = HeaderMutations::new(&[o], &[]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("0"));
        m.apply(&mut h, None);
        assert_eq!(h.get_all("x-a").iter().count(), 1);
        assert_eq!(h["x-a"], "1");
    }

    #[test]
    fn pseudo_and_host_headers_are_rejected() {
        for key in [":path", "Host"] {
            let e = HeaderMutations::new(&[opt(key, "v", HeaderAppendAction::AddIfAbsent)], &[])
                .unwrap_err();
            assert!(e.to_string().contains("may not be modified"), "{e}");
        }
        assert!(HeaderMutations::new(&[], &[":authority".into()]).is_err());
    }

    #[test]
    fn percent_escapes_and_empty_values() {
        let m = HeaderMutations::new(
            &[
                opt("x-pct", "100%%", HeaderAppendAction::AddIfAbsent),
                opt("x-empty", "", HeaderAppendAction::AddIfAbsent),
            ],
            &[],
        )
        .unwrap();
        let mut h = HeaderMap::new();
        m.apply(&mut h, None);
        assert_eq!(h["x-pct"], "100%");
        assert!(!h.contains_key("x-empty"));
    }
}
