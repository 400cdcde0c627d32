//! Request logs: the record, the batching writer, the indexes and the queries.

pub mod index;
pub mod query;
pub mod record;
pub mod writer;
