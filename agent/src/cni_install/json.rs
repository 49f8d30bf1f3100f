//! JSON that keeps its object keys in the file's order.
//!
//! `serde_json::Value` sorts object keys unless serde_json's
//! `preserve_order` feature is on, and turning that on would reorder the
//! JSON every other crate of the workspace prints (features are unified
//! across a build). The primary CNI's config is someone else's file: we
//! rewrite it with its keys where they were.

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap, SerializeSeq},
};

/// A JSON value; objects keep their keys in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Object),
}

/// A JSON object, keys in order. A key given twice keeps its first place
/// and its last value, which is what Go's `encoding/json` (so libcni, so
/// the container runtime) reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object(Vec<(String, Json)>);

// === impl Json ===

impl Json {
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn string(s: impl Into<String>) -> Json {
        Json::String(s.into())
    }

    /// Pretty-printed (two-space indent), with a final newline.
    pub fn to_pretty(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a JSON tree serialises");
        out.push(b'\n');
        out
    }
}

// === impl Object ===

impl Object {
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`: in its place if present, else at the end.
    pub fn insert(&mut self, key: impl Into<String>, value: Json) {
        let key = key.into();
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Json> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl FromIterator<(String, Json)> for Object {
    fn from_iter<I: IntoIterator<Item = (String, Json)>>(items: I) -> Self {
        let mut object = Object::default();
        for (key, value) in items {
            object.insert(key, value);
        }
        object
    }
}

// === impl Serialize, Deserialize ===

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(text) => s.serialize_str(text),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(object) => {
                let mut map = s.serialize_map(Some(object.0.len()))?;
                for (key, value) in &object.0 {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = Object::default();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_through_a_round_trip() {
        let text = r#"{"zeta":1,"alpha":{"z":[1,2.5,"x",null,true],"a":{}},"mid":-3}"#;
        let json: Json = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), text);
        let keys: Vec<&str> = json.as_object().unwrap().iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["zeta", "alpha", "mid"]);
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/cni.rs`): without serde_json's
    /// `float_roundtrip` a long number was read 1 ulp off the value Go reads,
    /// and written back as that other value.
    #[test]
    fn numbers_keep_their_value_through_a_rewrite() {
        for text in [
            &"5".repeat(79),
            "0.1",
            "1e308",
            "2.2250738585072014e-308",
            "123456789012345678901234567890",
        ] {
            let json: Json = serde_json::from_str(text).unwrap();
            let Json::Number(number) = &json else {
                panic!("{text} is not a number: {json:?}");
            };
            // Rust's own parse is correctly rounded, as Go's strconv is.
            assert_eq!(
                number.as_f64(),
                Some(text.parse::<f64>().unwrap()),
                "{text}"
            );
            let written = json.to_pretty();
            assert_eq!(
                serde_json::from_slice::<Json>(&written).unwrap(),
                json,
                "{text}"
            );
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let json: Json = serde_json::from_str(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn insert_replaces_in_place_and_appends_new_keys() {
        let mut o: Object = [("x".to_string(), Json::Null), ("y".into(), Json::Null)]
            .into_iter()
            .collect();
        o.insert("x", Json::Bool(true));
        o.insert("z", Json::string("new"));
        assert_eq!(
            serde_json::to_string(&Json::Object(o)).unwrap(),
            r#"{"x":true,"y":null,"z":"new"}"#
        );
    }
}
