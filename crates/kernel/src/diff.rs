//! From what the kernel holds to what it should hold, as `nft -f` transactions.
//!
//! Three ways: [`diff`] sends only what changed since the last applied ruleset (chains
//! flushed and refilled, elements deleted and added); a cold start (nothing applied yet)
//! recreates the table, split into transactions of bounded size when the ruleset is large;
//! [`resync`] rewrites every chain and map in one transaction, to repair what was changed by
//! hand or after a failed transaction. Affinity sets, which the kernel fills, are never
//! flushed while they exist, so that clients keep their endpoint across syncs.
//!
//! The kernel holds a transaction to its references: a chain is deleted only once empty and
//! no rule or element sends packets to it; a rule or element names only chains and sets that
//! exist. The commands are ordered for that.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::ruleset::{
    Chain, Command, Element, Ruleset, SetDecl, Table, TableId, chain_references, render, set_references,
};

/// A cold start's elements waiting for their transaction, by family and set.
type Pending<'a> = Vec<(TableId, &'a str, &'a SetDecl, Vec<Element<'a>>)>;

/// A table with nothing in it, for a family one side does not have.
static EMPTY: Table = Table { chains: BTreeMap::new(), sets: BTreeMap::new() };

/// How transactions are sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiffOptions {
    /// A cold start with more map and set elements than this (about one per Service port and
    /// address) is split into transactions of at most this many elements each, so that no
    /// transaction holds the kernel's lock for long.
    pub cold_batch: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions { cold_batch: 5_000 }
    }
}

/// The transactions taking the kernel from one ruleset to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update<'a> {
    /// Transactions, each to be run atomically, in order.
    pub transactions: Vec<Vec<Command<'a>>>,
    /// Chains created, rewritten or deleted.
    pub chains: usize,
    /// Set and map elements added or deleted.
    pub elements: usize,
}

impl Update<'_> {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.transactions.iter().all(Vec::is_empty)
    }

    /// Each transaction as an `nft -f` script.
    pub fn scripts(&self) -> Vec<String> {
        self.transactions.iter().filter(|t| !t.is_empty()).map(|t| render(t)).collect()
    }
}

/// The transactions from `previous` (what the kernel holds, as Portico applied it) to
/// `desired`: only the differences, in one transaction; a cold start without `previous`.
pub fn diff<'a>(previous: Option<&'a Ruleset>, desired: &'a Ruleset, options: &DiffOptions) -> Update<'a> {
    let Some(previous) = previous else { return cold(desired, options.cold_batch) };
    let mut update = Update::default();
    let mut commands = Vec::new();
    for family in table_ids(previous, desired) {
        let (old, new) = (previous.tables.get(&family), desired.tables.get(&family));
        match (old, new) {
            (None, None) => {}
            (Some(_), None) => commands.push(Command::DeleteTable(family)),
            (old, Some(new)) => {
                if old.is_none() {
                    commands.push(Command::AddTable(family));
                }
                table_diff(family, old.unwrap_or(&EMPTY), new, &mut commands, &mut update);
            }
        }
    }
    update.transactions.push(commands);
    update
}

/// The tables of either ruleset, in order.
fn table_ids(previous: &Ruleset, desired: &Ruleset) -> BTreeSet<TableId> {
    previous.tables.keys().chain(desired.tables.keys()).copied().collect()
}

