//! Manifests built from a few values, as YAML documents each ending in `---`, so that tests
//! write the scenario and not the boilerplate. Fields a builder does not know are given as YAML
//! text: spec lines indented by two spaces (each ending in a newline), or the inside of a flow
//! mapping (`app: web, tier: db`).

use std::fmt;

/// A Pod with one container `c`, built up from its name.
#[derive(Clone, Debug, Default)]
pub struct Pod {
    name: String,
    labels: Option<String>,
    metadata: Option<String>,
    spec: String,
    image: Option<String>,
    ports: Vec<(String, u16)>,
    ips: Vec<String>,
    ready: Option<bool>,
}

impl Pod {
    /// A Pod named `name`, without labels, ports or status.
    pub fn new(name: &str) -> Pod {
        Pod { name: name.to_owned(), ..Pod::default() }
    }

    /// Labelled `app: <app>`.
    pub fn app(self, app: &str) -> Pod {
        self.labels(&format!("app: {app}"))
    }

    /// Labelled with `labels`, the inside of a flow mapping.
    pub fn labels(mut self, labels: &str) -> Pod {
        self.labels = Some(labels.to_owned());
        self
    }

    /// With more metadata fields, the inside of a flow mapping.
    pub fn metadata(mut self, fields: &str) -> Pod {
        self.metadata = Some(fields.to_owned());
        self
    }

    /// With more spec lines, before the containers.
    pub fn spec(mut self, lines: &str) -> Pod {
        self.spec.push_str(lines);
        self
    }

    /// Its container runs `image`.
    pub fn image(mut self, image: &str) -> Pod {
        self.image = Some(image.to_owned());
        self
    }

    /// Its container has the port `name`, number `number`.
    pub fn port(mut self, name: &str, number: u16) -> Pod {
        self.ports.push((name.to_owned(), number));
        self
    }

    /// It has the address `ip`: the first is `podIP`; where there are more, all are `podIPs`.
    pub fn ip(mut self, ip: &str) -> Pod {
        self.ips.push(ip.to_owned());
        self
    }

    /// Its `Ready` condition is `ready`.
    pub fn ready(mut self, ready: bool) -> Pod {
        self.ready = Some(ready);
        self
    }
}

impl fmt::Display for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}", self.name)?;
        if let Some(labels) = &self.labels {
            write!(f, ", labels: {{{labels}}}")?;
        }
        if let Some(fields) = &self.metadata {
            write!(f, ", {fields}")?;
        }
        write!(f, "}}\nspec:\n{}  containers:\n  - name: c\n", self.spec)?;
        if let Some(image) = &self.image {
            writeln!(f, "    image: {image}")?;
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|(name, port)| format!("{{name: {name}, containerPort: {port}}}"))
                .collect();
            writeln!(f, "    ports: [{}]", ports.join(", "))?;
        }
        if !self.ips.is_empty() || self.ready.is_some() {
            f.write_str("status:\n")?;
        }
        if let Some(first) = self.ips.first() {
            writeln!(f, "  podIP: '{first}'")?;
        }
        if self.ips.len() > 1 {
            let all: Vec<String> = self.ips.iter().map(|ip| format!("{{ip: '{ip}'}}")).collect();
            writeln!(f, "  podIPs: [{}]", all.join(", "))?;
        }
        if let Some(ready) = self.ready {
            let status = if ready { "True" } else { "False" };
            writeln!(f, "  conditions: [{{type: Ready, status: '{status}'}}]")?;
        }
        f.write_str("---\n")
    }
}

/// A Service, built up from its name.
#[derive(Clone, Debug, Default)]
pub struct Service {
    name: String,
    kind: Option<String>,
    headless: bool,
    selector: Option<String>,
    spec: String,
    ports: Vec<String>,
}

impl Service {
    /// A Service named `name` of the default type, without selector or ports.
    pub fn new(name: &str) -> Service {
        Service { name: name.to_owned(), ..Service::default() }
    }

