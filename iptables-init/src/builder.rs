//! An ordered set of iptables rules for IPv4 and IPv6, and the texts derived from it:
//! the `iptables-restore` input, the `-C` checks that tell whether the rules are in place,
//! and the `-D`/`-F`/`-X` commands that undo them.
//!
//! The output format and ordering follow Istio's rule builder exactly
//! (`tools/istio-iptables/pkg/builder`): per table, `-N` for every custom chain in order of
//! first use (then chains only jumped to), then the rules in the order they were added,
//! tables sorted by name.

use std::collections::BTreeMap;
use std::fmt;

/// An iptables table. The order is the order Istio writes them in (alphabetical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Mangle,
    Nat,
    Raw,
}

// === impl Table ===

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Mangle => "mangle",
            Self::Nat => "nat",
            Self::Raw => "raw",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP family: which of iptables / ip6tables a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

// === impl Family ===

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// The chains iptables has built in; they are never created or deleted.
pub fn is_builtin_chain(chain: &str) -> bool {
    matches!(
        chain,
        "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING"
    )
}

/// Whether a chain is one of ours.
pub fn is_istio_chain(chain: &str) -> bool {
    chain.starts_with("ISTIO_")
}

/// Append at the end of the chain, or insert at a 1-based position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Append,
    Insert(u32),
}

/// One rule: table, chain, where it goes and its match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: String,
    pub position: Position,
    pub args: Vec<String>,
}

// === impl Rule ===

impl Rule {
    /// The jump target (`-j X`), when the rule ends with one.
    pub fn jump_target(&self) -> Option<&str> {
        match self.args.as_slice() {
            [.., j, target] if j == "-j" => Some(target),
            _ => None,
        }
    }

    /// The line as it appears in `iptables-restore` input.
    pub fn restore_line(&self) -> String {
        let mut line = match self.position {
            Position::Append => format!("-A {}", self.chain),
            Position::Insert(pos) => format!("-I {} {pos}", self.chain),
        };
        for arg in &self.args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }

    /// `iptables` arguments with the given operation (`-C`, `-D`) instead of `-A`/`-I`.
    fn command(&self, op: &str) -> Vec<String> {
        let mut cmd = vec![
            "-t".to_string(),
            self.table.as_str().to_string(),
            op.to_string(),
            self.chain.clone(),
        ];
        cmd.extend(self.args.iter().cloned());
        cmd
    }
}

/// Which families a rule goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Both,
    Only(Family),
}

/// The rules for both families, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    ipv6: bool,
    v4: Vec<Rule>,
    v6: Vec<Rule>,
}

// === impl RuleSet ===

impl RuleSet {
    /// An empty set. IPv6 rules are only kept when `ipv6` is set, like Istio's `EnableIPv6`.
    pub fn new(ipv6: bool) -> Self {
        Self {
            ipv6,
            ..Self::default()
        }
    }

    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    pub fn rules(&self, family: Family) -> &[Rule] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Adds a rule, written as iptables arguments (`"-p tcp --dport 15008 -j RETURN"`), to
    /// the families in `scope`. The arguments never contain spaces: every value that goes
    /// into a rule is validated for that when the configuration is parsed.
    pub fn add(&mut self, scope: Scope, table: Table, chain: &str, position: Position, rule: &str) {
        for family in Family::BOTH {
            if matches!(scope, Scope::Only(f) if f != family) {
                continue;
            }
            let rule = Rule {
                table,
                chain: chain.to_string(),
                position,
                args: rule.split_whitespace().map(String::from).collect(),
            };
            match family {
                Family::V4 => self.v4.push(rule),
                Family::V6 if self.ipv6 => self.v6.push(rule),
                Family::V6 => {}
            }
        }
    }

    /// Appends a rule to both families.
    pub fn append(&mut self, table: Table, chain: &str, rule: &str) {
        self.add(Scope::Both, table, chain, Position::Append, rule);
    }

    /// Appends a rule to one family.
    pub fn append_for(&mut self, family: Family, table: Table, chain: &str, rule: &str) {
        self.add(Scope::Only(family), table, chain, Position::Append, rule);
    }

    /// Appends a rule whose text differs per family (an address, typically).
    pub fn append_versioned(&mut self, table: Table, chain: &str, rule: impl Fn(Family) -> String) {
        for family in Family::BOTH {
            self.append_for(family, table, chain, &rule(family));
        }
    }

    /// Inserts a rule at a 1-based position, in both families.
    pub fn insert(&mut self, table: Table, chain: &str, position: u32, rule: &str) {
        self.add(Scope::Both, table, chain, Position::Insert(position), rule);
    }

    /// Inserts a rule at a 1-based position, in one family.
    pub fn insert_for(
        &mut self,
        family: Family,
        table: Table,
        chain: &str,
        position: u32,
        rule: &str,
    ) {
        self.add(
            Scope::Only(family),
            table,
            chain,
            Position::Insert(position),
            rule,
        );
    }

    /// The custom chains per table, in the order Istio declares them: chains that hold
    /// rules first, then chains that are only jumped to.
    pub fn chains(&self, family: Family) -> Vec<(Table, String)> {
        let rules = self.rules(family);
        let mut chains: Vec<(Table, String)> = Vec::new();
        let mut declare = |table: Table, chain: &str| {
            if !is_builtin_chain(chain) && !chains.iter().any(|(t, c)| *t == table && c == chain) {
                chains.push((table, chain.to_string()));
            }
        };
        for rule in rules {
            declare(rule.table, &rule.chain);
        }
        for rule in rules {
            if let Some(target) = rule.jump_target().filter(|t| is_istio_chain(t)) {
                declare(rule.table, target);
            }
        }
        chains
    }

