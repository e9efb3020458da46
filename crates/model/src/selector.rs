//! Label selectors (`matchLabels` and `matchExpressions`), as workloads use them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`; an unknown operator is an error.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expressions = true;
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        by_expressions &= match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("operator {other:?} is not In, NotIn, Exists or DoesNotExist")),
        };
    }
    Ok(by_labels && by_expressions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expression("tier", "In", &["a", "b"]),
                expression("canary", "DoesNotExist", &[]),
            ]),
        };
        assert_eq!(selector_matches(&selector, &labels(&[("app", "web"), ("tier", "a")])), Ok(true));
        assert_eq!(selector_matches(&selector, &labels(&[("app", "web"), ("tier", "c")])), Ok(false));
        assert_eq!(
            selector_matches(&selector, &labels(&[("app", "web"), ("tier", "a"), ("canary", "y")])),
            Ok(false)
        );
        let bad =
            LabelSelector { match_labels: None, match_expressions: Some(vec![expression("a", "Like", &[])]) };
        assert!(selector_matches(&bad, &labels(&[])).is_err());
    }
}