    /// Of type `kind` (`NodePort`, `LoadBalancer`, …).
    pub fn kind(mut self, kind: &str) -> Service {
        self.kind = Some(kind.to_owned());
        self
    }

    /// Headless: `clusterIP: None`.
    pub fn headless(mut self) -> Service {
        self.headless = true;
        self
    }

    /// Selecting the Pods labelled `app: <app>`.
    pub fn app(self, app: &str) -> Service {
        self.selector(&format!("app: {app}"))
    }

    /// Selecting by `labels`, the inside of a flow mapping.
    pub fn selector(mut self, labels: &str) -> Service {
        self.selector = Some(labels.to_owned());
        self
    }

    /// With more spec lines.
    pub fn spec(mut self, lines: &str) -> Service {
        self.spec.push_str(lines);
        self
    }

    /// With the port `port`, a flow mapping (`{name: http, port: 80, targetPort: http}`).
    pub fn port(mut self, port: &str) -> Service {
        self.ports.push(port.to_owned());
        self
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apiVersion: v1\nkind: Service\nmetadata: {{name: {}}}\nspec:\n", self.name)?;
        if let Some(kind) = &self.kind {
            writeln!(f, "  type: {kind}")?;
        }
        if self.headless {
            f.write_str("  clusterIP: None\n")?;
        }
        if let Some(selector) = &self.selector {
            writeln!(f, "  selector: {{{selector}}}")?;
        }
        f.write_str(&self.spec)?;
        if !self.ports.is_empty() {
            f.write_str("  ports:\n")?;
            for port in &self.ports {
                writeln!(f, "  - {port}")?;
            }
        }
        f.write_str("---\n")
    }
}

/// An EndpointSlice of a Service, built up from its name.
#[derive(Clone, Debug)]
pub struct EndpointSlice {
    name: String,
    service: String,
    family: String,
    ports: Vec<String>,
    endpoints: Vec<String>,
}

impl EndpointSlice {
    /// The IPv4 EndpointSlice `name` of the Service `service`, without ports or endpoints.
    pub fn new(name: &str, service: &str) -> EndpointSlice {
        EndpointSlice {
            name: name.to_owned(),
            service: service.to_owned(),
            family: "IPv4".to_owned(),
            ports: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// Of the address type `family` (`IPv4`, `IPv6`).
    pub fn family(mut self, family: &str) -> EndpointSlice {
        self.family = family.to_owned();
        self
    }

    /// With the port `port`, a flow mapping (`{name: http, port: 8080}`).
    pub fn port(mut self, port: &str) -> EndpointSlice {
        self.ports.push(port.to_owned());
        self
    }

    /// With an endpoint of the one address `ip`, its conditions unset.
    pub fn address(mut self, ip: &str) -> EndpointSlice {
        self.endpoints.push(format!("{{addresses: ['{ip}']}}"));
        self
    }
}

impl fmt::Display for EndpointSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}\n  labels: {{kubernetes.io/service-name: {}}}\naddressType: {}\nports: [{}]\nendpoints: [{}]\n---\n",
            self.name,
            self.service,
            self.family,
            self.ports.join(", "),
            self.endpoints.join(", ")
        )
    }
}

/// An Ingress with `annotations` (the inside of a flow mapping), one rule for `host` (any
/// host when `None`) with `paths` as (path, pathType, Service at port 80), and the spec lines
/// `extra` before the rules.
pub fn ingress(
    name: &str,
    annotations: &str,
    host: Option<&str>,
    paths: &[(&str, &str, &str)],
    extra: &str,
) -> String {
    let paths: Vec<String> = paths
        .iter()
        .map(|(p, t, s)| {
            format!(
                "{{path: '{p}', pathType: {t}, backend: {{service: {{name: {s}, port: {{number: 80}}}}}}}}"
            )
        })
        .collect();
    let host = host.map(|h| format!("host: '{h}'\n    ")).unwrap_or_default();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n{extra}  rules:\n  - {host}http:\n      paths: [{}]\n---\n",
        paths.join(", ")
    )
}
