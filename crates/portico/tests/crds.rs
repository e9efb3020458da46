//! `deploy/crds` against the code: rendered by `kubectl kustomize` (skipped, saying so, without
//! kubectl), it defines every custom resource the API source watches, at the versions the model
//! reads, and each schema declares every field the model reads. The API server prunes what a
//! structural schema does not declare, so a field missing there would reach Portico as if
//! nobody had written it: the maximal model object of each kind is walked against the schema.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use portico_model::{authz, metallb};
use portico_source::cluster::RESOURCES;
use serde::Serialize;
use serde::de::value::Error;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Value, json};

/// The groups whose kinds a cluster gets from `deploy/crds` rather than from Kubernetes.
const CUSTOM_GROUPS: [&str; 2] = ["metallb.io", "security.istio.io"];

/// The rendered CRDs, or `None` without kubectl.
fn rendered() -> Option<Vec<Value>> {
    portico_testkit::kustomize::rendered(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
}

/// The one CRD defining `kind`.
fn crd<'a>(crds: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = crds.iter().filter(|c| c["spec"]["names"]["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one CRD for {kind}");
    found[0]
}

/// The CRD's versions that the API server serves.
fn served(crd: &Value) -> Vec<&Value> {
    crd["spec"]["versions"].as_array().unwrap().iter().filter(|v| v["served"] == true).collect()
}

/// The API source's watches of custom resources find their CRDs, at the versions it asks for.
#[test]
fn every_custom_resource_the_api_source_watches_has_a_crd_serving_its_version() {
    let Some(crds) = rendered() else { return };
    let custom: Vec<_> = RESOURCES.iter().filter(|(_, group, ..)| CUSTOM_GROUPS.contains(group)).collect();
    assert!(!custom.is_empty());
    for (kind, group, version, plural) in &custom {
        let crd = crd(&crds, kind.name());
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        // The API server refuses a CRD whose name is not `<plural>.<group>`.
        assert_eq!(crd["metadata"]["name"], format!("{plural}.{group}"));
        assert_eq!(crd["spec"]["group"], *group, "{kind:?}");
        assert_eq!(crd["spec"]["names"]["plural"], *plural, "{kind:?}");
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{kind:?}");
        assert!(served(crd).iter().any(|v| v["name"] == *version), "{kind:?} served at {version}");
        let stored = crd["spec"]["versions"].as_array().unwrap().iter().filter(|v| v["storage"] == true);
        assert_eq!(stored.count(), 1, "{kind:?}: the API server stores exactly one version");
    }
    // Files read in folder mode name these versions too; each must apply to a cluster as well.
    let read_at = [
        ("IPAddressPool", vec![metallb::API_VERSION]),
        ("L2Advertisement", vec![metallb::API_VERSION]),
        ("AuthorizationPolicy", authz::API_VERSIONS.to_vec()),
    ];
    for (kind, api_versions) in read_at {
        let crd = crd(&crds, kind);
        for api_version in api_versions {
            let (group, version) = api_version.split_once('/').unwrap();
            assert_eq!(crd["spec"]["group"], group, "{kind}");
            assert!(served(crd).iter().any(|v| v["name"] == version), "{kind} served at {api_version}");
        }
    }
    for crd in &crds {
        let names = &crd["spec"]["names"];
        let watched = custom.iter().any(|(kind, group, _, plural)| {
            crd["spec"]["group"] == *group && names["kind"] == kind.name() && names["plural"] == *plural
        });
        assert!(watched, "a CRD for something the API source watches: {}", crd["metadata"]["name"]);
    }
}

/// No field the model reads is pruned by the API server.
#[test]
fn every_field_the_model_reads_is_declared_in_the_schema() {
    let Some(crds) = rendered() else { return };
    declares_everything::<metallb::IpAddressPool>(&crds, "IPAddressPool", ip_address_pool());
    declares_everything::<metallb::L2Advertisement>(&crds, "L2Advertisement", l2_advertisement());
    declares_everything::<authz::AuthorizationPolicy>(&crds, "AuthorizationPolicy", authorization_policy());
}

