//! Typed structs from a positioned tree: a serde `Deserializer` over
//! [`Node`] whose errors carry the field path and the position of the
//! offending node (for an unknown field, the key's own position).
//!
//! Scalars are read leniently, like protobuf JSON and kubectl: a quoted
//! number is accepted for a number field, a plain number for a string
//! field; `null` reads as "absent" for options, lists, maps and structs.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::{Mark, Node, Value, path::FieldPath};

/// A typed read that failed: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub message: String,
    pub path: Option<FieldPath>,
    pub mark: Option<Mark>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) if !p.0.is_empty() => write!(f, "{p}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            path: None,
            mark: None,
        }
    }
}

impl DeError {
    /// Fills in where, unless a deeper node already did.
    fn at(mut self, path: &FieldPath, mark: Mark) -> Self {
        if self.mark.is_none() {
            self.mark = Some(mark);
            self.path = Some(path.clone());
        }
        self
    }
}

/// Reads a `T` from `node`, which sits at `path`.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &Node, path: FieldPath) -> Result<T, DeError> {
    T::deserialize(NodeDe { node, path: &path })
}

struct NodeDe<'a> {
    node: &'a Node,
    path: &'a FieldPath,
}

impl NodeDe<'_> {
    fn invalid(&self, expected: &str) -> DeError {
        let found = match &self.node.value {
            Value::Scalar { text, .. } => format!("`{}`", shorten(text)),
            other => match other {
                Value::Null => "null".into(),
                Value::Seq(_) => "a list".into(),
                Value::Map(_) => "a mapping".into(),
                Value::Scalar { .. } => unreachable!(),
            },
        };
        DeError {
            message: format!("expected {expected}, found {found}"),
            path: Some(self.path.clone()),
            mark: Some(self.node.mark),
        }
    }

    fn text(&self) -> Option<&str> {
        match &self.node.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn number<T: std::str::FromStr>(&self, expected: &str) -> Result<T, DeError> {
        let text = self.text().ok_or_else(|| self.invalid(expected))?;
        let cleaned = text.replace('_', "");
        cleaned.parse().map_err(|_| self.invalid(expected))
    }

    fn wrap<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(self.path, self.node.mark))
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    }
}

macro_rules! number {
    ($method:ident, $visit:ident, $ty:ty, $what:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let n: $ty = self.number($what)?;
            self.wrap(visitor.$visit(n))
        }
    };
}

