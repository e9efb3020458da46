//! `portico`: every way to expose Kubernetes workloads, in one binary.
#![forbid(unsafe_code)]

mod pipeline;
mod report;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use portico_plan::PlanConfig;

#[derive(Parser)]
#[command(name = "portico", version, about = "Every way to expose Kubernetes workloads, in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests: print every error and warning, grouped by object.
    Check(ManifestArgs),
    /// Explain how each workload in the manifests is exposed: method, layer, reach,
    /// addresses, ports, TLS, backends and cost.
    Explain(ManifestArgs),
    /// Run the built-in echo workload: answers HTTP/1.1, h2c (and HTTPS with --tls-cert)
    /// with JSON describing the request, and echoes UDP datagrams on the same port.
    Echo {
        /// Address to listen on (TCP and UDP).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Pod name reported in answers.
        #[arg(long)]
        name: Option<String>,
        /// Namespace reported in answers.
        #[arg(long)]
        namespace: Option<String>,
        /// Service reported in answers.
        #[arg(long)]
        service: Option<String>,
        /// PEM certificate chain: serve HTTPS instead of plain HTTP.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

/// What the one-shot commands read and how they print.
#[derive(Args)]
struct ManifestArgs {
    /// Manifest files or folders (searched recursively for .yaml, .yml, .json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    plan: PlanArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned text for a terminal.
    Text,
    /// JSON for programs.
    Json,
}

/// Flags that shape planning: where state lives and what ranges to allocate from.
#[derive(Args, Clone)]
struct PlanArgs {
    /// State folder keeping allocations (ClusterIPs, NodePorts, LB and Pod IPs) stable across
    /// runs; without it allocations are computed afresh (deterministically) and not saved.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Service CIDR for ClusterIPs (repeat for dual stack).
    #[arg(long = "service-cidr", default_values_t = PlanConfig::default().service_cidrs)]
    service_cidrs: Vec<IpNet>,
    /// LoadBalancer IP pool (repeatable).
    #[arg(long = "lb-pool", default_values_t = PlanConfig::default().load_balancer_pools)]
    lb_pools: Vec<IpNet>,
    /// Pod CIDR for Pods without status.podIP.
    #[arg(long, default_value_t = PlanConfig::default().pod_cidr)]
    pod_cidr: IpNet,
    /// NodePort range, as FIRST-LAST.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    node_port_range: std::ops::RangeInclusive<u16>,
    /// Name of this node (Pods without spec.nodeName run here).
    #[arg(long, default_value_t = PlanConfig::default().local_node)]
    node_name: String,
    /// Extra IngressClass name to serve without an IngressClass object (repeatable).
    #[arg(long = "ingress-class")]
    ingress_classes: Vec<String>,
}

impl PlanArgs {
    fn config(&self) -> PlanConfig {
        let mut config = PlanConfig {
            service_cidrs: self.service_cidrs.clone(),
            load_balancer_pools: self.lb_pools.clone(),
            pod_cidr: self.pod_cidr,
            node_port_range: self.node_port_range.clone(),
            local_node: self.node_name.clone(),
            ..PlanConfig::default()
        };
        config.ingress_class_names.extend(self.ingress_classes.iter().cloned());
        config
    }
}

impl ManifestArgs {
    fn load_and_plan(&self) -> Result<pipeline::Outcome> {
        pipeline::load_and_plan(&self.paths, &self.plan.config(), self.plan.state.as_deref())
    }
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?} is not FIRST-LAST"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is empty or starts at 0"));
    }
    Ok(a..=b)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        // A closed pipe (`portico check | head`) is the reader's choice, not a failure.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check(args) => {
            let outcome = args.load_and_plan()?;
            let errors = report::check(&outcome, args.output == Output::Json, &mut std::io::stdout().lock())?;
            Ok(if errors { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Explain(args) => {
            let outcome = args.load_and_plan()?;
            report::explain(&outcome, args.output == Output::Json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Echo { listen, name, namespace, service, tls_cert, tls_key } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(portico_echo::TlsConfig::from_files(&cert, &key)?),
                _ => None,
            };
            let identity = portico_echo::Identity { pod: name, namespace, service };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async move {
                let echo = portico_echo::Echo::bind(listen, identity, tls).await?;
                eprintln!("echo listening on {} (TCP and UDP); Ctrl-C stops", echo.local_addr());
                echo.run(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
