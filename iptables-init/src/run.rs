//! Applying a [`Plan`] to the current network namespace, as istio-iptables does: check what
//! is already there, apply with one `iptables-restore --noflush` per family, and never leave
//! a half-applied rule set behind (a failure rolls back exactly what this run added).

use std::collections::BTreeMap;
use std::io::Write;

use crate::builder::{Family, RuleSet, guardrail_commands, is_builtin_chain, is_istio_chain};
use crate::capture::{HostStep, Plan};
use crate::config::Config;
use crate::iptables::{Backend, CommandError, Runner, detect, display_command};
use crate::state::Saved;

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The rules were programmed.
    Applied,
    /// The same rules were already in place; nothing changed.
    AlreadyApplied,
    /// `--cleanup-only` removed the rules.
    CleanedUp,
    /// `--dry-run` printed what would be done.
    Printed,
}

/// Why a run failed. Every variant says what state the namespace was left in.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// iptables could not be found or queried.
    #[error("{0}")]
    Iptables(#[from] CommandError),
    /// `iptables-restore` rejected the rules.
    #[error(
        "applying the {family} rules failed: {source}\n{rollback}{}",
        hint.as_deref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
    )]
    Apply {
        family: Family,
        source: CommandError,
        /// What the rollback did.
        rollback: String,
        hint: Option<String>,
    },
    /// Policy routing or the IPv6 passthrough address could not be set up.
    #[error("{source}\n{rollback}")]
    HostStep {
        source: CommandError,
        rollback: String,
    },
    /// Writing the dry-run output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Applies (or, with `--cleanup-only`, removes) the plan.
pub fn run(
    cfg: &Config,
    plan: &Plan,
    runner: &dyn Runner,
    out: &mut dyn Write,
) -> Result<Outcome, RunError> {
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    if cfg.dry_run {
        print_plan(cfg, plan, out)?;
        return Ok(Outcome::Printed);
    }
    let mut families = vec![Family::V4];
    if plan.rules.ipv6() {
        families.push(Family::V6);
    }
    let mut ns = Namespace {
        runner,
        backends: BTreeMap::new(),
    };
    for &family in &families {
        let backend = detect(runner, family, cfg.force_iptables_binary)?;
        tracing::info!("using {backend} for {family}");
        ns.backends.insert(family_key(family), backend);
    }

    if cfg.cleanup_only {
        ns.cleanup(&plan.rules, &families);
        for step in plan.host_steps.iter().rev() {
            ns.best_effort("ip", &step.delete_command());
        }
        tracing::info!("removed the Istio capture rules");
        return Ok(Outcome::CleanedUp);
    }

    let mut before = ns.snapshot(&families)?;
    let residue = before.values().any(Saved::has_residue);
    let delta = !residue
        || families
            .iter()
            .any(|&f| ns.differs(&plan.rules, f, &before[&family_key(f)]));
    if residue && !delta && !cfg.force_apply {
        tracing::info!("the Istio capture rules are already in place; nothing to do");
        ns.apply_host_steps(&plan.host_steps)
            .map_err(|(source, _)| RunError::HostStep {
                source,
                rollback: "the iptables rules were already in place and were left as they are"
                    .to_string(),
            })?;
        return Ok(Outcome::AlreadyApplied);
    }

    let guardrails = residue && delta && cfg.reconcile;
    if guardrails {
        tracing::info!("drifted Istio rules found: replacing them (--reconcile)");
        for &f in &families {
            for cmd in guardrail_commands("-D") {
                ns.quiet(f, &cmd);
            }
            for cmd in guardrail_commands("-I") {
                ns.iptables(f, &cmd)?;
            }
        }
        ns.cleanup(&plan.rules, &families);
        before = ns.snapshot(&families)?;
    } else if residue && delta {
        tracing::warn!(
            "rules are already programmed in this namespace and differ from the requested \
             ones; applying on top (use --reconcile to replace drifted Istio rules)"
        );
    }

    let result = ns.apply(plan, &families, &before, residue && !guardrails);
    if guardrails {
        for &f in &families {
            for cmd in guardrail_commands("-D") {
                ns.quiet(f, &cmd);
            }
        }
    }
    result?;
    for &f in &families {
        if let Ok(text) = ns.save(f) {
            tracing::info!("final {f} iptables state:\n{}", Saved::normalized(&text));
        }
    }
    Ok(Outcome::Applied)
}

