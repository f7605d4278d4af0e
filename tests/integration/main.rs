//! Tarn's integration tests: real lakes on disk, a real SQLite catalog, a real Flight SQL
//! server on 127.0.0.1:0 and the Rust Flight SQL client.

mod atomicity;
mod cache;
mod common;
mod crawl;
mod delta;
mod faults;
mod flight;
mod history;
mod layers;
mod limits;
mod plans;
mod replace;
mod rollup;
mod sqllogic;
mod store;
