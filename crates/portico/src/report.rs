//! What `check` and `explain` print: diagnostics grouped by object, and the exposure table.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use portico_model::{Diagnostic, Origin, Severity};
use portico_plan::NodePlan;
use portico_plan::exposure::{Exposure, Layer, exposures};
use portico_plan::mesh::{MeshPlan, MeshedBy};
use serde::Serialize;

use crate::pipeline::Outcome;

/// Width the text table is laid out for.
const WIDTH: usize = 100;

/// Prints diagnostics; returns whether any is an error.
pub fn check(outcome: &Outcome, json: bool, out: &mut impl Write) -> Result<bool> {
    let errors = count(&outcome.diagnostics, Severity::Error);
    let warnings = count(&outcome.diagnostics, Severity::Warning);
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            errors: usize,
            warnings: usize,
            files: usize,
            objects: usize,
            diagnostics: &'a [Diagnostic],
        }
        let report = Report {
            errors,
            warnings,
            files: outcome.files.len(),
            objects: outcome.objects,
            diagnostics: &outcome.diagnostics,
        };
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        write_diagnostics(&outcome.diagnostics, out)?;
        writeln!(
            out,
            "{} error{}, {} warning{} in {} file{} ({} object{} accepted)",
            errors,
            plural(errors),
            warnings,
            plural(warnings),
            outcome.files.len(),
            plural(outcome.files.len()),
            outcome.objects,
            plural(outcome.objects)
        )?;
    }
    Ok(errors > 0)
}

fn count(diagnostics: &[Diagnostic], severity: Severity) -> usize {
    diagnostics.iter().filter(|d| d.severity == severity).count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Diagnostics grouped by file (or the API server, or the planner), then object (with its
/// document), errors first within each.
fn write_diagnostics(diagnostics: &[Diagnostic], out: &mut impl Write) -> Result<()> {
    let mut groups: BTreeMap<(String, usize, String), Vec<&Diagnostic>> = BTreeMap::new();
    for d in diagnostics {
        let place = d.origin.as_ref().map_or_else(|| "(planner)".into(), place);
        let document = d.origin.as_ref().and_then(Origin::document).unwrap_or_default();
        let object = d.object.as_ref().map(ToString::to_string).unwrap_or_default();
        groups.entry((place, document, object)).or_default().push(d);
    }
    let mut last_place = None;
    for ((place, document, object), mut items) in groups {
        if last_place.as_ref() != Some(&place) {
            writeln!(out, "{place}")?;
            last_place = Some(place);
        }
        match (object.is_empty(), document) {
            (false, 0) => writeln!(out, "  {object}")?,
            (false, n) => writeln!(out, "  {object} (document {n})")?,
            (true, 0) => {}
            (true, n) => writeln!(out, "  document {n}")?,
        }
        items.sort_by_key(|d| (d.severity, d.origin.as_ref().and_then(Origin::line)));
        for d in items {
            let line =
                d.origin.as_ref().and_then(Origin::line).map(|l| format!("line {l}: ")).unwrap_or_default();
            let field =
                d.field.as_deref().filter(|f| !f.is_empty()).map(|f| format!("{f}: ")).unwrap_or_default();
            writeln!(out, "    {:<7} {line}{field}{}", d.severity.to_string(), d.message)?;
        }
    }
    Ok(())
}

/// The heading a diagnostic's origin is grouped under: its file, or the API server.
fn place(origin: &Origin) -> String {
    origin.file().map_or_else(|| "(API server)".into(), |file| file.display().to_string())
}

/// Prints the exposure table (or JSON), and a one-line diagnostics summary on stderr.
pub fn explain(outcome: &Outcome, json: bool, out: &mut impl Write) -> Result<()> {
    let rows = exposures(&outcome.plan);
    let errors = count(&outcome.diagnostics, Severity::Error);
    let warnings = count(&outcome.diagnostics, Severity::Warning);
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            nodes: &'a [NodePlan],
            exposures: &'a [Exposure],
            mesh: &'a MeshPlan,
            diagnostics: &'a [Diagnostic],
        }
        let report = Report {
            nodes: &outcome.plan.nodes,
            exposures: &rows,
            mesh: &outcome.plan.mesh,
            diagnostics: &outcome.diagnostics,
        };
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    write_nodes(&outcome.plan.nodes, out)?;
    write_table(&rows, out)?;
    write_mesh(&outcome.plan.mesh, out)?;
    if errors + warnings > 0 {
        eprintln!(
            "{errors} error{}, {warnings} warning{}: objects with errors are not shown; `portico check` lists them",
            plural(errors),
            plural(warnings)
        );
    }
    Ok(())
}

const HEADERS: [&str; 8] =
    ["METHOD", "LAYER", "ROUTING", "REACHABLE FROM", "TLS", "READY", "COSTS", "ENTRY POINT"];

/// Printed under the table: what its columns mean, so that the difference between a
/// LoadBalancer and an Ingress shows without the README.
const LEGEND: &str = "\
ROUTING  ip:port (L4): the address and port a client connects to choose the Service, so each
         LoadBalancer takes an IP of its own. host+path (L7, Ingress): each HTTP request's host
         and path choose it, so many Services share one address. name (DNS): names are only
         answered; no proxy is in the path.
TLS      whether TLS ends here (an Ingress with a certificate); L4 passes bytes as they are.
COSTS    what the method takes up: IPs of its own, ports on nodes, a share of the Ingress.
READY    ready endpoints, of all.";

/// Where to connect, composed from addresses and ports: `addr:port/PROTO→target, …`.
fn entry_points(row: &Exposure) -> Vec<String> {
    let ports = row.ports.join(",");
    row.addresses
        .iter()
        .map(|a| match (row.layer, ports.is_empty()) {
            (Layer::L4, false) if a.contains(':') && !a.contains('.') => format!("[{a}]:{ports}"),
            (Layer::L4, false) => format!("{a}:{ports}"),
            (Layer::Dns, false) => format!("{a} ({ports})"),
            _ => a.clone(),
        })
        .collect()
}

fn cells(row: &Exposure) -> [String; 7] {
    [
        format!("{:?}", row.method),
        match row.layer {
            Layer::Dns => "DNS".into(),
            other => format!("{other:?}"),
        },
        row.routing.describe().to_owned(),
        row.reachable_from.describe(),
        if row.tls { "yes".into() } else { "no".into() },
        format!("{}/{}", row.ready, row.total),
        row.cost.clone(),
    ]
}

/// The nodes the methods are served on: NodePorts on every node's addresses, HostPorts on
/// their Pod's node, Pod addresses from each node's pod CIDRs.
fn write_nodes(nodes: &[NodePlan], out: &mut impl Write) -> Result<()> {
    let list = |items: Vec<String>| if items.is_empty() { "-".to_owned() } else { items.join(",") };
    let rows: Vec<[String; 4]> = nodes
        .iter()
        .map(|n| {
            [
                n.name.clone(),
                list(n.addresses.iter().map(ToString::to_string).collect()),
                list(n.pod_cidrs.iter().map(ToString::to_string).collect()),
                (if n.ready { "yes" } else { "no" }).to_owned(),
            ]
        })
        .collect();
    write_aligned(["NODE", "ADDRESSES", "POD CIDRS", "READY"], rows, out)?;
    writeln!(out)?;
    Ok(())
}

/// Rows of `cells` under `headers`, columns aligned, indented by two.
fn write_aligned<const N: usize>(
    headers: [&str; N],
    rows: Vec<[String; N]>,
    out: &mut impl Write,
) -> Result<()> {
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for cells in std::iter::once(headers.map(str::to_owned)).chain(rows) {
        let line: String = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}  ")).collect();
        writeln!(out, "  {}", line.trim_end())?;
    }
    Ok(())
}