/// `--dry-run`: the restore input per family and the `ip` commands, nothing executed.
fn print_plan(cfg: &Config, plan: &Plan, out: &mut dyn Write) -> std::io::Result<()> {
    for (family, tool) in [
        (Family::V4, "iptables-restore"),
        (Family::V6, "ip6tables-restore"),
    ] {
        let input = plan.rules.restore_input(family);
        if input.is_empty() {
            continue;
        }
        if cfg.cleanup_only {
            for cmd in plan.rules.undo_commands(family) {
                let tool = if family == Family::V4 {
                    "iptables"
                } else {
                    "ip6tables"
                };
                writeln!(out, "{}", display_command(tool, &cmd))?;
            }
        } else {
            writeln!(out, "# {tool} --noflush")?;
            out.write_all(input.as_bytes())?;
        }
    }
    for step in &plan.host_steps {
        let cmd = if cfg.cleanup_only {
            step.delete_command()
        } else {
            step.add_command()
        };
        writeln!(out, "{}", display_command("ip", &cmd))?;
    }
    Ok(())
}

fn family_key(family: Family) -> u8 {
    match family {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

/// The namespace being changed, through the chosen iptables binaries.
struct Namespace<'a> {
    runner: &'a dyn Runner,
    backends: BTreeMap<u8, Backend>,
}

// === impl Namespace ===

impl Namespace<'_> {
    fn backend(&self, family: Family) -> &Backend {
        &self.backends[&family_key(family)]
    }

    fn save(&self, family: Family) -> Result<String, CommandError> {
        self.runner.run(&self.backend(family).save(), &[], None)
    }

    fn snapshot(&self, families: &[Family]) -> Result<BTreeMap<u8, Saved>, CommandError> {
        families
            .iter()
            .map(|&f| Ok((family_key(f), Saved::parse(&self.save(f)?))))
            .collect()
    }

    fn iptables(&self, family: Family, args: &[String]) -> Result<String, CommandError> {
        let backend = self.backend(family);
        let mut full = args.to_vec();
        full.extend(backend.wait_args());
        self.runner.run(backend.iptables(), &full, None)
    }

    /// Runs an iptables command whose failure is expected or harmless.
    fn quiet(&self, family: Family, args: &[String]) {
        if let Err(e) = self.iptables(family, args) {
            tracing::debug!("ignored: {e}");
        }
    }

    fn best_effort(&self, program: &str, args: &[String]) {
        if let Err(e) = self.runner.run(program, args, None) {
            tracing::debug!("ignored: {e}");
        }
    }

    /// Whether the rules in place differ from the plan (Istio's `VerifyIptablesState`):
    /// a planned chain is missing, one of our chains has a different number of rules, there
    /// is an ISTIO_* chain the plan does not have, or a planned rule fails `iptables -C`.
    fn differs(&self, rules: &RuleSet, family: Family, current: &Saved) -> bool {
        let planned = rules.rules(family);
        let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
        for rule in planned {
            *expected
                .entry((rule.table.as_str().to_string(), rule.chain.clone()))
                .or_default() += 1;
        }
        for (table, chain) in rules.chains(family) {
            expected
                .entry((table.as_str().to_string(), chain))
                .or_default();
        }
        for ((table, chain), count) in &expected {
            let Some(t) = current.tables.get(table) else {
                return true;
            };
            if !t.chains.contains(chain) {
                return true;
            }
            if is_istio_chain(chain) && t.rules_in(chain).count() != *count {
                return true;
            }
        }
        let extra_chain = current
            .istio_chains()
            .into_iter()
            .any(|key| !expected.contains_key(&key));
        if extra_chain {
            return true;
        }
        rules
            .check_commands(family)
            .iter()
            .any(|cmd| self.iptables(family, cmd).is_err())
    }

    /// Removes the planned rules, then any ISTIO_* leftovers. Best effort: rules that are
    /// not there are fine.
    fn cleanup(&self, rules: &RuleSet, families: &[Family]) {
        for &f in families {
            for cmd in rules.undo_commands(f) {
                self.quiet(f, &cmd);
            }
            if let Ok(text) = self.save(f) {
                for cmd in Saved::parse(&text).istio_leftover_cleanup() {
                    self.quiet(f, &cmd);
                }
            }
        }
    }

    /// One `iptables-restore --noflush` per family, then the host steps. On failure,
    /// everything this call added is rolled back.
    fn apply(
        &self,
        plan: &Plan,
        families: &[Family],
        before: &BTreeMap<u8, Saved>,
        had_residue: bool,
    ) -> Result<(), RunError> {
        for &family in families {
            let input = plan.rules.restore_input(family);
            if input.is_empty() {
                continue;
            }
            let backend = self.backend(family);
            let mut args = vec!["--noflush".to_string()];
            args.extend(backend.wait_args());
            tracing::info!(
                "running {} with:\n{}",
                display_command(&backend.restore(), &args),
                input.trim_end()
            );
            if let Err(source) = self.runner.run(&backend.restore(), &args, Some(&input)) {
                let rollback = self.rollback(families, before);
                let hint = had_residue.then(|| {
                    "Istio rules from an earlier run are present and conflict; re-run with \
                     --reconcile to replace them, or --cleanup-only to remove them"
                        .to_string()
                });
                return Err(RunError::Apply {
                    family,
                    source,
                    rollback,
                    hint,
                });
            }
        }
        if let Err((source, added)) = self.apply_host_steps(&plan.host_steps) {
            for step in added.iter().rev() {
                self.best_effort("ip", &step.delete_command());
            }
            let rollback = self.rollback(families, before);
            return Err(RunError::HostStep { source, rollback });
        }
        Ok(())
    }

    /// Undoes everything that is in the namespace now but was not in `before`, and reports
    /// whether the namespace is back to that state.
    fn rollback(&self, families: &[Family], before: &BTreeMap<u8, Saved>) -> String {
        let mut clean = true;
        for &f in families {
            let Some(prev) = before.get(&family_key(f)) else {
                continue;
            };
            let Ok(now) = self.save(f) else {
                clean = false;
                continue;
            };
            for cmd in prev.rollback_commands(&Saved::parse(&now)) {
                self.quiet(f, &cmd);
            }
            let restored = self
                .save(f)
                .map(|t| same_rules(prev, &Saved::parse(&t)))
                .unwrap_or(false);
            clean &= restored;
        }
        if clean {
            "rolled back: the namespace has the same rules as before this run".to_string()
        } else {
            "ROLLBACK INCOMPLETE: some rules added by this run could not be removed; \
             inspect with iptables-save"
                .to_string()
        }
    }

    /// Adds the host steps that are missing. On failure returns the error and the steps
    /// this call added.
    fn apply_host_steps<'s>(
        &self,
        steps: &'s [HostStep],
    ) -> Result<(), (CommandError, Vec<&'s HostStep>)> {
        let mut added = Vec::new();
        for step in steps {
            if let HostStep::TproxyRule {
                family,
                mark,
                table,
            } = step
            {
                let flag = if *family == Family::V4 { "-4" } else { "-6" };
                let show: Vec<String> = [flag, "rule", "show", "fwmark"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([mark.to_string(), "lookup".to_string(), table.to_string()])
                    .collect();
                if self
                    .runner
                    .run("ip", &show, None)
                    .is_ok_and(|out| !out.trim().is_empty())
                {
                    continue;
                }
            }
            match self.runner.run("ip", &step.add_command(), None) {
                Ok(_) => added.push(step),
                Err(e) if e.reason.contains("File exists") => {}
                Err(e) => return Err((e, added)),
            }
        }
        Ok(())
    }
}

/// Same rules and custom chains, ignoring counters and order.
fn same_rules(a: &Saved, b: &Saved) -> bool {
    let key = |s: &Saved| {
        let mut v: Vec<String> = Vec::new();
        for (table, t) in &s.tables {
            v.extend(t.rules.iter().map(|r| format!("{table} {r}")));
            v.extend(
                t.chains
                    .iter()
                    .filter(|c| !is_builtin_chain(c))
                    .map(|c| format!("{table} :{c}")),
            );
        }
        v.sort();
        v
    };
    key(a) == key(b)
}
