//! Sources → store → planner, for the one-shot commands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use portico_model::{Diagnostic, Store, read_manifests};
use portico_plan::{Plan, PlanConfig};
use tracing::{debug, info_span};

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

/// Loads `paths`, plans them, and keeps allocations in `state_dir` when given.
pub fn load_and_plan(paths: &[PathBuf], config: &PlanConfig, state_dir: Option<&Path>) -> Result<Outcome> {
    let _span = info_span!("load_and_plan", paths = ?paths).entered();
    let started = Instant::now();
    let mut progress = Progress::new();
    // Each file's objects are checked and stored before the next file is read, so that only
    // one file's worth of full objects exists at a time.
    let mut store = Store::default();
    let mut admitted = Vec::new();
    let (files, mut all) = read_manifests(
        paths,
        |objects| store.admit(objects, &mut admitted),
        |done, total| progress.update(done, total),
    );
    progress.finish();
    all.append(&mut admitted);
    debug!(files = files.len(), accepted = store.len(), elapsed = ?started.elapsed(), "loaded and stored");

    let previous = match state_dir {
        Some(dir) => state::load(dir)?,
        None => Default::default(),
    };
    let started = Instant::now();
    let planned = portico_plan::plan(&store, config, &previous, 1);
    debug!(
        services = planned.plan.services.len(),
        pods = planned.plan.pods.len(),
        ingresses = planned.plan.ingress.ingresses.len(),
        elapsed = ?started.elapsed(),
        "planned"
    );
    if let Some(dir) = state_dir
        && planned.allocations != previous
    {
        state::save(dir, &planned.allocations)?;
        debug!(state = %dir.display(), "allocations saved");
    }
    all.extend(planned.diagnostics);
    portico_model::locate::locate_fields(&mut all);
    Ok(Outcome { plan: planned.plan, diagnostics: all, files, objects: store.len() })
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
