//! The lab on this host, through iproute2 run as a subprocess: built from a [`Layout`],
//! processes run inside its namespaces, its state read back, and torn down. The only module
//! that runs processes; every command names a lab namespace (`ip -n`, `ip netns exec`,
//! `netns add`/`del`), so nothing touches the host's own namespace.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::layout::{BadPrefix, Layout, Stage, check_prefix};

/// How long processes get to end on SIGTERM, and then on SIGKILL.
const GRACE: Duration = Duration::from_secs(1);
/// How often a teardown looks again for processes left in the lab.
const POLL: Duration = Duration::from_millis(20);

/// What went wrong running the lab, naming the command and what it said.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The prefix could name namespaces that are not the lab's.
    #[error(transparent)]
    Prefix(#[from] BadPrefix),
    /// A command could not be started.
    #[error("`{command}` could not start: {source}")]
    Start {
        /// The command line.
        command: String,
        /// Why.
        source: io::Error,
    },
    /// A command ended in failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// Namespaces with the lab's prefix exist already: a lab is not built over another.
    #[error("namespaces of lab {prefix} exist already ({}); tear it down first", names.join(", "))]
    Leftovers {
        /// The lab's prefix.
        prefix: String,
        /// The namespaces found.
        names: Vec<String>,
    },
    /// There is no such namespace to run a command in.
    #[error("there is no network namespace {0}")]
    NoNamespace(String),
    /// An empty command line.
    #[error("no command given to run in {0}")]
    NoCommand(String),
    /// The log of a spawned process could not be opened.
    #[error("cannot open the log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Processes lived on after SIGKILL.
    #[error("processes {pids:?} are still in lab {prefix} after SIGTERM and SIGKILL")]
    Survivors {
        /// The lab's prefix.
        prefix: String,
        /// Their ids.
        pids: Vec<u32>,
    },
    /// Namespaces were still listed after being deleted.
    #[error("namespaces {} are still there after `ip netns delete`", .0.join(", "))]
    Remaining(Vec<String>),
}

/// One lab namespace as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceStatus {
    /// Its name.
    pub name: String,
    /// The processes in it.
    pub pids: Vec<u32>,
    /// Its interfaces, as `ip -brief addr` shows them.
    pub interfaces: Vec<InterfaceStatus>,
}

/// One interface of a lab namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Its name (without the `@if<n>` of a veth's peer).
    pub name: String,
    /// Its operational state, e.g. `UP`.
    pub state: String,
    /// Its addresses with their prefix lengths.
    pub addresses: Vec<String>,
}

/// Builds `layout`: creates its namespaces, sets their sysctls, then runs their `ip` batches
/// stage by stage, every namespace of a stage at once. Refuses when namespaces with the
/// layout's prefix exist; on failure what was built stays, for [`teardown`] to remove.
pub fn build(layout: &Layout) -> Result<(), NetnsError> {
    let existing = lab_namespaces(&layout.prefix)?;
    if !existing.is_empty() {
        return Err(NetnsError::Leftovers { prefix: layout.prefix.clone(), names: existing });
    }
    let batches = layout.commands();
    let add: String = batches.iter().map(|b| format!("netns add {}\n", b.namespace)).collect();
    run(&argv(["ip", "-batch", "-"]), Some(&add))?;
    // Sysctls first: links created afterwards inherit the namespace's defaults.
    run_all(batches.iter().filter(|b| !b.sysctls.is_empty()).map(|b| (b.sysctl_argv(), None)).collect())?;
    let stages: BTreeSet<Stage> = batches.iter().map(|b| b.stage).collect();
    for stage in stages {
        let jobs = batches
            .iter()
            .filter(|b| b.stage == stage)
            .map(|b| (b.ip_argv(), Some(b.lines.iter().map(|l| format!("{l}\n")).collect())))
            .collect();
        run_all(jobs)?;
    }
    Ok(())
}

