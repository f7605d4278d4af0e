//! Tarn beyond one machine, on datafusion-distributed.
//!
//! - [`planner`]: the coordinator's planner, which spreads a query over the workers where
//!   its scans are large enough and its plan can travel, and runs it here otherwise;
//! - [`worker`]: the worker service, mounted on a tonic server (`tarn worker`);
//! - [`workers`]: where the workers are (a list, a DNS name or a file), kept fresh in the
//!   background, leaving out workers that do not answer;
//! - [`channels`]: calls between coordinator and workers: the cluster's token, and
//!   errors that name a worker that failed.
//!
//! Tarn's own plan nodes travel through `tarn_optimizer::codec`.

pub mod channels;
pub mod planner;
pub mod worker;
pub mod workers;

pub use planner::{ClusterOptions, Coordinator};
pub use workers::{WorkerList, WorkerSource};
