//! Applying a [`Plan`] to the current network namespace, as istio-iptables does: check what
//! is already there, apply with one `iptables-restore --noflush` per family, and never leave
//! a half-applied rule set behind.
//!
//! Every run starts from an `iptables-save` snapshot per family. If anything fails, the
//! namespace is brought back to that snapshot: rules this run added are deleted (nothing
//! else is touched), or, when `--reconcile` had already removed drifted rules, the snapshot
//! is restored as a whole. With the nf_tables backend, tables that iptables created on first
//! use and that end up empty are removed too (iptables itself cannot delete a table), so
//! `iptables-save` shows exactly what it showed before.

use std::collections::BTreeMap;
use std::io::Write;

use crate::builder::{Family, RuleSet, guardrail_commands, is_istio_chain};
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
    /// iptables could not be found or queried; nothing was changed.
    #[error("{0}")]
    Iptables(#[from] CommandError),
    /// A step failed; the failure says whether the namespace is back to where it was.
    #[error(transparent)]
    Apply(Box<ApplyFailure>),
    /// Writing the dry-run output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// A failed step and what was done about it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{step} failed: {source}\n{rollback}{}",
    hint.as_deref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
)]
pub struct ApplyFailure {
    /// What was being done, e.g. "applying the IPv4 rules".
    pub step: String,
    pub source: CommandError,
    /// Whether the namespace is back to its state before the run.
    pub rollback: String,
    /// What the user can do about it.
    pub hint: Option<String>,
}

fn failure(step: String, source: CommandError, rollback: String, hint: Option<String>) -> RunError {
    RunError::Apply(Box::new(ApplyFailure {
        step,
        source,
        rollback,
        hint,
    }))
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
    let mut backends = BTreeMap::new();
    for &family in &families {
        let backend = detect(runner, family, cfg.force_iptables_binary)?;
        tracing::info!("using {backend} for {family}");
        backends.insert(key(family), backend);
    }
    let ns = Namespace {
        runner,
        backends,
        families,
    };

    if cfg.cleanup_only {
        ns.cleanup(&plan.rules);
        for step in plan.host_steps.iter().rev() {
            ns.best_effort("ip", &step.delete_command());
        }
        ns.drop_leftover_tables(None);
        tracing::info!("removed the Istio capture rules");
        return Ok(Outcome::CleanedUp);
    }

    let initial = ns.snapshot()?;
    let residue = initial.values().any(|(saved, _)| saved.has_residue());
    let delta = !residue
        || ns
            .families
            .iter()
            .any(|&f| ns.differs(&plan.rules, f, &initial[&key(f)].0));
    if residue && !delta && !cfg.force_apply {
        tracing::info!("the Istio capture rules are already in place; nothing to do");
        if let Err((step, source, added)) = ns.add_host_steps(&plan.host_steps) {
            ns.remove_host_steps(&added);
            return Err(failure(
                step,
                source,
                "the iptables rules were already in place and were left as they are".to_string(),
                None,
            ));
        }
        return Ok(Outcome::AlreadyApplied);
    }

    let reconcile = residue && delta && cfg.reconcile;
    let result = if reconcile {
        tracing::info!("drifted Istio rules found: replacing them (--reconcile)");
        ns.reconcile(plan, &initial)
    } else {
        if residue && delta {
            tracing::warn!(
                "rules are already programmed in this namespace and differ from the requested \
                 ones; applying on top (use --reconcile to replace drifted Istio rules)"
            );
        }
        ns.apply(plan, &initial, residue)
    };
    result?;
    for &f in &ns.families {
        if let Ok(text) = ns.save(f) {
            tracing::info!("final {f} iptables state:\n{}", Saved::normalized(&text));
        }
    }
    Ok(Outcome::Applied)
}

