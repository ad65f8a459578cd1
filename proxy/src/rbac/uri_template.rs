//! The `uri_template` permission (`envoy.path.match.uri_template`), which istiod emits for
//! AuthorizationPolicy paths with `{*}` and `{**}`: a template such as `/api/*/items/**` is
//! compiled to a regex the way Envoy compiles it, and matched in full against the path
//! without its query.

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use prost::Name;

use super::error::RbacError;

/// RFC 3986 `pchar` minus `*`, as a regex class body: what one path segment may contain.
const LITERAL: &str = r"a-zA-Z0-9\-._~%!$&'()+,;:@=";
/// At most this many variables, as in Envoy.
const MAX_VARIABLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glob {
    /// `*`: one segment.
    Path,
    /// `**`: any number of segments.
    Text,
}

/// Compiles the extension config (`typed_config` must be a `UriTemplateMatchConfig`).
pub(crate) fn compile(config: &TypedExtensionConfig) -> Result<regex::Regex, RbacError> {
    let any = config
        .typed_config
        .as_ref()
        .ok_or(RbacError::Unset("typed_config"))?;
    let want = UriTemplateMatchConfig::type_url();
    if any.type_url != want {
        return Err(RbacError::Type {
            expected: want,
            got: any.type_url.clone(),
        });
    }
    let decoded = crate::proto::decode_binary::<UriTemplateMatchConfig>(
        &any.value,
        crate::proto::UnknownFields::Reject,
    )
    .map_err(|e| RbacError::Decode(e.to_string()))?;
    template_regex(&decoded.message.path_template)
}

/// The regex for a path template, e.g. `/foo/{bar}/**` or `/**/x.html`.
pub(crate) fn template_regex(template: &str) -> Result<regex::Regex, RbacError> {
    let pattern = to_pattern(template).map_err(|reason| RbacError::UriTemplate {
        template: template.to_string(),
        reason,
    })?;
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| RbacError::UriTemplate {
        template: template.to_string(),
        reason: e.to_string(),
    })
}

/// Parses a template into a regex pattern, with Envoy's rules: segments are literals,
/// globs or `{name[=match]}` variables; a trailing `/` is kept; text after the last
/// segment's glob is a literal suffix; nothing may follow a `**`.
fn to_pattern(template: &str) -> Result<String, String> {
    if !template.starts_with('/') || !template.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must start with '/' and contain only printable characters".into());
    }
    let mut rest = &template[1..];
    let mut segments = Vec::new();
    let mut suffix = String::new();
    let mut seen_text_glob = false;
    let mut variables = Vec::new();
    while !rest.is_empty() {
        let (segment, after) = parse_segment(rest, &mut seen_text_glob, &mut variables)?;
        segments.push(segment);
        rest = after;
        if rest.is_empty() {
            break;
        }
        if rest == "/" {
            segments.push(String::new());
            break;
        }
        if let Some(after_slash) = rest.strip_prefix('/') {
            rest = after_slash;
            continue;
        }
        // Not followed by '/': a literal suffix ending the template.
        if rest.contains('/') {
            return Err("prefix match not supported".into());
        }
        suffix = literal(rest)?;
        break;
    }
    Ok(format!("/{}{suffix}", segments.join("/")))
}

/// One segment at the start of `s`; returns its pattern and the unparsed rest.
fn parse_segment<'s>(
    s: &'s str,
    seen_text_glob: &mut bool,
    variables: &mut Vec<&'s str>,
) -> Result<(String, &'s str), String> {
    if s.starts_with('*') {
        let (glob, rest) = parse_glob(s);
        check_glob(glob, seen_text_glob)?;
        return Ok((glob_pattern(glob), rest));
    }
    if let Some(body) = s.strip_prefix('{') {
        let (inner, rest) = body
            .split_once('}')
            .ok_or_else(|| format!("unmatched variable bracket in {s:?}"))?;
        let (name, matcher) = match inner.split_once('=') {
            Some((n, m)) => (n, Some(m)),
            None => (inner, None),
        };
        check_variable_name(name, variables)?;
        let pattern = match matcher {
            None => {
                check_glob(Glob::Path, seen_text_glob)?;
                glob_pattern(Glob::Path)
            }
            Some(m) => variable_match(m, seen_text_glob)?,
        };
        return Ok((format!("(?:{pattern})"), rest));
    }
    let end = s.find('/').unwrap_or(s.len());
    Ok((literal(&s[..end])?, &s[end..]))
}

