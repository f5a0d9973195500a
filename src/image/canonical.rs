//! The one JSON writer for everything rbuild hashes.
//!
//! Manifests, indexes and configs are identified by the digest of their
//! bytes, so the same value must always serialise to the same bytes.
//! `oci-spec` keeps labels and annotations in hash maps whose order changes
//! from run to run; going through `serde_json::Value` (whose objects are
//! sorted maps in this build) sorts every object's keys, at every depth.

use serde::Serialize;

use crate::blob::Digest;

/// Serialises `value` with sorted keys and no insignificant white space.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let tree = serde_json::to_value(value)?;
    serde_json::to_vec(&tree)
}

/// Canonical bytes and their digest.
pub fn canonical_with_digest<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Digest), serde_json::Error> {
    let bytes = to_canonical_json(value)?;
    let digest = Digest::of(&bytes);
    Ok((bytes, digest))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn hash_maps_serialise_identically() {
        let mut outputs = std::collections::BTreeSet::new();
        for _ in 0..20 {
            // A fresh HashMap gets a fresh random seed, so a new order.
            let labels: HashMap<String, String> = (0..50)
                .map(|i| (format!("label{i}"), format!("v{i}")))
                .collect();
            let value = serde_json::json!({"z": 1, "config": {"Labels": labels}, "a": [3, 2, 1]});
            outputs.insert(to_canonical_json(&value).unwrap());
        }
        assert_eq!(outputs.len(), 1, "one byte string for one value");
        let text = String::from_utf8(outputs.into_iter().next().unwrap()).unwrap();
        assert!(text.starts_with("{\"a\":[3,2,1],\"config\":{\"Labels\":{\"label0\":\"v0\",\"label1\":\"v1\",\"label10\""));
    }
}