/// `--dry-run`: the restore input per family and the `ip` commands, nothing executed.
fn print_plan(cfg: &Config, plan: &Plan, out: &mut dyn Write) -> std::io::Result<()> {
    for family in Family::BOTH {
        let (restore, tool) = match family {
            Family::V4 => ("iptables-restore", "iptables"),
            Family::V6 => ("ip6tables-restore", "ip6tables"),
        };
        let input = plan.rules.restore_input(family);
        if input.is_empty() {
            continue;
        }
        if cfg.cleanup_only {
            for cmd in plan.rules.undo_commands(family) {
                writeln!(out, "{}", display_command(tool, &cmd))?;
            }
        } else {
            writeln!(out, "# {restore} --noflush")?;
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

fn key(family: Family) -> u8 {
    match family {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

/// An `iptables-save` dump: parsed, and the text itself (for a whole-table restore).
type Snapshot = BTreeMap<u8, (Saved, String)>;

/// The namespace being changed, through the chosen iptables binaries.
struct Namespace<'a> {
    runner: &'a dyn Runner,
    backends: BTreeMap<u8, Backend>,
    families: Vec<Family>,
}

// === impl Namespace ===

impl Namespace<'_> {
    fn backend(&self, family: Family) -> &Backend {
        &self.backends[&key(family)]
    }

    fn save(&self, family: Family) -> Result<String, CommandError> {
        self.runner.run(&self.backend(family).save(), &[], None)
    }

    fn snapshot(&self) -> Result<Snapshot, CommandError> {
        self.families
            .iter()
            .map(|&f| {
                let text = self.save(f)?;
                Ok((key(f), (Saved::parse(&text), text)))
            })
            .collect()
    }

    fn iptables(&self, family: Family, args: &[String]) -> Result<String, CommandError> {
        let backend = self.backend(family);
        let mut full = args.to_vec();
        full.extend(backend.wait_args());
        self.runner.run(backend.iptables(), &full, None)
    }

    fn restore(&self, family: Family, input: &str, noflush: bool) -> Result<(), CommandError> {
        let backend = self.backend(family);
        let mut args = Vec::new();
        if noflush {
            args.push("--noflush".to_string());
        }
        args.extend(backend.wait_args());
        tracing::info!(
            "running {} with:\n{}",
            display_command(&backend.restore(), &args),
            input.trim_end()
        );
        self.runner
            .run(&backend.restore(), &args, Some(input))
            .map(drop)
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
        let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
        for rule in rules.rules(family) {
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
        if current
            .istio_chains()
            .into_iter()
            .any(|k| !expected.contains_key(&k))
        {
            return true;
        }
        rules
            .check_commands(family)
            .iter()
            .any(|cmd| self.iptables(family, cmd).is_err())
    }

    /// Removes the planned rules, then any ISTIO_* leftovers. Best effort: rules that are
    /// not there are fine.
    fn cleanup(&self, rules: &RuleSet) {
        for &f in &self.families {
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
    /// everything this call added is removed again.
    fn apply(&self, plan: &Plan, initial: &Snapshot, had_residue: bool) -> Result<(), RunError> {
        let hint = had_residue.then(|| {
            "Istio rules from an earlier run are present and conflict; re-run with \
             --reconcile to replace them, or --cleanup-only to remove them"
                .to_string()
        });
        self.apply_rules(plan, initial, hint)?;
        if let Err((step, source, added)) = self.add_host_steps(&plan.host_steps) {
            self.remove_host_steps(&added);
            return Err(failure(step, source, self.roll_back(initial), None));
        }
        Ok(())
    }

    fn apply_rules(
        &self,
        plan: &Plan,
        initial: &Snapshot,
        hint: Option<String>,
    ) -> Result<(), RunError> {
        for &family in &self.families {
            let input = plan.rules.restore_input(family);
            if input.is_empty() {
                continue;
            }
            if let Err(source) = self.restore(family, &input, true) {
                return Err(failure(
                    format!("applying the {family} rules"),
                    source,
                    self.roll_back(initial),
                    hint,
                ));
            }
        }
        Ok(())
    }

    /// `--reconcile`: drop all TCP/UDP behind guardrails, remove the old rules, apply the
    /// new ones, lift the guardrails. If applying fails, the old rules come back as they were.
    fn reconcile(&self, plan: &Plan, initial: &Snapshot) -> Result<(), RunError> {
        let result = (|| {
            for &f in &self.families {
                for cmd in guardrail_commands("-D") {
                    self.quiet(f, &cmd);
                }
                for cmd in guardrail_commands("-I") {
                    self.iptables(f, &cmd).map_err(|source| {
                        failure(
                            "inserting the reconcile guardrails".to_string(),
                            source,
                            String::new(),
                            None,
                        )
                    })?;
                }
            }
            self.cleanup(&plan.rules);
            let hint = Some("the rules could not be replaced; the old ones were restored".into());
            self.apply_rules(plan, initial, hint)?;
            if let Err((step, source, added)) = self.add_host_steps(&plan.host_steps) {
                self.remove_host_steps(&added);
                return Err(failure(step, source, String::new(), None));
            }
            Ok(())
        })();
        for &f in &self.families {
            for cmd in guardrail_commands("-D") {
                self.quiet(f, &cmd);
            }
        }
        match result {
            Ok(()) => {
                self.drop_leftover_tables(Some(initial));
                Ok(())
            }
            Err(RunError::Apply(mut failed)) => {
                failed.rollback = self.restore_snapshot(initial);
                Err(RunError::Apply(failed))
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes what is in the namespace now but was not in `initial`, and reports whether
    /// the namespace is back to that state. Rules that were there before are not touched.
    fn roll_back(&self, initial: &Snapshot) -> String {
        for &f in &self.families {
            let Some((prev, _)) = initial.get(&key(f)) else {
                continue;
            };
            if let Ok(now) = self.save(f) {
                for cmd in prev.rollback_commands(&Saved::parse(&now)) {
                    self.quiet(f, &cmd);
                }
            }
        }
        self.drop_leftover_tables(Some(initial));
        self.report(initial)
    }

    /// Puts the `initial` dump back as a whole (`iptables-restore` without `--noflush`
    /// replaces each table it lists), for when this run already removed rules.
    fn restore_snapshot(&self, initial: &Snapshot) -> String {
        for &f in &self.families {
            let Some((prev, text)) = initial.get(&key(f)) else {
                continue;
            };
            if let Ok(now) = self.save(f) {
                for cmd in prev.rollback_commands(&Saved::parse(&now)) {
                    self.quiet(f, &cmd);
                }
            }
            if !text.trim().is_empty()
                && let Err(e) = self.restore(f, text, false)
            {
                tracing::error!("restoring the earlier {f} rules: {e}");
            }
        }
        self.drop_leftover_tables(Some(initial));
        self.report(initial)
    }

    fn report(&self, initial: &Snapshot) -> String {
        let clean = self.families.iter().all(|&f| {
            let Some((prev, _)) = initial.get(&key(f)) else {
                return true;
            };
            self.save(f)
                .map(|t| prev.same_as(&Saved::parse(&t)))
                .unwrap_or(false)
        });
        if clean {
            "rolled back: the namespace has the same rules as before this run".to_string()
        } else {
            "ROLLBACK INCOMPLETE: the rules differ from those before this run; inspect them \
             with iptables-save"
                .to_string()
        }
    }

    /// With nf_tables, removes tables that hold nothing (no rules, no custom chains, ACCEPT
    /// policies) and were not there before (`before`), or all such tables after a cleanup.
    /// Needs the `nft` tool; without it the empty tables stay, which changes no packet.
    fn drop_leftover_tables(&self, before: Option<&Snapshot>) {
        for &f in &self.families {
            if self.backend(f).legacy {
                continue;
            }
            let Ok(text) = self.save(f) else { continue };
            let prev = before.and_then(|b| b.get(&key(f))).map(|(s, _)| s);
            for table in Saved::parse(&text).leftover_inert_tables(prev) {
                let family = if f == Family::V4 { "ip" } else { "ip6" };
                let args: Vec<String> = ["delete", "table", family, &table]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if let Err(e) = self.runner.run("nft", &args, None) {
                    tracing::debug!("leaving the empty {family} {table} table: {e}");
                }
            }
        }
    }

    /// Adds the host steps that are not in place yet. On failure returns the failed step,
    /// the error and the steps this call added.
    fn add_host_steps<'s>(
        &self,
        steps: &'s [HostStep],
    ) -> Result<(), (String, CommandError, Vec<&'s HostStep>)> {
        let mut added = Vec::new();
        for step in steps {
            let present = self
                .runner
                .run("ip", &step.show_command(), None)
                .is_ok_and(|shown| step.is_present(&shown));
            if present {
                continue;
            }
            let cmd = step.add_command();
            match self.runner.run("ip", &cmd, None) {
                Ok(_) => added.push(step),
                Err(source) => return Err((display_command("ip", &cmd), source, added)),
            }
        }
        Ok(())
    }

    fn remove_host_steps(&self, steps: &[&HostStep]) {
        for step in steps.iter().rev() {
            self.best_effort("ip", &step.delete_command());
        }
    }
}
