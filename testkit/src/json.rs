//! JSON values and changes to them, for property tests of the parsers of outside input.

use proptest::prelude::*;
use serde_json::Value;

/// Values of every JSON type, plus strings shaped like what the agent parses (hex, digests,
/// traceparents, timestamps) so that near-misses get tried too.
pub fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[0-9a-f]{0,70}".prop_map(Value::String),
        "sha256:[0-9a-f]{60,66}".prop_map(Value::String),
        "00-[0-9a-f]{30,34}-[0-9a-f]{14,18}-0[0-3]".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z".prop_map(Value::String),
        Just(Value::Array(vec![Value::from(1), Value::from("x")])),
        Just(serde_json::json!({"unexpected": {"deeply": [1, 2, 3]}})),
        Just(serde_json::json!({"nested": {"deeper": [null]}})),
    ]
}

/// Replaces the value at a pseudo-random path of `v` with `new`: `pick` chooses the key or
/// index at each level, and whether to stop there or go deeper (objects and arrays only).
pub fn mutate(v: &mut Value, pick: u64, new: Value) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = keys[(pick % keys.len() as u64) as usize].clone();
            let rest = pick / 7;
            match m.get_mut(&k) {
                Some(child) if !rest.is_multiple_of(3) => mutate(child, rest, new),
                _ => {
                    m.insert(k, new);
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = (pick % a.len() as u64) as usize;
            let rest = pick / 5;
            if !rest.is_multiple_of(3) {
                mutate(&mut a[i], rest, new);
            } else {
                a[i] = new;
            }
        }
        other => *other = new,
    }
}
