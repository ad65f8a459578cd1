//! Expected versus observed, per request: the matrix the suite prints, and what each
//! scenario test asserts on.

use serde_json::Value;

use super::client::Outcome;

/// Who the server should see as the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// mTLS: XFCC carries exactly this client URI (and nothing forged).
    Mtls(String),
    /// Plaintext: no XFCC reaches the app.
    Plaintext,
    /// mTLS with this URI if the answering workload has a sidecar, else plaintext (a
    /// service with endpoints of both kinds).
    MtlsIfSidecar(String),
}

/// What a user should see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// 200 from the echo app, with the peer as given.
    Ok(Peer),
    /// 403 `RBAC: access denied`.
    Denied,
    /// A local reply with this status (503 for an upstream TLS failure).
    Status(u16),
    /// The connection is reset or closed with no response (`curl: (56)`).
    Reset,
    /// The TCP echo answers.
    Echo,
    /// The TCP echo answers a connection that came from this IP (127.0.0.6: the server's
    /// sidecar forwarded it).
    EchoFrom(String),
}

/// One request of the matrix.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub step: String,
    pub from: String,
    pub to: String,
    pub expected: String,
    pub observed: String,
    pub pass: bool,
    /// How many attempts it took to converge after a config change.
    pub tries: u32,
}

/// The rows of one or more scenarios, plus failures that prevented checks from running.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub errors: Vec<String>,
}

// === impl Expect ===

impl Expect {
    /// Whether `outcome` is what this expects; `sidecar(workload)` says whether the
    /// workload that answered has a sidecar.
    pub fn matches(&self, outcome: &Outcome, sidecar: &dyn Fn(&str) -> bool) -> bool {
        match (self, outcome) {
            (Expect::Ok(peer), Outcome::Http { status: 200, body }) => {
                let Ok(json) = serde_json::from_str::<Value>(body) else {
                    return false;
                };
                let uris = xfcc_uris(&json);
                match peer {
                    Peer::Plaintext => xfcc(&json).is_none(),
                    Peer::Mtls(uri) => uris == [uri.as_str()],
                    Peer::MtlsIfSidecar(uri) => {
                        let answered = json["workload"].as_str().unwrap_or_default();
                        if sidecar(answered) {
                            uris == [uri.as_str()]
                        } else {
                            xfcc(&json).is_none()
                        }
                    }
                }
            }
            (Expect::Denied, Outcome::Http { status: 403, body }) => body == "RBAC: access denied",
            (Expect::Status(want), Outcome::Http { status, .. }) => want == status,
            (Expect::Reset, Outcome::Reset(_)) => true,
            (Expect::Echo, Outcome::Tcp(line)) => line.ends_with(" ping"),
            (Expect::EchoFrom(ip), Outcome::Tcp(line)) => {
                line.ends_with(" ping")
                    && line
                        .split_whitespace()
                        .nth(1)
                        .is_some_and(|peer| peer.starts_with(&format!("{ip}:")))
            }
            _ => false,
        }
    }

    /// Short text for the matrix.
    pub fn describe(&self) -> String {
        match self {
            Expect::Ok(Peer::Mtls(uri)) => format!("200 mTLS {}", short(uri)),
            Expect::Ok(Peer::Plaintext) => "200 plaintext".into(),
            Expect::Ok(Peer::MtlsIfSidecar(uri)) => {
                format!("200 mTLS {} if sidecar, else plaintext", short(uri))
            }
            Expect::Denied => "403 RBAC: access denied".into(),
            Expect::Status(s) => s.to_string(),
            Expect::Reset => "reset".into(),
            Expect::Echo => "echo".into(),
            Expect::EchoFrom(ip) => format!("echo, peer {ip}"),
        }
    }
}

/// `spiffe://cluster.local/ns/full/sa/sleep` -> `full/sleep`.
fn short(uri: &str) -> String {
    match uri.rsplit_once("/ns/") {
        Some((_, rest)) => rest.replace("/sa/", "/"),
        None => uri.to_string(),
    }
}

/// The XFCC header the app saw, if any.
pub fn xfcc(echo: &Value) -> Option<&str> {
    echo["headers"]["x-forwarded-client-cert"].as_str()
}

/// Every `URI=` in the app's XFCC header, in order.
pub fn xfcc_uris(echo: &Value) -> Vec<&str> {
    xfcc_fields(echo, "URI")
}

/// Every `<key>=` value in the app's XFCC header, in order.
pub fn xfcc_fields<'a>(echo: &'a Value, key: &str) -> Vec<&'a str> {
    xfcc(echo)
        .into_iter()
        .flat_map(|h| h.split([',', ';']))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim_matches('"'))
        .collect()
}

/// Short text of what the client saw.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Http { status, body } => match serde_json::from_str::<Value>(body) {
            Ok(json) if json["workload"].is_string() => {
                let by = json["workload"].as_str().unwrap_or_default();
                let uris = xfcc_uris(&json);
                if xfcc(&json).is_none() {
                    format!("{status} plaintext @{by}")
                } else {
                    let uris: Vec<String> = uris.iter().map(|u| short(u)).collect();
                    format!("{status} mTLS {} @{by}", uris.join("+"))
                }
            }
            _ => format!("{status} {}", body.chars().take(60).collect::<String>()),
        },
        Outcome::Tcp(line) => format!("echo ({line})"),
        Outcome::Reset(why) => format!("reset ({why})"),
        Outcome::Timeout => "timeout".into(),
        Outcome::ConnectFailed(why) => format!("connect failed ({why})"),
    }
}

// === impl Row ===

impl Row {
    /// A row for a check that is not a single request (a load run, a config dump).
    pub fn new(scenario: &str, step: &str, from: &str, to: &str) -> Self {
        Self {
            scenario: scenario.to_string(),
            step: step.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            expected: String::new(),
            observed: String::new(),
            pass: false,
            tries: 1,
        }
    }

    /// The row with its verdict.
    pub fn outcome(
        mut self,
        expected: impl Into<String>,
        observed: impl Into<String>,
        pass: bool,
    ) -> Self {
        self.expected = expected.into();
        self.observed = observed.into();
        self.pass = pass;
        self
    }
}

// === impl Report ===

impl Report {
    pub fn passed(&self) -> usize {
        self.rows.iter().filter(|r| r.pass).count()
    }

    /// Failed rows plus errors that stopped a scenario.
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| !r.pass).count() + self.errors.len()
    }

    pub fn extend(&mut self, other: Report) {
        self.rows.extend(other.rows);
        self.errors.extend(other.errors);
    }

    /// The matrix, one line per request, then errors.
    pub fn matrix(&self) -> String {
        let headers = ["scenario", "step", "from", "to", "expected", "observed", ""];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                let verdict = match (r.pass, r.tries) {
                    (true, 1) => "ok".to_string(),
                    (true, n) => format!("ok ({n} tries)"),
                    (false, _) => "FAIL".to_string(),
                };
                [
                    r.scenario.clone(),
                    r.step.clone(),
                    r.from.clone(),
                    r.to.clone(),
                    r.expected.clone(),
                    r.observed.clone(),
                    verdict,
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count()).min(60);
            }
        }
        let mut out = String::new();
        let line = |cols: Vec<&str>, out: &mut String| {
            let parts: Vec<String> = cols
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(parts.join(" | ").trim_end());
            out.push('\n');
        };
        line(headers.to_vec(), &mut out);
        for row in &cells {
            line(row.iter().map(String::as_str).collect(), &mut out);
        }
        for e in &self.errors {
            out.push_str(&format!("ERROR {e}\n"));
        }
        out
    }

    /// `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}
