//! A network namespace of a test, and what nft lists in it, for the tests that load rulesets
//! into a kernel.

use std::process::{Command, Output};

use portico_kernel::{Family, NftCommand};

/// Runs `argv`, which must succeed.
pub fn run(argv: &[&str]) -> Output {
    let output = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(output.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A network namespace of this test, deleted when dropped.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// A fresh namespace `portico-test-kernel-<pid>-<tag>`.
    pub fn new(tag: &str) -> Netns {
        let name = format!("portico-test-kernel-{}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    /// Runs `argv` inside the namespace.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(argv);
        run(&all)
    }

    /// `nft`, run inside it.
    pub fn nft(&self) -> NftCommand {
        NftCommand::new(["ip", "netns", "exec", &self.name, "nft"])
    }

    /// Every table (Portico's, the only ones here) as nft lists them, in an order that does
    /// not depend on the order things were made in: blocks sorted, elements sorted.
    pub fn listing(&self) -> String {
        normalize(&String::from_utf8(self.exec(&["nft", "list", "ruleset"]).stdout).unwrap())
    }
}

impl Netns {
    /// Its path, for entering it.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    /// Every table as the kernel holds it, as `nft --debug=netlink` prints it: each rule's
    /// expressions and each set's elements (in sorted order: a hash set's order depends on
    /// its random seed), without handles.
    pub fn expressions(&self) -> String {
        let text = self.exec(&["nft", "--debug=netlink", "list", "ruleset"]).stdout;
        let text = String::from_utf8(text).unwrap();
        let mut out = String::new();
        let mut elements: Vec<&str> = Vec::new();
        for line in text.lines().take_while(|l| !l.starts_with("table ")) {
            if line.starts_with("\telement") {
                elements.push(line);
                continue;
            }
            elements.sort_unstable();
            out.extend(elements.drain(..).map(|e| format!("{e}\n")));
            // A rule's header (`ip portico-services-01 services 12 11`) ends with its handle
            // and position.
            let rule = Family::ALL.iter().any(|f| line.starts_with(&format!("{} portico", f.name())));
            out.push_str(if rule {
                line.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ')
            } else {
                line
            });
            out.push('\n');
        }
        elements.sort_unstable();
        out.extend(elements.drain(..).map(|e| format!("{e}\n")));
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A table listing with its chains, sets and maps sorted, and each one's elements sorted.
pub fn normalize(listing: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut table = "";
    for line in listing.lines() {
        if let Some(name) = line.strip_prefix("table ") {
            table = name.trim_end_matches(" {");
        }
        if line.starts_with("\tchain ") || line.starts_with("\tmap ") || line.starts_with("\tset ") {
            current = Some(format!("{table}: "));
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line.trim());
            block.push('\n');
            if line == "\t}" {
                blocks.push(sort_elements(&current.take().unwrap()));
            }
        }
    }
    blocks.sort();
    blocks.concat()
}

fn sort_elements(block: &str) -> String {
    let Some((head, rest)) = block.split_once("elements = { ") else { return block.to_owned() };
    let (elements, tail) = rest.split_once(" }").unwrap();
    let mut list: Vec<&str> = elements.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    list.sort_unstable();
    format!("{head}elements = {{ {} }}{tail}", list.join(", "))
}
