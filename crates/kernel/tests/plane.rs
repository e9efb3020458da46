//! The kernel data plane as the serve loop drives it, with a runner in place of nft: ready
//! once a Plan's rules are in, not ready (with an error naming why) while nft refuses them,
//! conflicts reported, and the periodic repair rewriting everything.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_dataplane::{DataPlane, drain};
use portico_kernel::ruleset::render;
use portico_kernel::{Command, CompileOptions, KernelProxy, Nft, NftError, Options, WriterKind};
use portico_plan::{Allocations, PlanConfig};
use portico_testkit::plan::planned_with;
use prometheus_client::registry::Registry;

/// Shares what it was given with the test; refuses while `refuse` is set.
#[derive(Clone, Default)]
struct Runner {
    scripts: Arc<Mutex<Vec<String>>>,
    refuse: Arc<Mutex<bool>>,
}

impl Nft for Runner {
    fn run(&mut self, commands: &[Command<'_>]) -> Result<usize, NftError> {
        let script = render(commands);
        self.scripts.lock().unwrap().push(script.clone());
        if *self.refuse.lock().unwrap() {
            return Err(NftError::Refused {
                status: "exit status: 1".into(),
                stderr: "Error: Operation not permitted".into(),
            });
        }
        Ok(script.len())
    }
}

const YAML: &str = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 127.96.0.10
  externalIPs: [127.96.0.10]
  ports: [{port: 80}]
";

#[tokio::test]
async fn ready_once_the_rules_are_in_and_not_while_nft_refuses_them() {
    let plan = Arc::new(planned_with(YAML, &PlanConfig::default(), &Allocations::default(), 1).clean().plan);
    let runner = Runner::default();
    *runner.refuse.lock().unwrap() = true;
    let (_trigger, watch) = drain::channel();
    let options = Options {
        node: "localhost".into(),
        compile: CompileOptions::default(),
        sync_period: Duration::from_millis(100),
        writer: WriterKind::Netlink,
    };
    let mut registry = Registry::default();
    let plane = KernelProxy::with_nft(runner.clone(), options, &watch, &mut registry);
    assert!(!plane.readiness().is_ready(), "no Plan yet");

    let diagnostics = plane.apply(&plan).await;
    let messages: Vec<&str> = diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("nftables rules not applied") && m.contains("Operation not permitted")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("127.96.0.10:80/TCP") && m.contains("not served")),
        "the external IP's clash: {messages:?}"
    );
    assert!(!plane.readiness().is_ready());
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(
        metrics.contains(r#"syncs_total{kind="cold",result="refused"} 1"#),
        "the first sync is a cold start: {metrics}"
    );

    // nft accepts again: the repair brings the rules in without a new Plan.
    *runner.refuse.lock().unwrap() = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !plane.readiness().is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "the repair did not apply the rules");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scripts = runner.scripts.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(runner.scripts.lock().unwrap().len() > scripts, "every sync period rewrites the rules");
    assert!(
        runner.scripts.lock().unwrap().last().unwrap().contains("127.96.0.10"),
        "the whole ruleset is rewritten"
    );
}