/// The differences of one table.
fn table_diff<'a>(
    family: TableId,
    old: &'a Table,
    new: &'a Table,
    out: &mut Vec<Command<'a>>,
    update: &mut Update<'a>,
) {
    // A set's declaration cannot change in place: it is deleted and made again, and the rules
    // naming it are taken out first and put back after.
    let replaced: BTreeSet<&str> = new
        .sets
        .iter()
        .filter(|(name, set)| old.sets.get(*name).is_some_and(|o| o.decl != set.decl))
        .map(|(name, _)| name.as_str())
        .collect();
    let uses_replaced =
        |chain: &Chain| chain.rules.iter().any(|r| set_references(r).any(|s| replaced.contains(s)));
    let mut added = Vec::new();
    let mut rewritten = Vec::new();
    let mut rehooked = Vec::new();
    for (name, chain) in &new.chains {
        match old.chains.get(name) {
            None => added.push((name.as_str(), chain)),
            Some(o) if o.hook != chain.hook => rehooked.push((name.as_str(), chain)),
            Some(o) if o.rules != chain.rules || (!replaced.is_empty() && uses_replaced(chain)) => {
                rewritten.push((name.as_str(), chain));
            }
            Some(_) => {}
        }
    }
    let removed: Vec<&str> =
        old.chains.keys().filter(|name| !new.chains.contains_key(*name)).map(String::as_str).collect();
    update.chains += added.len() + rewritten.len() + rehooked.len() + removed.len();

    out.extend(added.iter().map(|(name, chain)| Command::AddChain(family, name, chain.hook.as_ref())));
    // Emptied before anything they send packets to goes, and before they go themselves.
    out.extend(rewritten.iter().map(|(name, _)| Command::FlushChain(family, name)));
    out.extend(removed.iter().map(|name| Command::FlushChain(family, name)));
    for (name, chain) in &rehooked {
        out.extend([
            Command::FlushChain(family, name),
            Command::DeleteChain(family, name),
            Command::AddChain(family, name, chain.hook.as_ref()),
        ]);
    }
    for name in &replaced {
        out.push(Command::DeleteSet(family, name, &old.sets[*name].decl));
    }
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) || replaced.contains(name.as_str()) {
            out.push(Command::AddSet(family, name, &set.decl));
        }
    }
    for (name, chain) in added.iter().chain(&rewritten).chain(&rehooked) {
        out.extend(chain.rules.iter().map(|rule| Command::AddRule(family, name, rule)));
    }
    let mut additions = Vec::new();
    for (name, set) in &new.sets {
        let kept = old.sets.get(name).filter(|_| !replaced.contains(name.as_str()));
        let Some(kept) = kept else {
            additions.push((
                name.as_str(),
                &set.decl,
                set.elements.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect(),
            ));
            continue;
        };
        // A changed value is a delete and an add: nft does not replace an element.
        let gone: Vec<&str> = kept
            .elements
            .iter()
            .filter(|(k, v)| set.elements.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .collect();
        let coming: Vec<Element<'_>> = set
            .elements
            .iter()
            .filter(|(k, v)| kept.elements.get(*k) != Some(*v))
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        update.elements += gone.len();
        if !gone.is_empty() {
            out.push(Command::DeleteElements(family, name, &set.decl, gone));
        }
        additions.push((name.as_str(), &set.decl, coming));
    }
    for (name, decl, elements) in additions.into_iter().filter(|(_, _, e): &(_, _, Vec<_>)| !e.is_empty()) {
        update.elements += elements.len();
        out.push(Command::AddElements(family, name, decl, elements));
    }
    for (name, set) in &old.sets {
        if !new.sets.contains_key(name) {
            out.push(Command::DeleteSet(family, name, &set.decl));
        }
    }
    out.extend(removed.iter().map(|name| Command::DeleteChain(family, name)));
}

/// Everything of `desired`, in tables made anew (whatever an earlier run left is deleted):
/// first the sets and the chains reachable from the hooks, then the map elements with the
/// chains they reach, `batch` elements at a time, so that an element never names a chain
/// not yet filled. Traffic to a destination not yet added meets no rule in between.
fn cold(desired: &Ruleset, batch: usize) -> Update<'_> {
    let total: usize = desired.tables.values().flat_map(|t| t.sets.values()).map(|s| s.elements.len()).sum();
    let mut update = Update {
        transactions: Vec::new(),
        chains: desired.tables.values().map(|t| t.chains.len()).sum(),
        elements: total,
    };
    let mut first = Vec::new();
    let mut filled: HashSet<(TableId, &str)> = HashSet::new();
    let mut chains = Vec::new();
    for (&family, table) in &desired.tables {
        first.extend([Command::AddTable(family), Command::DeleteTable(family), Command::AddTable(family)]);
        first.extend(table.sets.iter().map(|(name, set)| Command::AddSet(family, name, &set.decl)));
        for (name, chain) in table.chains.iter().filter(|(_, c)| c.hook.is_some()) {
            reach(family, table, name, chain, &mut filled, &mut chains);
        }
    }
    fill(&desired.tables, &mut chains, &mut first);
    update.transactions.push(first);

    let mut current = Vec::new();
    let mut elements: Pending<'_> = Vec::new();
    let mut count = 0;
    for (&family, table) in &desired.tables {
        for (set_name, set) in &table.sets {
            for (key, value) in &set.elements {
                for target in value.iter().flat_map(|v| chain_references(v)) {
                    if let Some((name, chain)) = table.chains.get_key_value(target) {
                        reach(family, table, name, chain, &mut filled, &mut chains);
                    }
                }
                match elements.last_mut() {
                    Some((f, s, _, list)) if *f == family && *s == set_name.as_str() => {
                        list.push((key.as_str(), value.as_deref()));
                    }
                    _ => elements.push((
                        family,
                        set_name.as_str(),
                        &set.decl,
                        vec![(key.as_str(), value.as_deref())],
                    )),
                }
                count += 1;
                if count >= batch.max(1) {
                    close(&desired.tables, &mut chains, &mut elements, &mut current);
                    update.transactions.push(std::mem::take(&mut current));
                    count = 0;
                }
            }
        }
    }
    // Chains nothing reaches are still the desired ruleset's.
    for (&family, table) in &desired.tables {
        for (name, chain) in &table.chains {
            reach(family, table, name, chain, &mut filled, &mut chains);
        }
    }
    close(&desired.tables, &mut chains, &mut elements, &mut current);
    update.transactions.push(current);
    if total <= batch {
        let one: Vec<Command<'_>> = update.transactions.drain(..).flatten().collect();
        update.transactions.push(one);
    }
    update.transactions.retain(|t| !t.is_empty());
    update
}

