//! RabbitMQ: the topology both binaries declare, a self-healing connection, and confirmed publishes.

mod link;
mod topology;

pub use link::{Broker, Link, PublishError, PublishOptions, broker_addresses, supervise};
pub use topology::{RetryTier, Topology};

use lapin::types::{AMQPValue, FieldTable};

/// Reads an integer header (e.g. the retry attempt) from a delivery's properties.
pub fn header_u32(properties: &lapin::BasicProperties, name: &str) -> Option<u32> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    let number = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    };
    u32::try_from(number).ok()
}

/// A header table with one integer entry.
pub fn headers_with(name: &str, value: u32) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(name.into(), AMQPValue::LongLongInt(i64::from(value)));
    table
}

/// A string header (long or short string) of a delivery's properties.
pub fn header_str(properties: &lapin::BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// A delivery's headers as plain JSON, for people to read (e.g. `x-death`).
pub fn headers_json(properties: &lapin::BasicProperties) -> serde_json::Value {
    properties.headers().as_ref().map_or_else(|| serde_json::json!({}), table_json)
}

fn table_json(table: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(table.inner().iter().map(|(key, value)| (key.as_str().to_owned(), value_json(value))).collect())
}

fn value_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::json;
    match value {
        AMQPValue::Boolean(v) => json!(v),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::Timestamp(v) => json!(v),
        AMQPValue::ShortString(v) => json!(v.as_str()),
        AMQPValue::LongString(v) => json!(String::from_utf8_lossy(v.as_bytes())),
        AMQPValue::ByteArray(v) => json!(String::from_utf8_lossy(v.as_slice())),
        AMQPValue::FieldArray(v) => serde_json::Value::Array(v.as_slice().iter().map(value_json).collect()),
        AMQPValue::FieldTable(v) => table_json(v),
        AMQPValue::DecimalValue(v) => json!(format!("{}e-{}", v.value, v.scale)),
        AMQPValue::Void => serde_json::Value::Null,
    }
}