impl<'de> Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Scalar { text, plain: true } => {
                if let Some(b) = parse_bool(text) {
                    visitor.visit_bool(b)
                } else if let Ok(n) = text.parse::<u64>() {
                    visitor.visit_u64(n)
                } else if let Ok(n) = text.parse::<i64>() {
                    visitor.visit_i64(n)
                } else if let Some(f) = parse_float(text) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(text)
                }
            }
            Value::Scalar { text, plain: false } => visitor.visit_str(text),
            Value::Seq(_) => return self.deserialize_seq(visitor),
            Value::Map(_) => return self.deserialize_map(visitor),
        };
        self.wrap(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.text().and_then(parse_bool) {
            Some(b) => self.wrap(visitor.visit_bool(b)),
            None => Err(self.invalid("true or false")),
        }
    }

    number!(deserialize_i8, visit_i8, i8, "an integer (-128 to 127)");
    number!(deserialize_i16, visit_i16, i16, "an integer (16 bits)");
    number!(deserialize_i32, visit_i32, i32, "an integer (32 bits)");
    number!(deserialize_i64, visit_i64, i64, "an integer");
    number!(deserialize_u8, visit_u8, u8, "an integer 0-255");
    number!(deserialize_u16, visit_u16, u16, "an integer 0-65535");
    number!(
        deserialize_u32,
        visit_u32,
        u32,
        "a non-negative integer (32 bits)"
    );
    number!(deserialize_u64, visit_u64, u64, "a non-negative integer");

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.text().and_then(parse_float) {
            Some(f) => self.wrap(visitor.visit_f64(f)),
            None => Err(self.invalid("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.text() {
            Some(text) => self.wrap(visitor.visit_str(text)),
            None => Err(self.invalid("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            self.wrap(visitor.visit_none())
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            self.wrap(visitor.visit_unit())
        } else {
            Err(self.invalid("null"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items: &[std::rc::Rc<Node>] = match &self.node.value {
            Value::Seq(items) => items,
            Value::Null => &[],
            _ => return Err(self.invalid("a list")),
        };
        let r = visitor.visit_seq(Seq {
            items,
            index: 0,
            path: self.path,
        });
        self.wrap(r)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let entries: &[(super::Key, std::rc::Rc<Node>)] = match &self.node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => return Err(self.invalid("a mapping")),
        };
        let r = visitor.visit_map(Map {
            entries,
            index: 0,
            path: self.path,
            value_path: None,
        });
        self.wrap(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.text() {
            Some(text) => {
                let r = visitor.visit_enum(UnitVariant { text });
                r.map_err(|e| {
                    let mut e = e;
                    if e.mark.is_none() && e.message.starts_with("unknown variant") {
                        e.message = format!(
                            "`{}` is not one of {}",
                            shorten(text),
                            variants
                                .iter()
                                .map(|v| format!("`{v}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                    e.at(self.path, self.node.mark)
                })
            }
            None => Err(self.invalid(&format!(
                "one of {}",
                variants
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Seq<'a> {
    items: &'a [std::rc::Rc<Node>],
    index: usize,
    path: &'a FieldPath,
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.index) else {
            return Ok(None);
        };
        let path = self.path.index(self.index);
        self.index += 1;
        seed.deserialize(NodeDe {
            node: item,
            path: &path,
        })
        .map(Some)
        .map_err(|e| e.at(&path, item.mark))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.index)
    }
}

struct Map<'a> {
    entries: &'a [(super::Key, std::rc::Rc<Node>)],
    index: usize,
    path: &'a FieldPath,
    value_path: Option<FieldPath>,
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, _)) = self.entries.get(self.index) else {
            return Ok(None);
        };
        let path = self.path.key(&key.text);
        let key_node = Node {
            mark: key.mark,
            value: Value::Scalar {
                text: key.text.clone(),
                plain: true,
            },
        };
        let k = seed
            .deserialize(NodeDe {
                node: &key_node,
                path: &path,
            })
            .map_err(|mut e| {
                if e.message.starts_with("unknown field") {
                    e.message = format!(
                        "{} (fields are case-sensitive; is it misspelt or misplaced?)",
                        e.message
                    );
                }
                e.at(&path, key.mark)
            })?;
        self.value_path = Some(path);
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (_, value) = &self.entries[self.index];
        self.index += 1;
        let path = self.value_path.take().unwrap_or_else(|| self.path.clone());
        seed.deserialize(NodeDe {
            node: value,
            path: &path,
        })
        .map_err(|e| e.at(&path, value.mark))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.index)
    }
}

struct UnitVariant<'a> {
    text: &'a str,
}

impl<'de> EnumAccess<'de> for UnitVariant<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let de: de::value::StrDeserializer<'_, DeError> = self.text.into_deserializer();
        Ok((seed.deserialize(de)?, self))
    }
}

impl<'de> VariantAccess<'de> for UnitVariant<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(de::Error::custom("expected a plain value"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom("expected a plain value"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(de::Error::custom("expected a plain value"))
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => text.parse().ok().filter(|_| {
            text.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::yaml::{Limits, parse};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Spec {
        name: String,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        mode: Mode,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        weight: u32,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "UPPERCASE")]
    enum Mode {
        #[default]
        Strict,
        Permissive,
    }

    fn read(text: &str) -> Result<Spec, DeError> {
        let docs = parse(text, Limits::default()).unwrap();
        from_node(&docs[0].root, FieldPath::parse("spec"))
    }

    #[test]
    fn reads_typed_values_leniently() {
        let s = read(
            "name: 8080\nport: '80'\nitems: [{weight: 1}]\nlabels: {v: 1.0}\nmode: PERMISSIVE\n",
        )
        .unwrap();
        assert_eq!(s.name, "8080");
        assert_eq!(s.port, Some(80));
        assert_eq!(s.labels["v"], "1.0");
        assert_eq!(s.mode, Mode::Permissive);
        let s = read("name: a\nitems:\nlabels:\n").unwrap();
        assert!(s.items.is_empty());
    }

    #[test]
    fn errors_carry_path_and_position() {
        let e = read("name: a\nitems:\n- weight: 1\n- weight: x\n").unwrap_err();
        assert_eq!(e.path.unwrap().to_string(), "spec.items[1].weight");
        assert_eq!(
            e.mark.unwrap(),
            Mark {
                line: 4,
                column: 11
            }
        );
        assert!(
            e.message.contains("expected a non-negative integer"),
            "{}",
            e.message
        );

        let e = read("name: a\nitems:\n- wieght: 1\n").unwrap_err();
        assert_eq!(e.path.unwrap().to_string(), "spec.items[0].wieght");
        assert_eq!(e.mark.unwrap(), Mark { line: 3, column: 3 });
        assert!(
            e.message
                .starts_with("unknown field `wieght`, expected `weight`"),
            "{}",
            e.message
        );

        let e = read("port: 1\n").unwrap_err();
        assert_eq!(e.message, "missing field `name`");
        assert_eq!(e.path.unwrap().to_string(), "spec");

        let e = read("name: a\nport: 70000\n").unwrap_err();
        assert!(e.message.contains("0-65535"), "{}", e.message);

        let e = read("name: a\nmode: LOOSE\n").unwrap_err();
        assert_eq!(e.message, "`LOOSE` is not one of `STRICT`, `PERMISSIVE`");
        assert_eq!(e.mark.unwrap().line, 2);
    }
}