/// The API server would accept the schemas, and `kubectl get` shows fields that exist.
#[test]
fn the_schemas_are_structural_and_the_columns_show_declared_fields() {
    let Some(crds) = rendered() else { return };
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let versions = served(crd);
        for version in &versions {
            let (at, schema) = (version["name"].as_str().unwrap(), &version["schema"]["openAPIV3Schema"]);
            let mut faults = Vec::new();
            structural(schema, "", &mut faults);
            assert!(faults.is_empty(), "{name} {at}: not structural:\n{}", faults.join("\n"));
            for column in version["additionalPrinterColumns"].as_array().into_iter().flatten() {
                let path = column["jsonPath"].as_str().unwrap();
                assert!(
                    path.starts_with(".metadata.") || declared(schema, path),
                    "{name} {at}: column {} shows {path}, which the schema does not declare",
                    column["name"]
                );
            }
        }
        // Objects are stored at one version and read at any: with different schemas a field
        // could be written at one version and pruned when read at another.
        for pair in versions.windows(2) {
            let differs = difference(&pair[0]["schema"], &pair[1]["schema"], "");
            assert_eq!(differs, None, "{name}: every served version, one schema");
        }
    }
}

/// Checks that the schema of every served version of `kind` declares every field of `literal`
/// (read as `T` and written back) and of `T`'s maximal object, and that `literal` sets every
/// field `T` has.
fn declares_everything<T: DeserializeOwned + Serialize>(crds: &[Value], kind: &str, literal: Value) {
    let read: T = serde_json::from_value(literal.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let written = serde_json::to_value(&read).unwrap();
    // A misspelt field would be dropped on reading and checked nowhere.
    assert_eq!(written, literal, "{kind}: the literal reads back as written");
    let maximal = serde_json::to_value(T::deserialize(Everything { skip: false }).unwrap()).unwrap();
    for version in served(crd(crds, kind)) {
        let (at, schema) = (version["name"].as_str().unwrap(), &version["schema"]["openAPIV3Schema"]);
        let (mut model_paths, mut literal_paths, mut faults) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
        walk_object(&maximal, schema, &mut model_paths, &mut faults);
        walk_object(&written, schema, &mut literal_paths, &mut faults);
        faults.sort();
        faults.dedup();
        assert!(faults.is_empty(), "{kind} {at}: the schema lacks\n{}", faults.join("\n"));
        let unset: Vec<&String> = model_paths.difference(&literal_paths).collect();
        assert!(unset.is_empty(), "{kind}: the literal leaves out {unset:?}");
    }
}

/// Walks an object's fields against its CRD's root schema; `apiVersion`, `kind` and
/// `metadata` are the API server's own, not the CRD's.
fn walk_object(object: &Value, schema: &Value, paths: &mut BTreeSet<String>, faults: &mut Vec<String>) {
    for (key, value) in object.as_object().unwrap() {
        if ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
            continue;
        }
        match schema["properties"].get(key) {
            Some(field) => walk(value, field, key, paths, faults),
            None => faults.push(format!("{key}: not declared")),
        }
    }
}

/// Walks `value` against `schema`, adding each path reached to `paths` (a map's keys as `*`,
/// a list's items as `[]`) and each field the schema does not declare, or declares with
/// another type, to `faults`.
fn walk(value: &Value, schema: &Value, path: &str, paths: &mut BTreeSet<String>, faults: &mut Vec<String>) {
    paths.insert(path.to_owned());
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none() {
        return;
    }
    let actual = match value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::Null => "null",
    };
    if schema["type"] != actual {
        faults.push(format!("{path}: {actual}, declared {}", schema["type"]));
        return;
    }
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (schema["properties"].get(key), schema.get("additionalProperties")) {
                    (Some(declared), _) => walk(field, declared, &format!("{path}.{key}"), paths, faults),
                    (None, Some(values)) => walk(field, values, &format!("{path}.*"), paths, faults),
                    (None, None) => faults.push(format!("{path}.{key}: not declared")),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, &schema["items"], &format!("{path}[]"), paths, faults);
            }
        }
        _ => {}
    }
}

