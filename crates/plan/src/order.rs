//! Who is older: conflicts between objects are settled in favour of the oldest, as the API
//! server would have accepted it first.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portico_model::Stored;

/// Objects sorted oldest first by `metadata.creationTimestamp`; objects without one count as
/// newest and keep manifest order (file, then document) among themselves.
pub fn by_age<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a Stored<T>>,
    created: impl Fn(&T) -> Option<&Time>,
) -> Vec<&'a Stored<T>> {
    let mut items: Vec<&Stored<T>> = items.into_iter().collect();
    items.sort_by(|a, b| {
        let by_time = match (created(&a.object), created(&b.object)) {
            (Some(x), Some(y)) => x.0.cmp(&y.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_time.then_with(|| a.origin.cmp(&b.origin))
    });
    items
}
