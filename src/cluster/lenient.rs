//! [`Lenient`]: an object of a LIST or WATCH response that decodes whatever it holds, so that
//! one bad item cannot fail the whole response.
//!
//! kube-client decodes a LIST body as one `ObjectList<K>`: a single item that does not decode
//! fails all of it, and kube's own `DeserializeGuard` only helps while the item's `metadata`
//! decodes (a non-string `metadata.name` fails the list again). `Lenient` first reads the item
//! as a JSON value, which always succeeds for valid JSON, then decodes `K` from it; when that
//! fails it keeps the error and whatever metadata fields are strings. The watcher (`watch`)
//! passes both on; its callers skip and count the invalid ones.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An object that decoded as `K`, or the reason it did not with what could be read of its
/// metadata.
#[derive(Clone, Debug)]
pub struct Lenient<K>(pub Result<K, Invalid>);

/// An item that did not decode.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{error}")]
pub struct Invalid {
    /// The decoder's message (it names the field, never the object's content).
    pub error: String,
    /// The metadata fields that were strings; `name` may be missing.
    pub metadata: ObjectMeta,
}

impl<'de, K> Deserialize<'de> for Lenient<K>
where
    K: serde::de::DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Lenient(K::deserialize(&value).map_err(|e| Invalid {
            error: e.to_string(),
            metadata: loose_metadata(&value),
        })))
    }
}

/// The string fields of `metadata` that identify an object; anything else is left out.
fn loose_metadata(object: &Value) -> ObjectMeta {
    let meta = object.get("metadata");
    let text = |field: &str| {
        meta.and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    ObjectMeta {
        name: text("name"),
        namespace: text("namespace"),
        uid: text("uid"),
        resource_version: text("resourceVersion"),
        ..ObjectMeta::default()
    }
}

impl<K: kube::Resource> kube::Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(k) => k.meta(),
            Err(invalid) => &invalid.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(k) => k.meta_mut(),
            Err(invalid) => &mut invalid.metadata,
        }
    }
}

impl<K: kube::Resource> Lenient<K> {
    /// Namespace (`""` when cluster-scoped) and name, when the name could be read.
    pub fn key(&self) -> Option<(String, String)> {
        let meta = kube::Resource::meta(self);
        Some((
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use kube::api::DynamicObject;
    use kube::core::ObjectList;
    use serde_json::json;

    use super::*;

    #[test]
    fn one_item_with_undecodable_metadata_does_not_fail_the_list() {
        let body = json!({
            "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "7"},
            "items": [
                {"metadata": {"name": "good", "namespace": "apps"}},
                {"metadata": {"name": 42, "namespace": "apps", "uid": "u-2"}},
                {"metadata": {"name": "also-good", "labels": "not a map"}},
            ]
        });
        let list: ObjectList<Lenient<DynamicObject>> =
            serde_json::from_value(body).expect("the list decodes");
        assert_eq!(list.items.len(), 3);
        let good = list.items[0].0.as_ref().expect("first item decodes");
        assert_eq!(good.metadata.name.as_deref(), Some("good"));

        let bad = list.items[1].0.as_ref().expect_err("second item does not");
        assert!(bad.error.contains("invalid type"), "{}", bad.error);
        assert_eq!(bad.metadata.name, None, "a non-string name is left out");
        assert_eq!(bad.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(bad.metadata.uid.as_deref(), Some("u-2"));
        assert_eq!(list.items[1].key(), None);

        assert!(list.items[2].0.is_err(), "labels must be a map");
        assert_eq!(
            list.items[2].key(),
            Some((String::new(), "also-good".to_string()))
        );
    }
}