/// Removes every namespace whose name starts with `prefix`, ending the processes in them
/// first (SIGTERM, then SIGKILL after a second); returns the namespaces removed. Works on
/// what any earlier run left, whole or partly built, and does nothing when nothing is left.
pub fn teardown(prefix: &str) -> Result<Vec<String>, NetnsError> {
    check_prefix(prefix)?;
    let names = lab_namespaces(prefix)?;
    if names.is_empty() {
        return Ok(names);
    }
    stop_processes(prefix, &names)?;
    let delete: String = names.iter().map(|n| format!("netns delete {n}\n")).collect();
    // -force: one namespace that cannot go does not keep the others.
    run(&argv(["ip", "-force", "-batch", "-"]), Some(&delete))?;
    let left = lab_namespaces(prefix)?;
    if !left.is_empty() {
        return Err(NetnsError::Remaining(left));
    }
    Ok(names)
}

/// Starts `argv` in `namespace` as a long-lived process and returns its id: stdin empty,
/// stdout and stderr appended to `log`, in a process group of its own so that it outlives
/// the caller and a signal to the caller's group does not reach it. It is reaped when it ends
/// while the caller lives.
pub fn spawn<S: AsRef<OsStr>>(namespace: &str, argv: &[S], log: &Path) -> Result<u32, NetnsError> {
    let mut command = in_namespace(namespace, argv)?;
    let open = || OpenOptions::new().create(true).append(true).open(log);
    let (out, err) = match open().and_then(|f| Ok((f.try_clone()?, f))) {
        Ok(files) => files,
        Err(source) => return Err(NetnsError::Log { path: log.to_owned(), source }),
    };
    command.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let child = command.spawn().map_err(|source| start_error(&command, source))?;
    let pid = child.id();
    reap(child);
    Ok(pid)
}

/// Runs `argv` in `namespace` to its end, with this process's stdin, stdout and stderr.
pub fn exec<S: AsRef<OsStr>>(namespace: &str, argv: &[S]) -> Result<ExitStatus, NetnsError> {
    let mut command = in_namespace(namespace, argv)?;
    command.status().map_err(|source| start_error(&command, source))
}

/// The lab's namespaces with their processes and addresses.
pub fn status(prefix: &str) -> Result<Vec<NamespaceStatus>, NetnsError> {
    check_prefix(prefix)?;
    let mut out = Vec::new();
    for name in lab_namespaces(prefix)? {
        let pids = pids_in(&name)?;
        let brief = run(&argv(["ip", "-n", &name, "-brief", "addr", "show"]), None)?;
        let interfaces = brief.lines().filter_map(interface_status).collect();
        out.push(NamespaceStatus { name, pids, interfaces });
    }
    Ok(out)
}

/// One line of `ip -brief addr`: name, state, addresses.
fn interface_status(line: &str) -> Option<InterfaceStatus> {
    let mut words = line.split_whitespace();
    let name = words.next()?;
    let name = name.split_once('@').map_or(name, |(name, _)| name).to_owned();
    let state = words.next()?.to_owned();
    Some(InterfaceStatus { name, state, addresses: words.map(String::from).collect() })
}

/// `ip netns exec <namespace> argv…`, once the namespace is known to exist (otherwise `ip`
/// would only say so on the process's stderr).
fn in_namespace<S: AsRef<OsStr>>(namespace: &str, argv: &[S]) -> Result<Command, NetnsError> {
    if argv.is_empty() {
        return Err(NetnsError::NoCommand(namespace.to_owned()));
    }
    if !namespaces()?.iter().any(|n| n == namespace) {
        return Err(NetnsError::NoNamespace(namespace.to_owned()));
    }
    let mut command = Command::new("ip");
    command.args(["netns", "exec", namespace]).args(argv);
    Ok(command)
}

/// Waits for `child` on a thread of its own, so that it does not linger as a zombie.
fn reap(mut child: Child) {
    let pid = child.id();
    let waiting = thread::Builder::new().name(format!("lab-reap-{pid}")).spawn(move || child.wait());
    if let Err(err) = waiting {
        tracing::warn!(pid, %err, "no thread to reap a lab process; it stays a zombie when it ends");
    }
}

/// Every network namespace `ip netns list` shows.
fn namespaces() -> Result<Vec<String>, NetnsError> {
    let list = run(&argv(["ip", "netns", "list"]), None)?;
    // Lines read `name` or `name (id: 3)`.
    Ok(list.lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect())
}

