//! Sources → store → planner, shared by the one-shot commands and `run`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use portico_model::{Diagnostic, Store, read_manifests};
use portico_plan::{Allocations, Plan, PlanConfig};
use tracing::{debug, info_span};

use crate::state;

/// Manifests read and checked, not yet planned.
pub struct Loaded {
    /// The accepted objects.
    pub store: Store,
    /// Every problem met reading and checking them.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read.
    pub files: Vec<PathBuf>,
}

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

/// Reads and checks every manifest under `paths`.
pub fn load(paths: &[PathBuf]) -> Loaded {
    let _span = info_span!("load", paths = ?paths).entered();
    let started = Instant::now();
    let mut progress = Progress::new();
    // Each file's objects are checked and stored before the next file is read, so that only
    // one file's worth of full objects exists at a time.
    let mut store = Store::default();
    let mut admitted = Vec::new();
    let (files, mut diagnostics) = read_manifests(
        paths,
        |objects| store.admit(objects, &mut admitted),
        |done, total| progress.update(done, total),
    );
    progress.finish();
    diagnostics.append(&mut admitted);
    debug!(files = files.len(), accepted = store.len(), elapsed = ?started.elapsed(), "loaded and stored");
    Loaded { store, diagnostics, files }
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

/// Loads `paths`, plans them, and keeps allocations in `state_dir` when given.
pub fn load_and_plan(paths: &[PathBuf], config: &PlanConfig, state_dir: Option<&Path>) -> Result<Outcome> {
    let Loaded { store, mut diagnostics, files } = load(paths);
    let previous = match state_dir {
        Some(dir) => state::load(dir)?,
        None => Allocations::default(),
    };
    let planned = plan(&store, config, &previous, 1);
    if let Some(dir) = state_dir
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
