//! Property test: Prefix matching is element-wise on '/', as the Ingress API defines it.
#![allow(clippy::unwrap_used)]

use portico_plan::ingress::{PathKind, path_matches};
use proptest::prelude::*;

/// The definition, written the slow, obvious way: compare path elements.
fn elementwise(rule: &str, request: &str) -> bool {
    let elements = |p: &str| p.split('/').filter(|e| !e.is_empty()).map(str::to_string).collect::<Vec<_>>();
    let (rule, request_elems) = (elements(rule), elements(request));
    // A request with an empty element ("//") in the middle is not a prefix match target.
    if request.trim_end_matches('/').contains("//") {
        return rule.is_empty();
    }
    request_elems.len() >= rule.len() && request_elems[..rule.len()] == rule[..]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a"), Just("aa"), Just("b"), Just("ab")], 0..4)
        .prop_flat_map(|parts| (Just(parts), any::<bool>()))
        .prop_map(|(parts, trailing)| {
            let mut p = format!("/{}", parts.join("/"));
            if trailing && p != "/" {
                p.push('/');
            }
            p
        })
}

proptest! {
    #[test]
    fn prefix_is_elementwise(rule in path(), request in path()) {
        prop_assert_eq!(path_matches(PathKind::Prefix, &rule, &request), elementwise(&rule, &request), "rule {} request {}", rule, request);
    }

    #[test]
    fn exact_is_string_equality(rule in path(), request in path()) {
        prop_assert_eq!(path_matches(PathKind::Exact, &rule, &request), rule == request);
    }
}
