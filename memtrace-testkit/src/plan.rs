//! Checks of an attach plan as doctor and stream headers print it.

use serde_json::Value;

/// The family a plan entry must be on: the first of the families it tried
/// that worked (null when none did).
pub fn first_ok_family(p: &Value) -> Value {
    p["families"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["ok"] == true)
        .map(|o| o["family"].clone())
        .unwrap_or(Value::Null)
}
