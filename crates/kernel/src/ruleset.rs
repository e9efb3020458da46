//! What Portico keeps in the kernel, as plain data, and the `nft -f` commands that change it.
//!
//! A [`Ruleset`] is, per family, the `portico` table and the Service tables
//! (`portico-services-01` to `-16`), each with chains (ordered rule texts, base chains with
//! their hook) and sets or maps (a declaration and elements). Everything is in `BTreeMap`s, so
//! that equal rulesets render equal scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The name of Portico's main table in each family.
pub const TABLE: &str = "portico";

/// How many Service tables each family has. The kernel checks every rule a table's hooks reach
/// whenever a transaction adds a jump into that table (for loops and hook types): 59 ms per
/// change at 10,000 Services in one table here, a sixteenth of it in one of sixteen.
pub const SERVICE_TABLES: u8 = 16;

/// How many elements one `add element` or `delete element` command carries: long enough to
/// keep the script short, short enough that nft's error messages stay readable.
const ELEMENTS_PER_COMMAND: usize = 512;

/// An nftables family Portico keeps a table in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`ip`).
    Ip,
    /// IPv6 (`ip6`).
    Ip6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ip, Family::Ip6];

    /// The family an address belongs to.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::Ip,
            IpAddr::V6(_) => Family::Ip6,
        }
    }

    /// The family's name, which is also its address payload keyword (`ip saddr`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }

    /// The nftables type of its addresses.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::Ip => "ipv4_addr",
            Family::Ip6 => "ipv6_addr",
        }
    }
}

/// One of Portico's tables: a family's main table (`portico`: filter hooks, HostPorts,
/// masquerading) or one of its Service tables (`portico-services-NN`: the Services whose names
/// hash there, with their own NAT hooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId {
    /// Its family.
    pub family: Family,
    /// 0 for the main table, 1 to [`SERVICE_TABLES`] for a Service table.
    pub part: u8,
}

impl TableId {
    /// The main table of `family`.
    pub const fn main(family: Family) -> Self {
        TableId { family, part: 0 }
    }

    /// Its name in the kernel.
    pub fn name(self) -> String {
        match self.part {
            0 => TABLE.to_owned(),
            part => format!("{TABLE}-services-{part:02}"),
        }
    }
}

impl std::fmt::Display for TableId {
    /// As nft names a table: family and name (`ip6 portico-services-03`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family.name(), self.name())
    }
}

/// Everything Portico keeps in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Its tables.
    pub tables: BTreeMap<TableId, Table>,
}

impl Ruleset {
    /// Takes out what `old` holds and puts in what `new` holds: chains replaced whole, sets of
    /// `old` that `new` lacks removed, elements taken out and added. How a sync of a few
    /// Services changes what the kernel holds without rebuilding all of it.
    pub fn replace_part(&mut self, old: &Ruleset, new: Ruleset) {
        for (family, part) in &old.tables {
            let Some(table) = self.tables.get_mut(family) else { continue };
            let kept = new.tables.get(family);
            for name in part.chains.keys() {
                table.chains.remove(name);
            }
            for (name, set) in &part.sets {
                if kept.is_some_and(|k| k.sets.contains_key(name)) {
                    if let Some(into) = table.sets.get_mut(name) {
                        for key in set.elements.keys() {
                            into.elements.remove(key);
                        }
                    }
                } else {
                    table.sets.remove(name);
                }
            }
        }
        for (family, part) in new.tables {
            let table = self.tables.entry(family).or_default();
            table.chains.extend(part.chains);
            for (name, set) in part.sets {
                match table.sets.get_mut(&name) {
                    Some(into) => into.elements.extend(set.elements),
                    None => {
                        table.sets.insert(name, set);
                    }
                }
            }
        }
    }
}

/// One table: its chains and sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
}

/// A chain: its hook when it is a base chain, and its rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Where a base chain hooks in; `None` for chains reached by `jump` and `goto`.
    pub hook: Option<Hook>,
    /// Rule texts, as `nft add rule` takes them.
    pub rules: Vec<String>,
}

/// A base chain's place in the netfilter hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `nat` or `filter`.
    pub kind: &'static str,
    /// `prerouting`, `input`, `forward`, `output` or `postrouting`.
    pub hook: &'static str,
    /// A number or a named priority (`dstnat - 10`).
    pub priority: &'static str,
}