    /// The `iptables-restore --noflush` input for one family; empty when there are no rules.
    pub fn restore_input(&self, family: Family) -> String {
        let mut tables: BTreeMap<Table, Vec<String>> = BTreeMap::new();
        for (table, chain) in self.chains(family) {
            tables.entry(table).or_default().push(format!("-N {chain}"));
        }
        for rule in self.rules(family) {
            tables
                .entry(rule.table)
                .or_default()
                .push(rule.restore_line());
        }
        let mut out = String::new();
        for (table, lines) in tables {
            out.push_str("* ");
            out.push_str(table.as_str());
            out.push('\n');
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// `iptables -C` arguments, one per rule: all succeed iff every rule is in place.
    pub fn check_commands(&self, family: Family) -> Vec<Vec<String>> {
        self.rules(family).iter().map(|r| r.command("-C")).collect()
    }

    /// The commands that remove these rules and chains again, as Istio's cleanup does:
    /// `-D` for every rule outside our chains (and every jump into them), newest first;
    /// then `-F` of all our chains, then `-X` of all of them.
    pub fn undo_commands(&self, family: Family) -> Vec<Vec<String>> {
        let mut cmds: Vec<Vec<String>> = self
            .rules(family)
            .iter()
            .rev()
            .filter(|r| !is_istio_chain(&r.chain) || r.jump_target().is_some_and(is_istio_chain))
            .map(|r| r.command("-D"))
            .collect();
        let chains = self.chains(family);
        for op in ["-F", "-X"] {
            for (table, chain) in chains.iter().rev() {
                cmds.push(vec![
                    "-t".to_string(),
                    table.as_str().to_string(),
                    op.to_string(),
                    chain.clone(),
                ]);
            }
        }
        cmds
    }
}

/// Temporary rules that drop all TCP and UDP while `--reconcile` replaces drifted rules, so
/// no connection slips through uncaptured in between (Istio's "guardrails").
pub fn guardrail_commands(op: &str) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        for proto in ["tcp", "udp"] {
            let mut cmd = vec!["-t", "filter", op, chain];
            if op == "-I" {
                cmd.push("1");
            }
            cmd.extend(["-p", proto, "-j", "DROP"]);
            cmds.push(cmd.into_iter().map(String::from).collect());
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RuleSet {
        let mut rs = RuleSet::new(true);
        rs.append(
            Table::Nat,
            "ISTIO_INBOUND",
            "-p tcp --dport 15008 -j RETURN",
        );
        rs.append(Table::Nat, "PREROUTING", "-p tcp -j ISTIO_INBOUND");
        rs.append(Table::Nat, "OUTPUT", "-j ISTIO_OUTPUT");
        rs.append_versioned(Table::Nat, "ISTIO_OUTPUT", |f| {
            let lo = if f == Family::V4 {
                "127.0.0.1/32"
            } else {
                "::1/128"
            };
            format!("-d {lo} -j RETURN")
        });
        rs.insert_for(
            Family::V4,
            Table::Mangle,
            "ISTIO_INBOUND",
            2,
            "-i lo -j RETURN",
        );
        rs
    }

    #[test]
    fn restore_input_declares_chains_then_rules_tables_sorted() {
        let rs = sample();
        assert_eq!(
            rs.restore_input(Family::V4),
            "* mangle\n-N ISTIO_INBOUND\n-I ISTIO_INBOUND 2 -i lo -j RETURN\nCOMMIT\n\
             * nat\n-N ISTIO_INBOUND\n-N ISTIO_OUTPUT\n\
             -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN\n\
             -A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -j ISTIO_OUTPUT\n\
             -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\nCOMMIT\n"
        );
        assert!(
            rs.restore_input(Family::V6)
                .contains("-A ISTIO_OUTPUT -d ::1/128 -j RETURN")
        );
        assert!(!rs.restore_input(Family::V6).contains("mangle"));
    }

    #[test]
    fn ipv6_rules_dropped_when_disabled() {
        let mut rs = RuleSet::new(false);
        rs.append(Table::Nat, "OUTPUT", "-j ISTIO_OUTPUT");
        assert_eq!(rs.restore_input(Family::V6), "");
        assert_eq!(rs.rules(Family::V4).len(), 1);
    }

    #[test]
    fn undo_removes_jumps_and_outside_rules_then_flushes_and_deletes_chains() {
        let rs = sample();
        let undo: Vec<String> = rs
            .undo_commands(Family::V4)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            undo,
            vec![
                "-t nat -D OUTPUT -j ISTIO_OUTPUT",
                "-t nat -D PREROUTING -p tcp -j ISTIO_INBOUND",
                "-t mangle -F ISTIO_INBOUND",
                "-t nat -F ISTIO_OUTPUT",
                "-t nat -F ISTIO_INBOUND",
                "-t mangle -X ISTIO_INBOUND",
                "-t nat -X ISTIO_OUTPUT",
                "-t nat -X ISTIO_INBOUND",
            ]
        );
    }

    #[test]
    fn check_commands_drop_insert_positions() {
        let rs = sample();
        let checks = rs.check_commands(Family::V4);
        assert_eq!(
            checks.last().unwrap().join(" "),
            "-t mangle -C ISTIO_INBOUND -i lo -j RETURN"
        );
    }
}