/// Marks `name` and every chain it reaches as filled, listing those not filled yet.
fn reach<'a>(
    family: TableId,
    table: &'a Table,
    name: &'a str,
    chain: &'a Chain,
    filled: &mut HashSet<(TableId, &'a str)>,
    out: &mut Vec<(TableId, &'a str)>,
) {
    if !filled.insert((family, name)) {
        return;
    }
    out.push((family, name));
    for target in chain.rules.iter().flat_map(|r| chain_references(r)) {
        if let Some((name, chain)) = table.chains.get_key_value(target) {
            reach(family, table, name, chain, filled, out);
        }
    }
}

/// The listed chains, made and filled: every one made before any rule, since rules name
/// each other.
fn fill<'a>(
    tables: &'a BTreeMap<TableId, Table>,
    chains: &mut Vec<(TableId, &'a str)>,
    out: &mut Vec<Command<'a>>,
) {
    let chain = |family: TableId, name: &str| tables.get(&family).and_then(|t| t.chains.get(name));
    for &(family, name) in chains.iter() {
        out.push(Command::AddChain(family, name, chain(family, name).and_then(|c| c.hook.as_ref())));
    }
    for (family, name) in chains.drain(..) {
        for rule in chain(family, name).map(|c| c.rules.as_slice()).unwrap_or_default() {
            out.push(Command::AddRule(family, name, rule));
        }
    }
}

/// One batch of a cold start: its chains, then its elements.
fn close<'a>(
    tables: &'a BTreeMap<TableId, Table>,
    chains: &mut Vec<(TableId, &'a str)>,
    elements: &mut Pending<'a>,
    out: &mut Vec<Command<'a>>,
) {
    fill(tables, chains, out);
    out.extend(
        elements.drain(..).map(|(family, set, decl, list)| Command::AddElements(family, set, decl, list)),
    );
}

/// One transaction rewriting everything of `desired` whatever the kernel holds now: every
/// chain flushed and refilled, every map and set but the affinity sets flushed and refilled,
/// and what `previous` had that `desired` has not deleted (made first if someone deleted it
/// already, so that deleting it cannot fail). Without `previous`, a cold start in one go.
pub fn resync<'a>(previous: Option<&'a Ruleset>, desired: &'a Ruleset) -> Update<'a> {
    let Some(previous) = previous else { return cold(desired, usize::MAX) };
    let mut update = Update::default();
    let mut out = Vec::new();
    for family in table_ids(previous, desired) {
        let old = previous.tables.get(&family).unwrap_or(&EMPTY);
        let Some(new) = desired.tables.get(&family) else {
            if previous.tables.contains_key(&family) {
                out.extend([Command::AddTable(family), Command::DeleteTable(family)]);
            }
            continue;
        };
        out.push(Command::AddTable(family));
        // Sets whose declaration is not the desired one are made as they were, to be deleted.
        let stale: Vec<(&str, &_)> = old
            .sets
            .iter()
            .filter(|(name, set)| new.sets.get(*name).is_none_or(|n| n.decl != set.decl))
            .map(|(name, set)| (name.as_str(), &set.decl))
            .collect();
        out.extend(stale.iter().map(|(name, decl)| Command::AddSet(family, name, decl)));
        let is_stale = |name: &str| stale.iter().any(|(s, _)| *s == name);
        for (name, set) in new.sets.iter().filter(|(name, _)| !is_stale(name)) {
            out.push(Command::AddSet(family, name, &set.decl));
        }
        let gone: Vec<(&str, &Chain)> = old
            .chains
            .iter()
            .filter(|(name, _)| !new.chains.contains_key(*name))
            .map(|(name, chain)| (name.as_str(), chain))
            .collect();
        for (name, chain) in new.chains.iter().map(|(n, c)| (n.as_str(), c)).chain(gone.iter().copied()) {
            out.extend([
                Command::AddChain(family, name, chain.hook.as_ref()),
                Command::FlushChain(family, name),
            ]);
        }
        for (name, set) in new.sets.iter().filter(|(name, set)| !set.decl.dynamic() && !is_stale(name)) {
            out.push(Command::FlushSet(family, name, &set.decl));
        }
        for (name, decl) in &stale {
            out.push(Command::DeleteSet(family, name, decl));
            if let Some(set) = new.sets.get(*name) {
                out.push(Command::AddSet(family, name, &set.decl));
            }
        }
        for (name, chain) in &new.chains {
            out.extend(chain.rules.iter().map(|rule| Command::AddRule(family, name, rule)));
        }
        for (name, set) in new.sets.iter().filter(|(_, set)| !set.elements.is_empty()) {
            update.elements += set.elements.len();
            let elements = set.elements.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            out.push(Command::AddElements(family, name, &set.decl, elements));
        }
        out.extend(gone.iter().map(|(name, _)| Command::DeleteChain(family, name)));
        update.chains += new.chains.len() + gone.len();
    }
    update.transactions.push(out);
    update
}
