//! The mesh's CA, kept in a folder in the layout of Istio's `cacerts` Secret, so that a CA a
//! user plugs into Istio today plugs into Portico as it is: `ca-cert.pem` and `ca-key.pem`
//! (the CA that issues workload certificates), `cert-chain.pem` (it and what leads to the
//! root), `root-cert.pem` (what every proxy trusts). A folder with only `root-cert.pem` and
//! `root-key.pem` is a user's own root: an intermediate is made under it. An empty folder gets
//! a root and an intermediate of Portico's own.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use portico_tls::{Ca, CaPem, Validity};

/// The CA that issues workload certificates.
pub const CA_CERT: &str = "ca-cert.pem";
/// Its key.
pub const CA_KEY: &str = "ca-key.pem";
/// It and the certificates up to the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The root every proxy trusts.
pub const ROOT_CERT: &str = "root-cert.pem";
/// The root's key, when the root is kept here.
pub const ROOT_KEY: &str = "root-key.pem";

/// A CA's files: name and PEM text.
pub type Files = Vec<(&'static str, String)>;

/// How long a root made here is good for (as Istio's self-signed root).
const ROOT_LIFE: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long an intermediate made here is good for.
const INTERMEDIATE_LIFE: Duration = Duration::from_secs(5 * 365 * 86_400);

/// Why the CA folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The files are there but do not make a CA.
    #[error("the mesh CA in {}: {why}", dir.display())]
    Invalid {
        /// The folder.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Where the CA came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The user's own CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`).
    Plugged,
    /// An intermediate made here under the user's root (`root-cert.pem`, `root-key.pem`).
    UserRoot,
    /// A root and an intermediate made here, now or on an earlier start.
    Own,
}

/// The CA that issues workload certificates, and where it came from.
#[derive(Debug)]
pub struct Authority {
    /// The issuing CA.
    pub ca: Ca,
    /// Where it came from.
    pub origin: Origin,
}

/// The CA kept in `dir`: read, or made and written there (the folder is created).
pub fn load_or_create(dir: &Path) -> Result<Authority, AuthorityError> {
    let invalid = |why: String| AuthorityError::Invalid { dir: dir.to_owned(), why };
    let has = |name: &str| dir.join(name).is_file();
    if has(CA_CERT) || has(CA_KEY) {
        let missing: Vec<&str> = [CA_CERT, CA_KEY, ROOT_CERT].into_iter().filter(|n| !has(n)).collect();
        if !missing.is_empty() {
            return Err(invalid(format!("{} missing beside {CA_CERT}", missing.join(" and "))));
        }
        let certificate = read(dir, CA_CERT)?;
        let root = read(dir, ROOT_CERT)?;
        let chain = match has(CERT_CHAIN) {
            true => between(&read(dir, CERT_CHAIN)?, &certificate, &root),
            false => String::new(),
        };
        let pem = CaPem { certificate, key: read(dir, CA_KEY)?, chain, root };
        let ca = Ca::from_pem(&pem).map_err(|e| invalid(e.to_string()))?;
        let origin = if has(ROOT_KEY) { Origin::Own } else { Origin::Plugged };
        return Ok(Authority { ca, origin });
    }
    let (root, origin) = match (has(ROOT_CERT), has(ROOT_KEY)) {
        (true, true) => {
            let pem = CaPem {
                certificate: read(dir, ROOT_CERT)?,
                key: read(dir, ROOT_KEY)?,
                chain: String::new(),
                root: read(dir, ROOT_CERT)?,
            };
            (Ca::from_pem(&pem).map_err(|e| invalid(e.to_string()))?, Origin::UserRoot)
        }
        (true, false) => {
            return Err(invalid(format!(
                "{ROOT_CERT} without {ROOT_KEY}: give the root's key (an intermediate is made under it) or a CA of yours ({CA_CERT}, {CA_KEY})"
            )));
        }
        (false, true) => return Err(invalid(format!("{ROOT_KEY} without {ROOT_CERT}"))),
        (false, false) => {
            let root = Ca::root("Portico mesh root", Validity::starting(SystemTime::now(), ROOT_LIFE))
                .map_err(|e| invalid(e.to_string()))?;
            (root, Origin::Own)
        }
    };
    let (ca, files) = intermediate(&root, origin == Origin::Own).map_err(invalid)?;
    std::fs::create_dir_all(dir).map_err(|source| AuthorityError::Io { path: dir.to_owned(), source })?;
    for (name, text) in &files {
        write(dir, name, text)?;
    }
    Ok(Authority { ca, origin })
}

/// An intermediate made under `root`, and the files that keep them (the root's key too when
/// `with_root_key`), `ca-cert.pem` last: its presence says the folder holds a whole CA.
fn intermediate(root: &Ca, with_root_key: bool) -> Result<(Ca, Files), String> {
    let now = SystemTime::now();
    let ca = root
        .intermediate("Portico mesh intermediate", Validity::starting(now, INTERMEDIATE_LIFE))
        .map_err(|e| e.to_string())?;
    let (root_pem, ca_pem) = (root.to_pem(), ca.to_pem());
    let mut files = Vec::new();
    if with_root_key {
        files.push((ROOT_KEY, root_pem.key));
        files.push((ROOT_CERT, root_pem.certificate));
    }
    files.push((CA_KEY, ca_pem.key.clone()));
    files.push((CERT_CHAIN, format!("{}{}{}", ca_pem.certificate, ca_pem.chain, ca_pem.root)));
    files.push((CA_CERT, ca_pem.certificate));
    Ok((ca, files))
}

/// The files of a new CA of Portico's own (a root and an intermediate), by name: what a
/// cluster keeps in a Secret for every node agent to share.
pub fn new_files() -> Result<Files, String> {
    let root = Ca::root("Portico mesh root", Validity::starting(SystemTime::now(), ROOT_LIFE))
        .map_err(|e| e.to_string())?;
    intermediate(&root, true).map(|(_, files)| files)
}

/// Puts the CA `files` (name → contents, as a Secret holds them) in `dir`, each written whole
/// and owner-only, and removes the CA files they do not name, so that the folder holds what
/// the Secret holds and nothing of an earlier CA; other names are refused.
pub fn store(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), AuthorityError> {
    const NAMES: [&str; 5] = [ROOT_KEY, ROOT_CERT, CA_KEY, CERT_CHAIN, CA_CERT];
    let invalid = |why: String| AuthorityError::Invalid { dir: dir.to_owned(), why };
    if let Some((name, _)) = files.iter().find(|(name, _)| !NAMES.contains(&name.as_str())) {
        return Err(invalid(format!("{name:?} is not a file of a CA ({})", NAMES.join(", "))));
    }
    std::fs::create_dir_all(dir).map_err(|source| AuthorityError::Io { path: dir.to_owned(), source })?;
    // `ca-cert.pem` goes first when it goes, last when it comes, as `load_or_create` reads it.
    for name in NAMES.iter().rev().filter(|n| !files.iter().any(|(f, _)| f == *n)) {
        match std::fs::remove_file(dir.join(name)) {
            Err(source) if source.kind() != io::ErrorKind::NotFound => {
                return Err(AuthorityError::Io { path: dir.join(name), source });
            }
            _ => {}
        }
    }
    for name in NAMES {
        if let Some((_, bytes)) = files.iter().find(|(f, _)| f == name) {
            let text =
                String::from_utf8(bytes.clone()).map_err(|_| invalid(format!("{name} is not PEM text")))?;
            write(dir, name, &text)?;
        }
    }
    Ok(())
}

/// The certificates of `chain` that lie between `certificate` and `root`: Istio's
/// `cert-chain.pem` holds the CA's own certificate and the root as well.
fn between(chain: &str, certificate: &str, root: &str) -> String {
    let blocks = |text: &str| -> Vec<String> {
        text.split_inclusive("-----END CERTIFICATE-----")
            .map(|b| b.trim().to_owned())
            .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
            .collect()
    };
    let ends: Vec<String> = blocks(certificate).into_iter().chain(blocks(root)).collect();
    blocks(chain).into_iter().filter(|b| !ends.contains(b)).map(|b| format!("{b}\n")).collect()
}

fn read(dir: &Path, name: &str) -> Result<String, AuthorityError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| AuthorityError::Io { path, source })
}