/// The namespaces whose name starts with `prefix`, by name (`ip` lists the newest first).
fn lab_namespaces(prefix: &str) -> Result<Vec<String>, NetnsError> {
    let mut names: Vec<String> = namespaces()?.into_iter().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    Ok(names)
}

/// The processes in namespace `name`.
fn pids_in(name: &str) -> Result<Vec<u32>, NetnsError> {
    let pids = run(&argv(["ip", "netns", "pids", name]), None)?;
    Ok(pids.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The processes in any of `names`.
fn pids_in_all(names: &[String]) -> Result<Vec<u32>, NetnsError> {
    let mut pids = Vec::new();
    for name in names {
        pids.extend(pids_in(name)?);
    }
    Ok(pids)
}

/// Ends every process in `names`: SIGTERM, and SIGKILL for those still there a second later.
fn stop_processes(prefix: &str, names: &[String]) -> Result<(), NetnsError> {
    let mut pids = pids_in_all(names)?;
    for signal in ["TERM", "KILL"] {
        if pids.is_empty() {
            return Ok(());
        }
        tracing::debug!(prefix, signal, ?pids, "ending the lab's processes");
        signal_all(signal, &pids);
        let deadline = Instant::now() + GRACE;
        while !pids.is_empty() && Instant::now() < deadline {
            thread::sleep(POLL);
            pids = pids_in_all(names)?;
        }
    }
    match pids.is_empty() {
        true => Ok(()),
        false => Err(NetnsError::Survivors { prefix: prefix.to_owned(), pids }),
    }
}

/// Sends `signal` to `pids` with `kill`. Whether it worked shows when the namespaces are
/// looked at again: a process may end on its own in between, which `kill` reports as failure.
fn signal_all(signal: &str, pids: &[u32]) {
    let mut args = vec!["kill".to_owned(), "-s".to_owned(), signal.to_owned()];
    args.extend(pids.iter().map(u32::to_string));
    if let Err(err) = run(&args, None) {
        tracing::debug!(%err, "some lab processes had ended already");
    }
}

/// A command line from words.
fn argv<const N: usize>(words: [&str; N]) -> Vec<String> {
    words.map(String::from).into()
}

/// A command's line, for errors.
fn command_line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// A command that could not start, or whose pipes failed.
fn start_error(command: &Command, source: io::Error) -> NetnsError {
    NetnsError::Start { command: command_line(command), source }
}

/// Starts `argv` with `input` on its stdin, if any.
fn start(argv: &[String], input: Option<&str>) -> Result<(Command, Child), NetnsError> {
    let (program, args) = argv.split_first().ok_or_else(|| NetnsError::NoCommand(String::new()))?;
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().map_err(|source| start_error(&command, source))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Dropping stdin at the end of this block closes it: the batch ends there.
        if let Err(source) = stdin.write_all(input.as_bytes()) {
            drop(stdin);
            // A command that stopped reading has usually failed: its own words say more.
            finish(&command, child)?;
            return Err(start_error(&command, source));
        }
    }
    Ok((command, child))
}

/// Waits for a started command; its stdout when it succeeded.
fn finish(command: &Command, child: Child) -> Result<String, NetnsError> {
    let output = child.wait_with_output().map_err(|source| start_error(command, source))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(NetnsError::Failed {
        command: command_line(command),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Runs one command to its end.
fn run(argv: &[String], input: Option<&str>) -> Result<String, NetnsError> {
    let (command, child) = start(argv, input)?;
    finish(&command, child)
}

/// Runs commands side by side, each with its input; the first failure once all have ended.
fn run_all(jobs: Vec<(Vec<String>, Option<String>)>) -> Result<(), NetnsError> {
    let started: Vec<Result<(Command, Child), NetnsError>> =
        jobs.iter().map(|(argv, input)| start(argv, input.as_deref())).collect();
    let mut first = None;
    for job in started {
        let done = job.and_then(|(command, child)| finish(&command, child));
        if let Err(err) = done {
            first.get_or_insert(err);
        }
    }
    first.map_or(Ok(()), Err)
}
