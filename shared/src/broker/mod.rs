//! RabbitMQ: the topology both binaries declare, a self-healing connection, and confirmed publishes.

mod link;
mod topology;

pub use link::{Broker, Link, PublishError, PublishOptions, supervise};
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
