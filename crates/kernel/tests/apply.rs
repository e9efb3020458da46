//! The applier with a recording runner: cold start, differences only, nothing sent when
//! nothing changed, a full resync after a refused transaction, a cold start after a refused
//! resync, repairs.
#![allow(clippy::unwrap_used)]

mod support;

use portico_kernel::ruleset::render;
use portico_kernel::{Applier, Command, DiffOptions, Nft, NftError, SyncKind};
use support::sequence;

/// Records every script; refuses the next ones while `refuse` is above zero.
#[derive(Default)]
struct Recorder {
    scripts: Vec<String>,
    refuse: usize,
}

impl Nft for Recorder {
    fn run(&mut self, commands: &[Command<'_>]) -> Result<usize, NftError> {
        let script = render(commands);
        self.scripts.push(script.clone());
        if self.refuse > 0 {
            self.refuse -= 1;
            return Err(NftError::Refused {
                status: "exit status: 1".into(),
                stderr: "Error: No such file".into(),
            });
        }
        Ok(script.len())
    }
}

fn last(applier: &Applier<Recorder>) -> &str {
    applier.nft().scripts.last().unwrap()
}

#[test]
fn syncs_send_differences_and_nothing_when_nothing_changed() {
    let [p1, p2, _] = sequence();
    let mut applier = Applier::new(Recorder::default(), DiffOptions::default());
    let cold = applier.sync(p1.clone()).unwrap();
    assert_eq!((cold.kind, cold.transactions), (SyncKind::Cold, 1));
    assert!(
        last(&applier).starts_with("add table ip portico\ndelete table ip portico\nadd table ip portico\n")
    );
    assert_eq!(cold.bytes, last(&applier).len());

    let same = applier.sync(p1.clone()).unwrap();
    assert_eq!((same.kind, same.transactions, same.bytes), (SyncKind::Unchanged, 0, 0));
    assert_eq!(applier.nft().scripts.len(), 1, "nothing was run");

    let changed = applier.sync(p2).unwrap();
    assert_eq!(changed.kind, SyncKind::Diff);
    assert!(changed.bytes * 4 < cold.bytes, "{} against {}", changed.bytes, cold.bytes);
    assert!(changed.chains > 0 && changed.elements > 0 && changed.chains < cold.chains);
    assert!(!last(&applier).contains("delete table"));
}

#[test]
fn a_refused_transaction_is_followed_by_a_full_resync_then_a_cold_start() {
    let [p1, p2, p3] = sequence();
    let mut applier = Applier::new(Recorder::default(), DiffOptions::default());
    applier.sync(p1).unwrap();
    applier.nft_mut().refuse = 1;
    let error = applier.sync(p2.clone()).unwrap_err();
    assert!(error.to_string().contains("No such file"), "{error}");

    let resync = applier.sync(p2.clone()).unwrap();
    assert_eq!(resync.kind, SyncKind::Resync);
    let script = last(&applier);
    assert!(
        script.contains("flush chain ip portico-services-01 services\n")
            && script.contains("flush map ip portico-services-01 service-ips\n")
    );
    assert!(
        !script.lines().any(|l| l.starts_with("flush set") && l.contains(" affinity-")),
        "affinity sets keep their clients"
    );
    assert!(!script.contains("delete table"));
    assert_eq!(applier.sync(p2.clone()).unwrap().kind, SyncKind::Unchanged);

    // A refused resync leaves nothing known: the next sync makes the tables anew.
    applier.nft_mut().refuse = 2;
    assert!(applier.sync(p3.clone()).is_err());
    assert!(applier.sync(p3.clone()).is_err());
    assert_eq!(applier.sync(p3).unwrap().kind, SyncKind::Cold);
}

#[test]
fn repair_rewrites_the_latest_ruleset() {
    let [p1, p2, _] = sequence();
    let mut applier = Applier::new(Recorder::default(), DiffOptions::default());
    assert_eq!(applier.repair().unwrap().kind, SyncKind::Unchanged, "nothing to repair yet");
    applier.sync(p1).unwrap();
    let repair = applier.repair().unwrap();
    assert_eq!(repair.kind, SyncKind::Resync);
    assert!(last(&applier).contains("flush chain ip portico-services-01 services\n"));
    // The Plan a refused diff wanted is the one a repair puts in.
    applier.nft_mut().refuse = 1;
    assert!(applier.sync(p2.clone()).is_err());
    assert_eq!(applier.repair().unwrap().kind, SyncKind::Resync);
    assert_eq!(applier.sync(p2).unwrap().kind, SyncKind::Unchanged);
}
