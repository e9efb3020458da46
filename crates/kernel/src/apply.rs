//! Putting rulesets in the kernel: each transaction atomically (over netlink, or through
//! `nft -f -`), and only the differences from the last one applied. The kernel's table is never listed: Portico
//! remembers what it applied, and after a failed transaction rewrites everything once.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command as Process, Stdio};

use crate::diff::{self, DiffOptions, Update};
use crate::expr::Unsupported;
use crate::ruleset::{Command, Ruleset, render};

/// Something that runs one transaction's commands atomically.
pub trait Nft {
    /// Runs `commands`; all of them take effect, or none. Returns the bytes it wrote.
    fn run(&mut self, commands: &[Command<'_>]) -> Result<usize, NftError>;
}

/// Takes every table of Portico's out of the namespace `nft` writes to, in one transaction
/// (what `kube-proxy --cleanup` does for its own rules): each is made first where it is not,
/// so that deleting it cannot fail. Returns the bytes written.
pub fn remove_all<N: Nft>(nft: &mut N) -> Result<usize, NftError> {
    let mut commands = Vec::new();
    for family in [crate::ruleset::Family::Ip, crate::ruleset::Family::Ip6] {
        for part in 0..=crate::ruleset::SERVICE_TABLES {
            let table = crate::ruleset::TableId { family, part };
            commands.extend([Command::AddTable(table), Command::DeleteTable(table)]);
        }
    }
    nft.run(&commands)
}

/// Why a transaction was not applied.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not be started or fed.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A sync by parts when what the kernel holds is not known.
    #[error("what the kernel holds is not known: a whole sync is needed")]
    Unknown,
    /// nft read the script and refused it; nothing of it was applied.
    #[error("nft refused the transaction ({status}): {stderr}")]
    Refused {
        /// Its exit status.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// The netlink socket could not be opened or written.
    #[error("nf_tables over netlink: {0}")]
    Netlink(#[source] std::io::Error),
    /// The kernel refused a command of the transaction; nothing of it was applied.
    #[error("the kernel refused `{command}`: {error}")]
    Kernel {
        /// The command, as nft would read it (empty when the kernel named none).
        command: String,
        /// What the kernel answered.
        #[source]
        error: std::io::Error,
    },
    /// A command Portico cannot encode for netlink (a rule the compiler should not write).
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

/// The `nft` program, given each script on its standard input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftCommand {
    argv: Vec<OsString>,
}

impl NftCommand {
    /// `/usr/sbin/nft`, else `nft` from `PATH`.
    pub fn system() -> Self {
        let installed = Path::new("/usr/sbin/nft");
        let program =
            if installed.exists() { installed.as_os_str().to_owned() } else { OsString::from("nft") };
        NftCommand { argv: vec![program] }
    }

    /// A command line ending in the nft program, such as `ip netns exec NS nft`; `-f -` is
    /// added after it.
    pub fn new<I: IntoIterator<Item = S>, S: Into<OsString>>(argv: I) -> Self {
        NftCommand { argv: argv.into_iter().map(Into::into).collect() }
    }
}

impl Nft for NftCommand {
    fn run(&mut self, commands: &[Command<'_>]) -> Result<usize, NftError> {
        let script = render(commands);
        let script = script.as_str();
        let program = self.argv.first().cloned().unwrap_or_else(|| OsString::from("nft"));
        let spawn_error =
            |source| NftError::Spawn { program: program.to_string_lossy().into_owned(), source };
        let mut child = Process::new(&program)
            .args(self.argv.iter().skip(1))
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let stdin = child.stdin.take();
        // Fed from another thread: nft may write errors while reading, and a full stderr pipe
        // would then stop both sides.
        let output = std::thread::scope(|scope| {
            scope.spawn(move || {
                if let Some(mut stdin) = stdin {
                    // nft stops reading when it fails early; its status says why.
                    let _ = stdin.write_all(script.as_bytes());
                }
            });
            child.wait_with_output()
        })
        .map_err(spawn_error)?;
        if output.status.success() {
            return Ok(script.len());
        }
        Err(NftError::Refused {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim_end().to_owned(),
        })
    }
}

/// How a sync reached the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncKind {
    /// Nothing had changed: nothing was sent.
    #[default]
    Unchanged,
    /// Only the differences from the last ruleset applied.
    Diff,
    /// The tables made anew: the first sync, or after a failed cold start or resync.
    Cold,
    /// Every chain and map rewritten in one transaction: after a failure, or to repair.
    Resync,
}

/// What one sync sent, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// How.
    pub kind: SyncKind,
    /// Transactions run.
    pub transactions: usize,
    /// Chains created, rewritten or deleted.
    pub chains: usize,
    /// Set and map elements added or deleted.
    pub elements: usize,
    /// Bytes written: netlink messages, or the script given to nft.
    pub bytes: usize,
}

/// Keeps the kernel's Portico tables equal to the latest ruleset.
pub struct Applier<N> {
    nft: N,
    options: DiffOptions,
    /// What the kernel holds, as far as Portico knows: `None` before the first sync and after
    /// a transaction that may have left it half done.
    kernel: Option<Ruleset>,
    /// A ruleset asked for but not applied, when the last transaction failed.
    wanted: Option<Ruleset>,
}

impl<N: Nft> Applier<N> {
    /// An applier that knows nothing of the kernel yet: its first sync is a cold start.
    pub fn new(nft: N, options: DiffOptions) -> Self {
        Applier { nft, options, kernel: None, wanted: None }
    }

    /// The runner, for tests that look at what it was given.
    pub fn nft(&self) -> &N {
        &self.nft
    }

    /// The runner, for tests that make it fail.
    pub fn nft_mut(&mut self) -> &mut N {
        &mut self.nft
    }

    /// Puts `desired` in the kernel: the differences from the last ruleset applied, a full
    /// resync after a failed transaction, a cold start the first time.
    pub fn sync(&mut self, desired: Ruleset) -> Result<SyncReport, NftError> {
        self.apply(desired, self.next_kind())
    }

    /// How the next [`Applier::sync`] reaches the kernel: a cold start when nothing is known
    /// of it, a full resync after a refused transaction, else the differences.
    pub fn next_kind(&self) -> SyncKind {
        match (&self.kernel, &self.wanted) {
            (None, _) => SyncKind::Cold,
            (Some(_), None) => SyncKind::Diff,
            (Some(_), Some(_)) => SyncKind::Resync,
        }
    }

    /// What the kernel holds, as far as Portico knows, when the last transaction went through:
    /// what a sync by parts starts from.
    pub fn kernel(&self) -> Option<&Ruleset> {
        self.kernel.as_ref().filter(|_| self.wanted.is_none())
    }

    /// Replaces the part `old` of what the kernel holds with `new`, sending only their
    /// difference: for a few Services changed among many, where comparing whole rulesets
    /// would cost more than the change. Only when [`Applier::kernel`] is known; after a
    /// refusal the next [`Applier::sync`] rewrites everything.
    pub fn sync_parts(&mut self, old: &Ruleset, new: Ruleset) -> Result<SyncReport, NftError> {
        let Some(kernel) = self.kernel.as_mut().filter(|_| self.wanted.is_none()) else {
            return Err(NftError::Unknown);
        };
        let update = diff::diff(Some(old), &new, &self.options);
        let result = run(&mut self.nft, &update, SyncKind::Diff);
        drop(update);
        match &result {
            Ok(_) => kernel.replace_part(old, new),
            Err(_) => {
                let mut wanted = kernel.clone();
                wanted.replace_part(old, new);
                self.wanted = Some(wanted);
            }
        }
        result
    }

    /// Rewrites everything of the latest ruleset, repairing rules changed or deleted by hand.
    pub fn repair(&mut self) -> Result<SyncReport, NftError> {
        if let Some(wanted) = self.wanted.take() {
            let kind = if self.kernel.is_some() { SyncKind::Resync } else { SyncKind::Cold };
            return self.apply(wanted, kind);
        }
        let Some(kernel) = &self.kernel else { return Ok(SyncReport::default()) };
        let result = run(&mut self.nft, &diff::resync(Some(kernel), kernel), SyncKind::Resync);
        if result.is_err() {
            self.wanted = self.kernel.take();
        }
        result
    }

    fn apply(&mut self, desired: Ruleset, kind: SyncKind) -> Result<SyncReport, NftError> {
        let update = match kind {
            SyncKind::Resync => diff::resync(self.kernel.as_ref(), &desired),
            SyncKind::Diff => diff::diff(self.kernel.as_ref(), &desired, &self.options),
            SyncKind::Cold | SyncKind::Unchanged => diff::diff(None, &desired, &self.options),
        };
        let result = run(&mut self.nft, &update, kind);
        drop(update);
        match &result {
            Ok(_) => {
                self.kernel = Some(desired);
                self.wanted = None;
            }
            Err(_) => {
                // A failed diff left the kernel as it was; anything bigger may have left it
                // half done.
                if kind != SyncKind::Diff {
                    self.kernel = None;
                }
                self.wanted = Some(desired);
            }
        }
        result
    }
}

/// Runs the transactions of `update` in order, stopping at the first refused.
fn run<N: Nft>(nft: &mut N, update: &Update<'_>, kind: SyncKind) -> Result<SyncReport, NftError> {
    if update.is_empty() {
        return Ok(SyncReport::default());
    }
    let transactions: Vec<&Vec<Command<'_>>> = update.transactions.iter().filter(|t| !t.is_empty()).collect();
    let mut report = SyncReport {
        kind,
        transactions: transactions.len(),
        chains: update.chains,
        elements: update.elements,
        bytes: 0,
    };
    for (i, commands) in transactions.iter().enumerate() {
        match nft.run(commands) {
            Ok(bytes) => report.bytes += bytes,
            Err(error) => {
                tracing::warn!(transaction = i + 1, of = transactions.len(), %error, "nftables transaction refused");
                return Err(error);
            }
        }
    }
    tracing::debug!(?report.kind, report.chains, report.elements, report.bytes, "nftables synced");
    Ok(report)
}