/// Adds to `faults` what makes `schema` other than structural, as the API server reads the
/// rule: every node has a type, objects alone have fields, arrays have items.
fn structural(schema: &Value, path: &str, faults: &mut Vec<String>) {
    let free = schema["x-kubernetes-preserve-unknown-fields"] == true
        || schema["x-kubernetes-int-or-string"] == true;
    let kind = schema["type"].as_str();
    if kind.is_none() && !free {
        faults.push(format!("{path}: no type"));
    }
    if let Some(properties) = schema.get("properties") {
        if kind != Some("object") {
            faults.push(format!("{path}: properties on a {kind:?}"));
        }
        for (key, field) in properties.as_object().unwrap() {
            structural(field, &format!("{path}.{key}"), faults);
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            if properties.get(required.as_str().unwrap()).is_none() {
                faults.push(format!("{path}: requires {required}, which it does not declare"));
            }
        }
    }
    if let Some(values) = schema.get("additionalProperties") {
        if kind != Some("object") || schema.get("properties").is_some() {
            faults.push(format!("{path}: additionalProperties on a {kind:?} or beside properties"));
        }
        structural(values, &format!("{path}.*"), faults);
    }
    match (kind, schema.get("items")) {
        (Some("array"), Some(items)) => structural(items, &format!("{path}[]"), faults),
        (Some("array"), None) => faults.push(format!("{path}: an array without items")),
        (_, Some(_)) => faults.push(format!("{path}: items on a {kind:?}")),
        _ => {}
    }
}

/// The first path at which `a` and `b` differ, if any.
fn difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| match (a.get(key), b.get(key)) {
                (Some(x), Some(y)) => difference(x, y, &format!("{path}.{key}")),
                _ => Some(format!("{path}.{key}")),
            })
        }
        _ => (a != b).then(|| path.to_owned()),
    }
}

/// Whether a printer column's path (`.spec.autoAssign`) names a field `schema` declares.
fn declared(schema: &Value, path: &str) -> bool {
    let mut node = schema;
    for step in path.trim_start_matches('.').split('.') {
        match node["properties"].get(step) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// An `IPAddressPool` setting every field.
fn ip_address_pool() -> Value {
    let selector = json!({
        "matchLabels": {"team": "shop"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
    });
    json!({
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "lan", "namespace": "metallb-system"},
        "spec": {
            "addresses": ["198.18.1.0/24", "198.18.2.10-198.18.2.20"],
            "autoAssign": false,
            "avoidBuggyIPs": true,
            "serviceAllocation": {
                "priority": 10,
                "namespaces": ["shop"],
                "namespaceSelectors": [selector],
                "serviceSelectors": [selector]
            }
        },
        "status": {"assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 266, "availableIPv6": 0}
    })
}

/// An `L2Advertisement` setting every field.
fn l2_advertisement() -> Value {
    let selector = json!({
        "matchLabels": {"zone": "a"},
        "matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["r9"]}]
    });
    json!({
        "apiVersion": "metallb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "lan", "namespace": "metallb-system"},
        "spec": {
            "ipAddressPools": ["lan"],
            "ipAddressPoolSelectors": [selector],
            "nodeSelectors": [selector],
            "interfaces": ["eth0"]
        }
    })
}

/// An `AuthorizationPolicy` setting every field: not a policy Istio would accept (selector
/// and target references together), but every field the model reads.
fn authorization_policy() -> Value {
    let target =
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "namespace": "shop"});
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "targetRef": target,
            "targetRefs": [target],
            "rules": [{
                "from": [{"source": {
                    "principals": ["cluster.local/ns/shop/sa/front"],
                    "notPrincipals": ["cluster.local/ns/shop/sa/batch"],
                    "requestPrincipals": ["issuer/subject"],
                    "notRequestPrincipals": ["issuer/robot"],
                    "namespaces": ["shop"],
                    "notNamespaces": ["test"],
                    "serviceAccounts": ["shop/front"],
                    "notServiceAccounts": ["batch"],
                    "ipBlocks": ["198.18.0.0/16"],
                    "notIpBlocks": ["198.18.9.0/24"],
                    "remoteIpBlocks": ["203.0.113.0/24"],
                    "notRemoteIpBlocks": ["203.0.113.7"]
                }}],
                "to": [{"operation": {
                    "hosts": ["web.shop"],
                    "notHosts": ["admin.shop"],
                    "ports": ["8080"],
                    "notPorts": ["9090"],
                    "methods": ["GET"],
                    "notMethods": ["DELETE"],
                    "paths": ["/api/{*}/items/{**}"],
                    "notPaths": ["/admin*"]
                }}],
                "when": [{"key": "request.headers[x-user]", "values": ["alice"], "notValues": ["mallory"]}]
            }],
            "action": "CUSTOM",
            "provider": {"name": "opa"}
        },
        "status": {"conditions": [{"type": "Reconciled", "status": "True"}]}
    })
}