/// A set or a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    /// Its type and flags.
    pub decl: SetDecl,
    /// Key text → value text (`None` in a set).
    pub elements: BTreeMap<String, Option<String>>,
}

/// What a set or map is declared as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetDecl {
    /// Key type (`ipv4_addr . inet_proto . inet_service`).
    pub key: String,
    /// Value type of a map (`verdict`); `None` for a set.
    pub value: Option<&'static str>,
    /// Flags (`interval`, `dynamic`, `timeout`).
    pub flags: Vec<&'static str>,
    /// Element timeout in seconds.
    pub timeout: Option<u32>,
}

impl SetDecl {
    /// Whether the kernel fills it (affinity): its elements are not ours to flush or list.
    pub fn dynamic(&self) -> bool {
        self.flags.contains(&"dynamic")
    }

    fn keyword(&self) -> &'static str {
        if self.value.is_some() { "map" } else { "set" }
    }
}

/// A set or map element as a command carries it: key text, value text in a map.
pub type Element<'a> = (&'a str, Option<&'a str>);

/// One `nft` command; a transaction is a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Creates the table unless it exists.
    AddTable(TableId),
    /// Deletes the table and all it holds.
    DeleteTable(TableId),
    /// Creates a chain unless it exists.
    AddChain(TableId, &'a str, Option<&'a Hook>),
    /// Removes every rule of a chain.
    FlushChain(TableId, &'a str),
    /// Deletes an empty, unreferenced chain.
    DeleteChain(TableId, &'a str),
    /// Appends a rule to a chain.
    AddRule(TableId, &'a str, &'a str),
    /// Creates a set or map unless it exists.
    AddSet(TableId, &'a str, &'a SetDecl),
    /// Removes every element of a set or map.
    FlushSet(TableId, &'a str, &'a SetDecl),
    /// Deletes an unreferenced set or map.
    DeleteSet(TableId, &'a str, &'a SetDecl),
    /// Adds elements (key, value) to a set or map.
    AddElements(TableId, &'a str, &'a SetDecl, Vec<Element<'a>>),
    /// Deletes elements by key.
    DeleteElements(TableId, &'a str, &'a SetDecl, Vec<&'a str>),
}

impl Command<'_> {
    /// Appends the command to a script, one line each (elements in lines of a bounded size).
    pub fn write(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = match self {
            Command::AddTable(f) => writeln!(out, "add table {f}"),
            Command::DeleteTable(f) => writeln!(out, "delete table {f}"),
            Command::AddChain(f, name, None) => writeln!(out, "add chain {f} {name}"),
            Command::AddChain(f, name, Some(h)) => writeln!(
                out,
                "add chain {f} {name} {{ type {} hook {} priority {} ; policy accept ; }}",
                h.kind, h.hook, h.priority
            ),
            Command::FlushChain(f, name) => writeln!(out, "flush chain {f} {name}"),
            Command::DeleteChain(f, name) => writeln!(out, "delete chain {f} {name}"),
            Command::AddRule(f, chain, rule) => writeln!(out, "add rule {f} {chain} {rule}"),
            Command::AddSet(f, name, decl) => {
                let _ = write!(out, "add {} {f} {name} {{ type {}", decl.keyword(), decl.key);
                if let Some(value) = decl.value {
                    let _ = write!(out, " : {value}");
                }
                out.push_str(" ;");
                if !decl.flags.is_empty() {
                    let _ = write!(out, " flags {} ;", decl.flags.join(","));
                }
                if let Some(timeout) = decl.timeout {
                    let _ = write!(out, " timeout {timeout}s ;");
                }
                writeln!(out, " }}")
            }
            Command::FlushSet(f, name, decl) => {
                writeln!(out, "flush {} {f} {name}", decl.keyword())
            }
            Command::DeleteSet(f, name, decl) => {
                writeln!(out, "delete {} {f} {name}", decl.keyword())
            }
            Command::AddElements(f, set, _, elements) => {
                for chunk in elements.chunks(ELEMENTS_PER_COMMAND) {
                    let _ = write!(out, "add element {f} {set} {{ ");
                    for (i, (key, value)) in chunk.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        out.push_str(key);
                        if let Some(value) = value {
                            out.push_str(" : ");
                            out.push_str(value);
                        }
                    }
                    out.push_str(" }\n");
                }
                Ok(())
            }
            Command::DeleteElements(f, set, _, keys) => {
                for chunk in keys.chunks(ELEMENTS_PER_COMMAND) {
                    let _ = writeln!(out, "delete element {f} {set} {{ {} }}", chunk.join(", "));
                }
                Ok(())
            }
        };
    }
}

/// One transaction's commands as an `nft -f` script. The rules added to one chain one after
/// the other go in one block, `add chain F portico NAME { RULE; RULE; }`: a chain's name is not
/// repeated before each rule, which is a third of what nft reads for ten thousand Services.
///
/// The first rule is written on its own (`add rule …`): nft 1.0 reads the kernel's sets
/// before a script only when it has such a command, and a block naming a set (`@pod-cidrs`)
/// that the script does not declare would be refused without them.
pub fn render(commands: &[Command<'_>]) -> String {
    let mut out = String::with_capacity(commands.len() * 64);
    let mut i = 0;
    let mut alone = true;
    while i < commands.len() {
        let Command::AddRule(family, chain, first) = &commands[i] else {
            commands[i].write(&mut out);
            i += 1;
            continue;
        };
        if std::mem::take(&mut alone) {
            commands[i].write(&mut out);
            i += 1;
            continue;
        }
        let _ = write!(out, "add chain {family} {chain} {{ {first}");
        i += 1;
        while let Some(Command::AddRule(f, c, rule)) = commands.get(i)
            && f == family
            && c == chain
        {
            out.push_str("; ");
            out.push_str(rule);
            i += 1;
        }
        out.push_str("; }\n");
    }
    out
}

/// The chains a rule or a map value sends packets to (`jump X`, `goto X`, vmap entries).
pub fn chain_references(text: &str) -> impl Iterator<Item = &str> {
    let mut words = text.split_whitespace();
    std::iter::from_fn(move || {
        loop {
            let word = words.next()?;
            if word == "goto" || word == "jump" {
                return words.next().map(|target| target.trim_end_matches([',', '}']));
            }
        }
    })
}

/// The sets and maps a rule uses (`@name`).
pub fn set_references(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
        .filter_map(|word| word.strip_prefix('@'))
        .map(|name| name.trim_end_matches([',', '}']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_from_rules_and_verdict_maps() {
        let rule = "numgen random mod 2 vmap { 0 : goto endpoint-a, 1 : goto endpoint-b }";
        assert_eq!(chain_references(rule).collect::<Vec<_>>(), ["endpoint-a", "endpoint-b"]);
        assert_eq!(chain_references("ip saddr 10.0.0.1 jump mark").collect::<Vec<_>>(), ["mark"]);
        assert_eq!(set_references("ip saddr @affinity-x goto e").collect::<Vec<_>>(), ["affinity-x"]);
        assert_eq!(set_references("update @affinity-y { ip saddr }").collect::<Vec<_>>(), ["affinity-y"]);
    }

    #[test]
    fn commands_render_as_nft_reads_them() {
        let decl = SetDecl {
            key: "ipv4_addr".into(),
            value: None,
            flags: vec!["dynamic", "timeout"],
            timeout: Some(10800),
        };
        let map =
            SetDecl { key: "inet_proto . inet_service".into(), value: Some("verdict"), ..SetDecl::default() };
        let hook = Hook { kind: "nat", hook: "prerouting", priority: "dstnat" };
        let elements = [("tcp . 30080", Some("goto external-x")), ("udp . 53", Some("drop"))];
        let (ip, ip6) = (TableId::main(Family::Ip), TableId { family: Family::Ip6, part: 3 });
        let script = render(&[
            Command::AddSet(ip, "affinity-x", &decl),
            Command::AddSet(ip6, "service-nodeports", &map),
            Command::AddChain(ip, "nat-prerouting", Some(&hook)),
            Command::AddElements(ip, "service-nodeports", &map, elements.to_vec()),
            Command::DeleteElements(ip, "service-nodeports", &map, vec!["tcp . 30080"]),
            Command::FlushSet(ip6, "service-nodeports", &map),
        ]);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "add set ip portico affinity-x { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }",
                "add map ip6 portico-services-03 service-nodeports { type inet_proto . inet_service : verdict ; }",
                "add chain ip portico nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }",
                "add element ip portico service-nodeports { tcp . 30080 : goto external-x, udp . 53 : drop }",
                "delete element ip portico service-nodeports { tcp . 30080 }",
                "flush map ip6 portico-services-03 service-nodeports",
            ]
        );
    }
}