/// Writes `name` whole or not at all, readable by its owner only (it may be a key).
fn write(dir: &Path, name: &str, text: &str) -> Result<(), AuthorityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let partial = dir.join(format!(".{name}.partial"));
    let io = |source| AuthorityError::Io { path: path.clone(), source };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use portico_tls::Name;
    use rustls::pki_types::UnixTime;

    use super::*;

    fn leaf_verifies_under(authority: &Authority, root: &Ca) {
        let leaf = authority.ca.issue(&[Name::Uri("spiffe://cluster.local/ns/a/sa/b".into())]).unwrap();
        root.verify(&leaf.chain, UnixTime::now()).unwrap();
    }

    #[test]
    fn an_empty_folder_gets_a_ca_that_is_the_same_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh-ca");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.origin, Origin::Own);
        for name in [CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, ROOT_KEY] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let again = load_or_create(&path).unwrap();
        assert_eq!(again.ca.certificate(), first.ca.certificate());
        assert_eq!(again.ca.root_certificate(), first.ca.root_certificate());
        assert_eq!(again.origin, Origin::Own);
    }

    #[test]
    fn a_shared_ca_stored_in_a_folder_replaces_the_one_there_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let own = load_or_create(dir.path()).unwrap();
        let shared: Vec<(String, Vec<u8>)> =
            new_files().unwrap().into_iter().map(|(n, t)| (n.to_owned(), t.into_bytes())).collect();
        // As a plugged-in Secret: no root key.
        let plugged: Vec<(String, Vec<u8>)> = shared.iter().filter(|(n, _)| n != ROOT_KEY).cloned().collect();
        store(dir.path(), &plugged).unwrap();
        assert!(!dir.path().join(ROOT_KEY).exists(), "the earlier CA's root key is gone");
        let loaded = load_or_create(dir.path()).unwrap();
        assert_eq!(loaded.origin, Origin::Plugged);
        assert_ne!(loaded.ca.root_certificate(), own.ca.root_certificate());
        let root = shared.iter().find(|(n, _)| n == ROOT_CERT).unwrap();
        assert_eq!(std::fs::read(dir.path().join(ROOT_CERT)).unwrap(), root.1);
        let odd = store(dir.path(), &[("tls.crt".to_owned(), Vec::new())]).unwrap_err().to_string();
        assert!(odd.contains("tls.crt"), "{odd}");
    }

    #[test]
    fn a_user_root_gets_an_intermediate_and_an_istio_cacerts_folder_is_used_as_it_is() {
        let now = SystemTime::now();
        let root = Ca::root("corp root", Validity::starting(now, Duration::from_secs(86_400))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ROOT_CERT), root.to_pem().certificate).unwrap();
        std::fs::write(dir.path().join(ROOT_KEY), root.to_pem().key).unwrap();
        let made = load_or_create(dir.path()).unwrap();
        assert_eq!(made.origin, Origin::UserRoot);
        leaf_verifies_under(&made, &root);
        assert_eq!(std::fs::read_to_string(dir.path().join(ROOT_CERT)).unwrap(), root.to_pem().certificate);

        // Istio's layout: an intermediate under an intermediate, cert-chain.pem holding all.
        let middle =
            root.intermediate("corp middle", Validity::starting(now, Duration::from_secs(3600))).unwrap();
        let plugged = tempfile::tempdir().unwrap();
        let (m, r) = (middle.to_pem(), root.to_pem());
        std::fs::write(plugged.path().join(CA_CERT), &m.certificate).unwrap();
        std::fs::write(plugged.path().join(CA_KEY), &m.key).unwrap();
        std::fs::write(plugged.path().join(ROOT_CERT), &r.certificate).unwrap();
        std::fs::write(plugged.path().join(CERT_CHAIN), format!("{}{}", m.certificate, r.certificate))
            .unwrap();
        let used = load_or_create(plugged.path()).unwrap();
        assert_eq!(used.origin, Origin::Plugged);
        assert_eq!(used.ca.certificate(), middle.certificate());
        leaf_verifies_under(&used, &root);
    }

    #[test]
    fn incomplete_or_mismatched_folders_are_refused_by_name() {
        let now = SystemTime::now();
        let root = Ca::root("root", Validity::starting(now, Duration::from_secs(86_400))).unwrap();
        let other = Ca::root("other", Validity::starting(now, Duration::from_secs(86_400))).unwrap();
        let cases: [(&[(&str, String)], &str); 4] = [
            (&[(ROOT_CERT, root.to_pem().certificate)], "without root-key.pem"),
            (&[(ROOT_KEY, root.to_pem().key)], "root-key.pem without root-cert.pem"),
            (&[(CA_CERT, root.to_pem().certificate)], "ca-key.pem and root-cert.pem missing"),
            (
                &[
                    (CA_CERT, root.to_pem().certificate),
                    (CA_KEY, other.to_pem().key),
                    (ROOT_CERT, root.to_pem().certificate),
                ],
                "does not verify",
            ),
        ];
        for (files, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in files {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            let error = load_or_create(dir.path()).unwrap_err().to_string();
            assert!(error.contains(expected) && error.contains("the mesh CA in"), "{expected}: {error}");
        }
    }
}