/// The meshed workloads: the identity each runs as and the node whose proxy serves it.
fn write_mesh(mesh: &MeshPlan, out: &mut impl Write) -> Result<()> {
    if mesh.workloads.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let n = mesh.workloads.len();
    writeln!(out, "Mesh: {n} workload{} in trust domain {}", plural(n), mesh.trust_domain)?;
    let rows = mesh
        .workloads
        .iter()
        .map(|w| {
            let by = match w.meshed_by {
                MeshedBy::Pod => "Pod label",
                MeshedBy::Namespace => "namespace label",
            };
            [w.pod.to_string(), w.node.clone(), w.identity.clone(), by.to_owned()]
        })
        .collect();
    write_aligned(["POD", "NODE", "IDENTITY", "MESHED BY"], rows, out)?;
    // Workloads under the same policies are listed together, once.
    let mut groups: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for workload in &mesh.workloads {
        let lines = workload.policy.describe();
        match groups.iter_mut().find(|(l, _)| *l == lines) {
            Some((_, pods)) => pods.push(workload.pod.to_string()),
            None => groups.push((lines, vec![workload.pod.to_string()])),
        }
    }
    writeln!(out, "Authorization (Istio AuthorizationPolicy, root namespace {}):", mesh.root_namespace)?;
    for (lines, pods) in groups {
        writeln!(out, "  {}", pods.join(", "))?;
        if lines.is_empty() {
            writeln!(out, "    no policy: every source allowed, meshed or plain")?;
        }
        for line in lines {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

/// Rows grouped under their object, columns aligned across the whole table, entry points
/// last and one per line; an entry point that would pass 100 columns goes on a line of its
/// own rather than wrapping.
fn write_table(rows: &[Exposure], out: &mut impl Write) -> Result<()> {
    if rows.is_empty() {
        writeln!(out, "Nothing is exposed.")?;
        return Ok(());
    }
    let table: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEADERS[..7].iter().map(|h| h.chars().count()).collect();
    for r in &table {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fixed = |cells: &[String]| -> String {
        let mut text = String::from("  ");
        for (cell, w) in cells.iter().zip(&widths) {
            text.push_str(&format!("{cell:<w$}  "));
        }
        text
    };
    let header: Vec<String> = HEADERS[..7].iter().map(|h| h.to_string()).collect();
    writeln!(out, "{}{}", fixed(&header), HEADERS[7])?;
    let lead = fixed(&header).chars().count();
    let mut last = None;
    for (row, cells) in rows.iter().zip(&table) {
        if last != Some(&row.object) {
            writeln!(out, "{}", row.object)?;
            last = Some(&row.object);
        }
        let mut prefix = fixed(cells);
        for entry in entry_points(row) {
            if lead + entry.chars().count() > WIDTH {
                writeln!(out, "{}", prefix.trim_end())?;
                writeln!(out, "      {entry}")?;
            } else {
                writeln!(out, "{prefix}{entry}")?;
            }
            prefix = " ".repeat(lead);
        }
        if row.addresses.is_empty() {
            writeln!(out, "{}", prefix.trim_end())?;
        }
    }
    writeln!(out)?;
    writeln!(out, "{LEGEND}")?;
    Ok(())
}
