//! Request logs: the record, the batching writer, the indexes and the queries.

pub mod bodies;
pub mod filter;
pub mod index;
pub mod pg;
pub mod query;
pub mod record;
pub mod writer;
