//! Who is older: conflicts between objects are settled in favour of the oldest, as the API
//! server would have accepted it first.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Items sorted oldest first by `metadata.creationTimestamp`; items without one count as
/// newest and keep their given (file) order among themselves.
pub fn by_age<'a, T: 'a>(items: impl IntoIterator<Item = &'a T>, meta: impl Fn(&T) -> &ObjectMeta) -> Vec<&'a T> {
    let mut items: Vec<&T> = items.into_iter().collect();
    items.sort_by(|a, b| {
        let (a, b) = (&meta(a).creation_timestamp, &meta(b).creation_timestamp);
        match (a, b) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
    items
}
