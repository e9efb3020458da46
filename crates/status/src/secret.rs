//! A Secret every replica shares, made once: read if it is there, else created from what the
//! first replica to ask makes — the API server takes one creation and refuses the others
//! (409), which then read the winner's. The mesh's CA is kept this way, so that every node
//! agent issues under the same root without anyone generating it by hand; a Secret the user
//! made (Istio's `cacerts` layout) is read as it is.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

/// Why the shared Secret cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The API server refused or did not answer.
    #[error("the Secret {namespace}/{name}: {source}")]
    Api {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// What should have been put in it could not be made.
    #[error("the Secret {namespace}/{name} could not be made: {why}")]
    Make {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        why: String,
    },
}

/// The data of the Secret `name` in `namespace`, by key: read, or created from `make` when
/// there is none (and read again when another replica created it first).
pub async fn shared_secret(
    client: Client,
    namespace: &str,
    name: &str,
    make: impl FnOnce() -> Result<Vec<(String, Vec<u8>)>, String>,
) -> Result<Vec<(String, Vec<u8>)>, SecretError> {
    let api = Api::<Secret>::namespaced(client, namespace);
    let failed = |source| SecretError::Api { namespace: namespace.to_owned(), name: name.to_owned(), source };
    if let Some(secret) = api.get_opt(name).await.map_err(failed)? {
        return Ok(data(secret));
    }
    let made = make().map_err(|why| SecretError::Make {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        why,
    })?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "portico".to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(made.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            tracing::info!(%namespace, %name, "created the shared Secret");
            Ok(data(created))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => api.get(name).await.map(data).map_err(failed),
        Err(source) => Err(failed(source)),
    }
}

fn data(secret: Secret) -> Vec<(String, Vec<u8>)> {
    secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}
