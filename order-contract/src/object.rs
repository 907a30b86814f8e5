//! [`Object<T>`]: a struct read from a JSON object and nothing else.

use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};

/// Deserializes `T` from a JSON object only. serde's derive also accepts a JSON
/// array with the fields in order, which is not part of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(ObjectOnly(PhantomData))
            .map(Object)
    }
}

struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Pair {
        a: u8,
        b: u8,
    }

    #[test]
    fn an_object_is_read_into_the_struct() {
        let Object(pair) = serde_json::from_str::<Object<Pair>>(r#"{"a":1,"b":2}"#).expect("ok");
        assert_eq!(pair, Pair { a: 1, b: 2 });
    }

    #[test]
    fn an_array_with_the_fields_in_order_is_refused() {
        assert!(
            serde_json::from_str::<Pair>("[1,2]").is_ok(),
            "serde's derive takes it"
        );
        let err = serde_json::from_str::<Object<Pair>>("[1,2]").expect_err("not an object");
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }
}
