//! Reading `iptables-save` output: what is in place now, whether our rules are there, and
//! what changed between two snapshots (so a failed apply can be rolled back exactly).

use std::collections::BTreeMap;

use crate::builder::{is_builtin_chain, is_istio_chain};

/// One table of an `iptables-save` dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Declared chains (built-in and custom), in order.
    pub chains: Vec<String>,
    /// Rule lines as printed, e.g. `-A OUTPUT -p tcp -j ISTIO_OUTPUT`.
    pub rules: Vec<String>,
    /// A built-in chain has a policy other than ACCEPT.
    pub restrictive_policy: bool,
}

// === impl SavedTable ===

impl SavedTable {
    /// The rules of one chain.
    pub fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.rules
            .iter()
            .filter(move |r| rule_chain(r) == Some(chain))
    }

    /// No rules, no custom chains, every policy ACCEPT: the table changes no packet.
    pub fn is_inert(&self) -> bool {
        self.rules.is_empty()
            && !self.restrictive_policy
            && self.chains.iter().all(|c| is_builtin_chain(c))
    }
}

/// A parsed `iptables-save` dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub tables: BTreeMap<String, SavedTable>,
}

// === impl Saved ===

impl Saved {
    /// Parses `iptables-save` output (comments and counters are ignored).
    pub fn parse(text: &str) -> Self {
        let mut saved = Self::default();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                let name = name.trim().to_string();
                saved.tables.entry(name.clone()).or_default();
                current = Some(name);
                continue;
            }
            let Some(table) = current.as_ref().and_then(|t| saved.tables.get_mut(t)) else {
                continue;
            };
            if let Some(decl) = line.strip_prefix(':') {
                let mut words = decl.split_whitespace();
                if let Some(chain) = words.next() {
                    table.chains.push(chain.to_string());
                    let policy = words.next().unwrap_or("-");
                    if is_builtin_chain(chain) && policy != "ACCEPT" {
                        table.restrictive_policy = true;
                    }
                }
            } else if line.starts_with("-A ") {
                table.rules.push(line.to_string());
            }
        }
        saved
    }

    /// Whether anything at all is programmed: a rule anywhere, or one of our chains. This is
    /// Istio's notion of "residue": a clean namespace has neither.
    pub fn has_residue(&self) -> bool {
        self.tables
            .values()
            .any(|t| !t.rules.is_empty() || t.chains.iter().any(|c| is_istio_chain(c)))
    }

    /// Our chains per table.
    pub fn istio_chains(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (table, t) in &self.tables {
            for chain in t.chains.iter().filter(|c| is_istio_chain(c)) {
                out.push((table.clone(), chain.clone()));
            }
        }
        out
    }

    /// Commands that remove every trace of Istio capture found here: jumps into ISTIO_*
    /// chains from other chains, then the ISTIO_* chains themselves. Used by `--cleanup-only`
    /// and `--reconcile` for leftovers the current flags would not have produced.
    pub fn istio_leftover_cleanup(&self) -> Vec<Vec<String>> {
        let mut cmds = Vec::new();
        for (table, t) in &self.tables {
            for rule in t.rules.iter().rev() {
                let Some(chain) = rule_chain(rule) else {
                    continue;
                };
                if !is_istio_chain(chain) && jump_target(rule).is_some_and(is_istio_chain) {
                    cmds.push(delete_command(table, rule));
                }
            }
        }
        let chains = self.istio_chains();
        for op in ["-F", "-X"] {
            for (table, chain) in &chains {
                cmds.push(vec!["-t".into(), table.clone(), op.into(), chain.clone()]);
            }
        }
        cmds
    }

    /// Commands that undo everything `after` has that `self` (the earlier snapshot) did not:
    /// new rules in pre-existing chains are deleted, new chains are flushed and deleted.
    /// Rules that existed before are never touched.
    pub fn rollback_commands(&self, after: &Saved) -> Vec<Vec<String>> {
        let mut deletes = Vec::new();
        let mut new_chains = Vec::new();
        for (table, now) in &after.tables {
            let before = self.tables.get(table).cloned().unwrap_or_default();
            let added_chains: Vec<&String> = now
                .chains
                .iter()
                .filter(|c| !is_builtin_chain(c) && !before.chains.contains(c))
                .collect();
            // Multiset difference: a rule present n times before may be present n+k now.
            let mut remaining = before.rules.clone();
            let mut added_rules = Vec::new();
            for rule in &now.rules {
                if let Some(i) = remaining.iter().position(|r| r == rule) {
                    remaining.swap_remove(i);
                } else {
                    added_rules.push(rule);
                }
            }
            for rule in added_rules.into_iter().rev() {
                let in_new_chain =
                    rule_chain(rule).is_some_and(|c| added_chains.iter().any(|n| *n == c));
                if !in_new_chain {
                    deletes.push(delete_command(table, rule));
                }
            }
            for chain in added_chains {
                new_chains.push((table.clone(), chain.clone()));
            }
        }
        let mut cmds = deletes;
        for op in ["-F", "-X"] {
            for (table, chain) in &new_chains {
                cmds.push(vec!["-t".into(), table.clone(), op.into(), chain.clone()]);
            }
        }
        cmds
    }

    /// The dump with comments and counters removed, for comparisons.
    pub fn normalized(text: &str) -> String {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.strip_prefix(':') {
                // ":OUTPUT ACCEPT [12:345]" -> ":OUTPUT ACCEPT"
                Some(decl) => {
                    let mut words = decl.split_whitespace();
                    let chain = words.next().unwrap_or_default();
                    let policy = words.next().unwrap_or_default();
                    format!(":{chain} {policy}")
                }
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Tables that are inert now and did not exist in `before` (or, without `before`, all
    /// inert tables): iptables-nft creates a table on first use and cannot delete it, so
    /// these are what an undo leaves behind.
    pub fn leftover_inert_tables(&self, before: Option<&Saved>) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(name, t)| {
                t.is_inert() && before.is_none_or(|b| !b.tables.contains_key(*name))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Same tables, chains and rules (counters aside; rule order within a chain matters).
    pub fn same_as(&self, other: &Saved) -> bool {
        let key = |s: &Saved| {
            s.tables
                .iter()
                .map(|(name, t)| {
                    let mut chains = t.chains.clone();
                    chains.sort();
                    (name.clone(), chains, t.rules.clone(), t.restrictive_policy)
                })
                .collect::<Vec<_>>()
        };
        key(self) == key(other)
    }
}

/// The chain a saved rule line belongs to.
pub fn rule_chain(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace();
    match (words.next(), words.next()) {
        (Some("-A"), Some(chain)) => Some(chain),
        _ => None,
    }
}

fn jump_target(rule: &str) -> Option<&str> {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "-j" || w[0] == "--jump")
        .map(|w| w[1])
}

/// `-A CHAIN args` from a dump, as `iptables -t TABLE -D CHAIN args`.
fn delete_command(table: &str, rule: &str) -> Vec<String> {
    let mut words = split_words(rule);
    if !words.is_empty() {
        words[0] = "-D".to_string();
    }
    let mut cmd = vec!["-t".to_string(), table.to_string()];
    cmd.extend(words);
    cmd
}

/// Splits a saved rule into arguments, honouring the double quotes iptables-save puts
/// around arguments with spaces (comments, log prefixes).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Generated by iptables-nft-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n\
        :OUTPUT ACCEPT [3:180]\n-A OUTPUT -d 10.9.9.9/32 -m comment --comment \"user rule\" -j RETURN\nCOMMIT\n";

    const AFTER: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:ISTIO_DIVERT - [0:0]\n\
        -A ISTIO_DIVERT -j ACCEPT\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [9:540]\n\
        :ISTIO_OUTPUT - [0:0]\n-A OUTPUT -d 10.9.9.9/32 -m comment --comment \"user rule\" -j RETURN\n\
        -A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j RETURN\nCOMMIT\n";

    #[test]
    fn residue_and_chains() {
        assert!(!Saved::parse("").has_residue());
        assert!(!Saved::parse("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n").has_residue());
        assert!(
            Saved::parse(BEFORE).has_residue(),
            "any rule counts, as in Istio"
        );
        assert_eq!(Saved::parse(AFTER).istio_chains().len(), 2);
    }

    #[test]
    fn rollback_removes_only_what_was_added() {
        let cmds: Vec<String> = Saved::parse(BEFORE)
            .rollback_commands(&Saved::parse(AFTER))
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            cmds,
            vec![
                "-t nat -D OUTPUT -j ISTIO_OUTPUT",
                "-t mangle -F ISTIO_DIVERT",
                "-t nat -F ISTIO_OUTPUT",
                "-t mangle -X ISTIO_DIVERT",
                "-t nat -X ISTIO_OUTPUT",
            ]
        );
    }

    #[test]
    fn leftovers_are_jumps_and_chains() {
        let cmds: Vec<String> = Saved::parse(AFTER)
            .istio_leftover_cleanup()
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(cmds[0], "-t nat -D OUTPUT -j ISTIO_OUTPUT");
        assert!(cmds.contains(&"-t nat -X ISTIO_OUTPUT".to_string()));
        assert!(!cmds.iter().any(|c| c.contains("user rule")));
    }

    #[test]
    fn inert_tables_are_the_ones_an_undo_leaves_behind() {
        let after = Saved::parse(
            "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*raw\n:OUTPUT DROP [0:0]\nCOMMIT\n",
        );
        let before = Saved::parse("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(after.leftover_inert_tables(Some(&before)), vec!["filter"]);
        assert_eq!(after.leftover_inert_tables(None), vec!["filter", "nat"]);
        assert!(!Saved::parse(AFTER).tables["nat"].is_inert());
    }

    #[test]
    fn quoted_words() {
        assert_eq!(
            split_words(r#"-A OUTPUT -m comment --comment "a \"b\" c" -j RETURN"#),
            vec![
                "-A",
                "OUTPUT",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "RETURN"
            ]
        );
    }

    #[test]
    fn normalization_drops_counters_and_comments() {
        assert_eq!(
            Saved::normalized(BEFORE),
            "*nat\n:PREROUTING ACCEPT\n:OUTPUT ACCEPT\n\
             -A OUTPUT -d 10.9.9.9/32 -m comment --comment \"user rule\" -j RETURN\nCOMMIT"
        );
    }
}
