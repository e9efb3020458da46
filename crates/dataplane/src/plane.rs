//! The data-plane trait and readiness.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use portico_model::Diagnostic;
use portico_plan::Plan;

/// The work of applying one Plan: a future of what could not be served.
pub type Applying<'a> = Pin<Box<dyn Future<Output = Vec<Diagnostic>> + Send + 'a>>;

/// One way of serving the Plan. Implementations derive their own table from the Plan with a
/// pure function inside their crate, so the serve loop only hands each new Plan to each.
pub trait DataPlane: Send + Sync {
    /// Its short name, as `/readyz` and the logs show it (`l4`, `ingress`, `dns`, `pods`).
    fn name(&self) -> &'static str;

    /// Serves `plan` from now on. What could not be served (a port taken, a certificate that
    /// does not load) comes back as diagnostics; everything else is served.
    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a>;

    /// Whether it serves the last Plan it was given.
    fn readiness(&self) -> Readiness;
}

/// Whether a data plane serves what it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Serving the last Plan applied.
    Ready,
    /// Not serving yet, and why (`no plan applied yet`).
    NotReady(String),
}

impl Readiness {
    /// The readiness of a data plane that is ready once it has applied a first Plan.
    pub fn after_first_plan(applied: bool) -> Self {
        if applied { Readiness::Ready } else { Readiness::NotReady("no plan applied yet".to_owned()) }
    }

    /// Whether it is [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        *self == Readiness::Ready
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Ready => f.write_str("ready"),
            Readiness::NotReady(why) => write!(f, "not ready: {why}"),
        }
    }
}
