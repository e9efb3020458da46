//! Sources → store → planner, shared by the one-shot commands and `run`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use portico_model::{Diagnostic, Store};
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_source::{Loaded, files};
use tracing::debug;

use crate::state;

/// A loaded and planned set of manifests.
pub struct Outcome {
    /// The plan.
    pub plan: Plan,
    /// Every problem, loading and planning.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read.
    pub files: Vec<PathBuf>,
    /// Objects accepted.
    pub objects: usize,
}

/// Reads and checks every manifest under `paths`, showing progress on a terminal.
fn load(paths: &[PathBuf]) -> Loaded {
    let mut progress = Progress::new();
    let loaded = files::load(paths, |done, total| progress.update(done, total));
    progress.finish();
    loaded
}

/// Plans `store`, keeping what `previous` allocated; returns the plan, the allocations to
/// keep, and the planner's diagnostics.
pub fn plan(
    store: &Store,
    config: &PlanConfig,
    previous: &Allocations,
    generation: u64,
) -> portico_plan::Planned {
    let started = Instant::now();
    let planned = portico_plan::plan(store, config, previous, generation);
    debug!(
        generation,
        services = planned.plan.services.len(),
        pods = planned.plan.pods.len(),
        ingresses = planned.plan.ingress.ingresses.len(),
        elapsed = ?started.elapsed(),
        "planned"
    );
    planned
}

/// Where the allocations of a one-shot command come from and go.
#[derive(Clone, Copy, Debug)]
pub enum State<'a> {
    /// None: allocations start afresh (and are deterministic).
    Fresh,
    /// Read from this folder, never written: what `run` keeps there is shown, not changed.
    Read(&'a Path),
    /// Read from this folder and kept there.
    Keep(&'a Path),
}

/// Loads `paths` and plans them with the allocations `state` says.
pub fn load_and_plan(paths: &[PathBuf], config: &PlanConfig, state: State<'_>) -> Result<Outcome> {
    let Loaded { store, mut diagnostics, files } = load(paths);
    let previous = match state {
        State::Read(dir) | State::Keep(dir) => state::load(dir)?,
        State::Fresh => Allocations::default(),
    };
    let planned = plan(&store, config, &previous, 1);
    if let State::Keep(dir) = state
        && planned.allocations != previous
    {
        state::save(dir, &planned.allocations)?;
    }
    diagnostics.extend(planned.diagnostics);
    portico_model::locate::locate_fields(&mut diagnostics);
    Ok(Outcome { plan: planned.plan, diagnostics, files, objects: store.len() })
}

/// "reading manifests: 37/100 files" on a terminal's stderr, for loads that take a while.
struct Progress {
    shown: bool,
    started: Instant,
    terminal: bool,
}

impl Progress {
    /// Loads shorter than this print nothing.
    const QUIET_FOR: std::time::Duration = std::time::Duration::from_millis(500);

    fn new() -> Self {
        Self { shown: false, started: Instant::now(), terminal: std::io::stderr().is_terminal() }
    }

    fn update(&mut self, done: usize, all: usize) {
        if self.terminal && self.started.elapsed() >= Self::QUIET_FOR {
            eprint!("\rreading manifests: {done}/{all} files");
            let _ = std::io::stderr().flush();
            self.shown = true;
        }
    }

    fn finish(&self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
    }
}
