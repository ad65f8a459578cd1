//! Envoy's log line formats: spdlog patterns (`--log-format`, the bootstrap's
//! `application_log_config.log_format.text_format`) and JSON formats (`json_format`, a map
//! of keys to patterns), rendered for our tracing events.
//!
//! Supported spdlog flags: `%Y %y %m %d %H %M %S %T %D %R %e %f %F %z %l %L %n %t %P %v %_
//! %j %g %s %# %! %%`; `%^`/`%$` (colour) and alignment (`%-8l`) are accepted and ignored.
//! Others print as written. Times are UTC (sidecar containers run in UTC).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Envoy's default: `[2026-01-02 03:04:05.678][12][info][main] [src/main.rs:10] message`.
pub const DEFAULT_PATTERN: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v";

/// A log line format.
#[derive(Clone, Debug, PartialEq)]
pub enum LogFormat {
    /// One spdlog pattern.
    Text(Pattern),
    /// A JSON object per line, each value rendered from its own pattern.
    Json(Vec<(String, Pattern)>),
}

/// A parsed spdlog pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern(Vec<Token>);

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Literal(String),
    Year,
    ShortYear,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millis,
    Micros,
    Nanos,
    UtcOffset,
    Level,
    ShortLevel,
    Logger,
    Thread,
    Pid,
    Message,
    EscapedMessage,
    JsonMessage,
    File,
    ShortFile,
    Line,
    Function,
}

/// One event, as the formatter needs it.
#[derive(Debug)]
pub struct Record<'a> {
    pub time: SystemTime,
    /// Envoy's level name: trace, debug, info, warning, error, critical.
    pub level: &'a str,
    /// The Envoy component (logger) name.
    pub component: &'a str,
    pub thread: i64,
    pub pid: u32,
    pub message: &'a str,
    pub file: &'a str,
    pub line: u32,
}

// === impl Pattern ===

impl Pattern {
    /// Parses an spdlog pattern. Never fails: unknown flags print literally.
    pub fn parse(text: &str) -> Pattern {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            // Alignment and width (%-8l, %=10v): accepted, not applied.
            let mut skipped = String::new();
            while let Some(&m) = chars
                .peek()
                .filter(|m| **m == '-' || **m == '=' || m.is_ascii_digit())
            {
                skipped.push(m);
                chars.next();
            }
            let Some(flag) = chars.next() else {
                literal.push('%');
                literal.push_str(&skipped);
                break;
            };
            match expand(flag) {
                Some(parts) => {
                    for part in parts {
                        match part {
                            Token::Literal(s) => literal.push_str(&s),
                            token => {
                                flush(&mut tokens, &mut literal);
                                tokens.push(token);
                            }
                        }
                    }
                }
                None => {
                    literal.push('%');
                    literal.push_str(&skipped);
                    literal.push(flag);
                }
            }
        }
        flush(&mut tokens, &mut literal);
        Pattern(tokens)
    }

    /// Renders one record.
    pub fn render(&self, record: &Record<'_>, escape: bool, out: &mut String) {
        let since_epoch = record.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        let nanos = since_epoch.subsec_nanos();
        let ((year, month, day), (hour, minute, second)) = crate::proto::utc_parts(secs);
        for token in &self.0 {
            // Writing to a String cannot fail.
            let _ = match token {
                Token::Literal(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Token::Year => write!(out, "{year:04}"),
                Token::ShortYear => write!(out, "{:02}", year % 100),
                Token::Month => write!(out, "{month:02}"),
                Token::Day => write!(out, "{day:02}"),
                Token::Hour => write!(out, "{hour:02}"),
                Token::Minute => write!(out, "{minute:02}"),
                Token::Second => write!(out, "{second:02}"),
                Token::Millis => write!(out, "{:03}", nanos / 1_000_000),
                Token::Micros => write!(out, "{:06}", nanos / 1_000),
                Token::Nanos => write!(out, "{nanos:09}"),
                Token::UtcOffset => write!(out, "+00:00"),
                Token::Level => write!(out, "{}", record.level),
                Token::ShortLevel => write!(
                    out,
                    "{}",
                    record
                        .level
                        .chars()
                        .next()
                        .unwrap_or('?')
                        .to_ascii_uppercase()
                ),
                Token::Logger => write!(out, "{}", record.component),
                Token::Thread => write!(out, "{}", record.thread),
                Token::Pid => write!(out, "{}", record.pid),
                Token::Message if escape => write!(out, "{}", record.message.escape_default()),
                Token::Message => write!(out, "{}", record.message),
                Token::EscapedMessage => write!(out, "{}", escape_newlines(record.message)),
                Token::JsonMessage => write!(out, "{}", json_escape(record.message)),
                Token::File => write!(out, "{}", record.file),
                Token::ShortFile => write!(
                    out,
                    "{}",
                    record.file.rsplit('/').next().unwrap_or(record.file)
                ),
                Token::Line => write!(out, "{}", record.line),
                Token::Function => Ok(()),
            };
        }
    }
}