/// The `a/*/b` part of `{name=a/*/b}`.
fn variable_match(mut m: &str, seen_text_glob: &mut bool) -> Result<String, String> {
    if m.is_empty() {
        return Err("empty variable match".into());
    }
    let mut parts = Vec::new();
    while !m.is_empty() {
        if m.starts_with('*') {
            let (glob, rest) = parse_glob(m);
            check_glob(glob, seen_text_glob)?;
            parts.push(glob_pattern(glob));
            m = rest;
        } else {
            let end = m.find('/').unwrap_or(m.len());
            parts.push(literal(&m[..end])?);
            m = &m[end..];
        }
        if !m.is_empty() {
            if !m.starts_with('/') || m.len() == 1 {
                return Err(format!("invalid variable match {m:?}"));
            }
            m = &m[1..];
        }
    }
    Ok(parts.join("/"))
}

fn parse_glob(s: &str) -> (Glob, &str) {
    match s.strip_prefix("**") {
        Some(rest) => (Glob::Text, rest),
        None => (Glob::Path, &s[1..]),
    }
}

fn check_glob(glob: Glob, seen_text_glob: &mut bool) -> Result<(), String> {
    if *seen_text_glob {
        return Err("glob after text glob".into());
    }
    *seen_text_glob = glob == Glob::Text;
    Ok(())
}

fn check_variable_name<'s>(name: &'s str, variables: &mut Vec<&'s str>) -> Result<(), String> {
    let valid = name.len() <= 16
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!("invalid variable name {name:?}"));
    }
    if variables.contains(&name) {
        return Err(format!("repeated variable name {name:?}"));
    }
    if variables.len() >= MAX_VARIABLES {
        return Err(format!("exceeded variable count limit ({MAX_VARIABLES})"));
    }
    variables.push(name);
    Ok(())
}

fn glob_pattern(glob: Glob) -> String {
    match glob {
        Glob::Path => format!("[{LITERAL}]+"),
        Glob::Text => format!("[{LITERAL}/]*"),
    }
}

/// A literal segment, escaped for the regex.
fn literal(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b));
    if !valid {
        return Err(format!("invalid literal {s:?}"));
    }
    Ok(regex::escape(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(template: &str, path: &str) -> bool {
        template_regex(template).unwrap().is_match(path)
    }

    #[test]
    fn globs_as_istio_emits_them() {
        // paths: ["/path/template/{*}"] and ["/{**}/path/template"].
        assert!(m("/path/template/*", "/path/template/x"));
        assert!(!m("/path/template/*", "/path/template/x/y"));
        assert!(!m("/path/template/*", "/path/template/"));
        assert!(m("/**/path/template", "/a/b/path/template"));
        assert!(m("/**/path/template", "//path/template"));
        assert!(!m("/**/path/template", "/a/b/path/template/c"));
    }

    #[test]
    fn variables_suffixes_and_literals() {
        assert!(m("/v1/{id}/x", "/v1/42/x"));
        assert!(m("/v1/{rest=a/**}", "/v1/a/b/c"));
        assert!(m("/files/**.txt", "/files/a/b.txt"));
        assert!(m("/a/", "/a/"));
        assert!(!m("/a/", "/a"));
        // Literal dots are literal.
        assert!(!m("/a.b", "/aXb"));
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for bad in [
            "no-slash", "/**/x/**", "/{a}/{a}", "/{1a}", "/{a", "/a b", "/x*y/z", "/{a=}",
        ] {
            assert!(template_regex(bad).is_err(), "{bad} should be rejected");
        }
    }
}
