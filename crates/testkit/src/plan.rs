//! Plans made from YAML text as the binary makes them: parsed, stored, then planned.

use std::fmt::Write as _;
use std::path::Path;

use portico_model::{Diagnostic, Store, parse_text};
use portico_plan::{Allocations, Plan, PlanConfig};

/// The name the YAML text is parsed under; diagnostics carry it as their file.
pub const FILE: &str = "test.yaml";

/// A Plan made from YAML text, with what each stage found.
#[derive(Debug)]
pub struct Planned {
    /// The Plan.
    pub plan: Plan,
    /// What the planner allocated.
    pub allocations: Allocations,
    /// What parsing the text and storing its objects found, in that order.
    pub loading: Vec<Diagnostic>,
    /// What the planner found.
    pub planning: Vec<Diagnostic>,
}

/// Plans `yaml` with the default config, no previous allocations, as generation 1.
pub fn planned(yaml: &str) -> Planned {
    planned_with(yaml, &PlanConfig::default(), &Allocations::default(), 1)
}

/// Plans `yaml` with `config`, keeping what `previous` allocated, as `generation`.
pub fn planned_with(yaml: &str, config: &PlanConfig, previous: &Allocations, generation: u64) -> Planned {
    let (objects, mut loading) = parse_text(Path::new(FILE), yaml);
    let (store, stored) = Store::from_objects(objects);
    loading.extend(stored);
    let planned = portico_plan::plan(&store, config, previous, generation);
    Planned { plan: planned.plan, allocations: planned.allocations, loading, planning: planned.diagnostics }
}

impl Planned {
    /// Every diagnostic, those of loading first.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.loading.iter().chain(&self.planning).cloned().collect()
    }

    /// The diagnostics of error severity, those of loading first.
    pub fn errors(&self) -> Vec<Diagnostic> {
        self.diagnostics().into_iter().filter(Diagnostic::is_error).collect()
    }

    /// The same, after checking that parsing and storing found nothing at all (not even a
    /// warning); panics listing what they found.
    pub fn loaded(self) -> Planned {
        refuse("loading the YAML found", &self.loading);
        self
    }

    /// The same, after checking that no stage found an error; panics listing the errors.
    pub fn without_errors(self) -> Planned {
        refuse("the YAML has errors", &self.errors());
        self
    }

    /// The same, after checking that no stage found anything at all; panics listing it.
    pub fn clean(self) -> Planned {
        refuse("the YAML is not clean", &self.diagnostics());
        self
    }
}

/// Panics with `what` and the diagnostics, one a line, unless there are none.
fn refuse(what: &str, diagnostics: &[Diagnostic]) {
    if diagnostics.is_empty() {
        return;
    }
    let mut message = format!("{what} ({}):", diagnostics.len());
    for diagnostic in diagnostics {
        let _ = write!(message, "\n  {diagnostic}");
    }
    panic!("{message}");
}