// === impl LogFormat ===

impl LogFormat {
    /// One line (without the newline) for `record`.
    pub fn render(&self, record: &Record<'_>, escape: bool) -> String {
        let mut out = String::with_capacity(128);
        match self {
            LogFormat::Text(pattern) => pattern.render(record, escape, &mut out),
            LogFormat::Json(fields) => {
                let mut object = serde_json::Map::new();
                for (key, pattern) in fields {
                    let mut value = String::new();
                    pattern.render(record, false, &mut value);
                    object.insert(key.clone(), serde_json::Value::String(value));
                }
                out = serde_json::Value::Object(object).to_string();
            }
        }
        out
    }
}

impl Default for LogFormat {
    fn default() -> Self {
        LogFormat::Text(Pattern::parse(DEFAULT_PATTERN))
    }
}

fn flush(tokens: &mut Vec<Token>, literal: &mut String) {
    if !literal.is_empty() {
        tokens.push(Token::Literal(std::mem::take(literal)));
    }
}

/// What one spdlog flag stands for, or `None` for a flag we do not know.
fn expand(flag: char) -> Option<Vec<Token>> {
    let sep = |s: &str| Token::Literal(s.to_string());
    let one = |t: Token| Some(vec![t]);
    match flag {
        'Y' => one(Token::Year),
        'y' => one(Token::ShortYear),
        'm' => one(Token::Month),
        'd' => one(Token::Day),
        'H' => one(Token::Hour),
        'M' => one(Token::Minute),
        'S' => one(Token::Second),
        'e' => one(Token::Millis),
        'f' => one(Token::Micros),
        'F' => one(Token::Nanos),
        'z' => one(Token::UtcOffset),
        'l' => one(Token::Level),
        'L' => one(Token::ShortLevel),
        'n' => one(Token::Logger),
        't' => one(Token::Thread),
        'P' => one(Token::Pid),
        'v' => one(Token::Message),
        '_' => one(Token::EscapedMessage),
        'j' => one(Token::JsonMessage),
        'g' => one(Token::File),
        's' => one(Token::ShortFile),
        '#' => one(Token::Line),
        '!' => one(Token::Function),
        'T' => Some(vec![
            Token::Hour,
            sep(":"),
            Token::Minute,
            sep(":"),
            Token::Second,
        ]),
        'R' => Some(vec![Token::Hour, sep(":"), Token::Minute]),
        'D' => Some(vec![
            Token::Month,
            sep("/"),
            Token::Day,
            sep("/"),
            Token::ShortYear,
        ]),
        // Colour range: nothing to print.
        '^' | '$' => Some(Vec::new()),
        '%' => one(sep("%")),
        _ => None,
    }
}

fn escape_newlines(message: &str) -> String {
    message.replace('\n', "\\n")
}

/// `message` escaped for the inside of a JSON string (Envoy's `%j`).
fn json_escape(message: &str) -> String {
    let quoted = serde_json::Value::String(message.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(message: &str) -> Record<'_> {
        Record {
            // 2026-01-02T03:04:05.678901234Z
            time: UNIX_EPOCH + Duration::new(1_767_323_045, 678_901_234),
            level: "warning",
            component: "config",
            thread: 12,
            pid: 1,
            message,
            file: "proxy/src/bootstrap.rs",
            line: 42,
        }
    }

    #[test]
    fn envoy_default_format() {
        let line = LogFormat::default().render(&record("hello"), false);
        assert_eq!(
            line,
            "[2026-01-02 03:04:05.678][12][warning][config] [proxy/src/bootstrap.rs:42] hello"
        );
    }

    #[test]
    fn istio_text_format() {
        let pattern = Pattern::parse("%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t");
        let mut out = String::new();
        pattern.render(&record("hi"), false, &mut out);
        assert_eq!(
            out,
            "2026-01-02T03:04:05.678901Z\twarning\tenvoy config proxy/src/bootstrap.rs:42\thi\tthread=12"
        );
    }

    #[test]
    fn json_format_renders_each_key() {
        let format = LogFormat::Json(vec![
            ("level".into(), Pattern::parse("%l")),
            ("msg".into(), Pattern::parse("%j")),
        ]);
        let line = format.render(&record("a \"quoted\"\nline"), false);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["level"], "warning");
        assert_eq!(parsed["msg"], "a \\\"quoted\\\"\\nline");
    }

    #[test]
    fn escaping_and_unknown_flags() {
        let mut out = String::new();
        Pattern::parse("%-8l|%^%v%$|%q|100%%|%D %R").render(&record("a\nb"), true, &mut out);
        assert_eq!(out, "warning|a\\nb|%q|100%|01/02/26 03:04");
    }
}
