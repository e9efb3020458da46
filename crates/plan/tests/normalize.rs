//! Properties of request path normalisation: whatever a client sends, the router sees one
//! normal form, and no spelling of a path reaches further than its plain form.
#![allow(clippy::unwrap_used)]

use portico_plan::routes::normalize::normalize_path;
use proptest::prelude::*;

/// Path segments from a small alphabet, with the characters and escapes attacks use.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,4}",
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(String::new()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("%61".to_owned()),
        Just("a%20b".to_owned()),
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..8).prop_map(|s| format!("/{}", s.join("/")))
}

/// The plain form: the segments resolved by hand, the way a reader of the path would.
fn resolve(raw: &str) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    let decoded = raw.replace("%2e", ".").replace("%2E", ".").replace("%61", "a").replace("%2f", "%2F");
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    for s in &segments {
        match *s {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s.to_owned()),
        }
    }
    let trailing = !out.is_empty() && matches!(segments.last(), Some(&"" | &"." | &".."));
    let mut path = format!("/{}", out.join("/"));
    if trailing {
        path.push('/');
    }
    Some(path)
}

proptest! {
    #[test]
    fn normal_forms_are_clean_idempotent_and_match_the_plain_reading(raw in raw_path()) {
        match normalize_path(&raw) {
            Ok(path) => {
                prop_assert!(path.starts_with('/'));
                prop_assert!(!path.contains("//"), "{} -> {}", raw, path);
                for segment in path.split('/') {
                    prop_assert!(segment != "." && segment != "..", "{} -> {}", raw, path);
                }
                prop_assert!(!path.to_ascii_lowercase().contains("%2e"), "{} -> {}", raw, path);
                let again = normalize_path(&path).unwrap().into_owned();
                prop_assert_eq!(&again, &*path, "idempotent");
                prop_assert_eq!(Some(path.into_owned()), resolve(&raw), "{}", raw);
            }
            Err(_) => prop_assert_eq!(resolve(&raw), None, "only paths above the root are refused: {}", raw),
        }
    }

    #[test]
    fn any_printable_path_gives_an_error_or_a_stable_normal_form(raw in "/[!-~]{0,40}") {
        if let Ok(path) = normalize_path(&raw) {
            prop_assert!(path.starts_with('/') && !path.contains("//"), "{} -> {}", raw, path);
            prop_assert_eq!(normalize_path(&path).unwrap().into_owned(), path.into_owned());
        }
    }
}
