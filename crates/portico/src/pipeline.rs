//! Sources → store → planner, for the one-shot commands.

use std::path::{Path, PathBuf};

use anyhow::Result;
use portico_model::{Diagnostic, Store, load_paths};
use portico_plan::{Plan, PlanConfig};

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
    let loaded = load_paths(paths);
    let (store, mut diagnostics) = Store::from_objects(loaded.objects);
    let mut all = loaded.diagnostics;
    all.append(&mut diagnostics);
    let previous = match state_dir {
        Some(dir) => state::load(dir)?,
        None => Default::default(),
    };
    let planned = portico_plan::plan(&store, config, &previous, 1);
    if let Some(dir) = state_dir
        && planned.allocations != previous
    {
        state::save(dir, &planned.allocations)?;
    }
    all.extend(planned.diagnostics);
    portico_model::locate::locate_fields(&mut all);
    Ok(Outcome { plan: planned.plan, diagnostics: all, files: loaded.files, objects: store.len() })
}