/// A deserializer giving every field, option, list and map of what it builds one value (lists
/// and maps one entry, enums their first variant), so that it builds the model's maximal
/// object: a field the model gains is walked without anyone adding it here. `skip` builds the
/// empty value instead, for `metadata`, whose timestamps would refuse made-up text and which
/// the API server, not the CRD, defines.
struct Everything {
    /// Build the empty value.
    skip: bool,
}

/// Forwards each of a deserializer's methods to another, which reads the same value wider.
macro_rules! forward {
    ($($method:ident => $to:ident),* $(,)?) => {
        $(
            /// As the method it forwards to.
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.$to(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Everything {
    type Error = Error;

    /// Only `serde_json::Value` (an `AuthorizationPolicy`'s status) asks for any value.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Fields::of(&[]))
    }

    /// `true`: not the default, so a field skipped when default is still written.
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(true)
    }

    /// One.
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(1)
    }

    /// One.
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(1)
    }

    /// One.
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(1.0)
    }

    /// Text that is not empty, so a field skipped when empty is still written.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("x")
    }

    /// As `deserialize_str`.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    /// Present, unless skipping.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.skip {
            true => visitor.visit_none(),
            false => visitor.visit_some(self),
        }
    }

    /// The wrapped value.
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// One item.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Items(usize::from(!self.skip)))
    }

    /// As many items as the tuple has.
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Items(len))
    }

    /// One entry.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Fields::of(if self.skip { &[] } else { &["k"] }))
    }

    /// Every field the struct reads, by the name it reads it under.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields::of(if self.skip { &[] } else { fields }))
    }

    /// The first variant: only unit variants (`Action`) are in the model.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(variants[0]))
    }

    /// Nothing.
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward! {
        deserialize_i8 => deserialize_i64, deserialize_i16 => deserialize_i64,
        deserialize_i32 => deserialize_i64, deserialize_u8 => deserialize_u64,
        deserialize_u16 => deserialize_u64, deserialize_u32 => deserialize_u64,
        deserialize_f32 => deserialize_f64, deserialize_char => deserialize_str,
        deserialize_identifier => deserialize_str, deserialize_ignored_any => deserialize_unit
    }

    // Bytes, unit structs and tuple structs are nowhere in the model.
    serde::forward_to_deserialize_any! { bytes byte_buf unit_struct tuple_struct }
}

/// The entries of a struct (its fields) or map (one key), each given a value in turn.
struct Fields {
    /// Keys not given yet.
    keys: std::slice::Iter<'static, &'static str>,
    /// The key last given, whose value comes next.
    current: &'static str,
}

impl Fields {
    /// The entries of `keys`.
    fn of(keys: &'static [&'static str]) -> Fields {
        Fields { keys: keys.iter(), current: "" }
    }
}

impl<'de> MapAccess<'de> for Fields {
    type Error = Error;

    /// The next key.
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(key) = self.keys.next() else { return Ok(None) };
        self.current = key;
        seed.deserialize(IntoDeserializer::<Error>::into_deserializer(*key)).map(Some)
    }

    /// The value of the key last given.
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Everything { skip: self.current == "metadata" })
    }
}

/// The items of a list or tuple: this many.
struct Items(usize);

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    /// The next item, while any are left.
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        if self.0 == 0 {
            return Ok(None);
        }
        self.0 -= 1;
        seed.deserialize(Everything { skip: false }).map(Some)
    }
}
