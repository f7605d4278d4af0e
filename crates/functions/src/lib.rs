//! The SQL functions Athena (Presto/Trino) users expect, for a DataFusion session:
//! `datafusion-functions-json`'s functions (`json_get*`, `json_length`, `->`, `->>`), and
//! Presto's own names and meanings where DataFusion has none or a different one:
//!
//! - date and time ([`datetime`]): `date_add`, `date_diff`, `from_iso8601_timestamp`,
//!   `from_iso8601_date`, `to_iso8601`, `format_datetime` (Joda patterns), `date_parse`
//!   (MySQL patterns), `day_of_week`/`dow`, `day_of_year`/`doy`, `week_of_year`/`week`;
//! - JSON ([`json`]): `json_extract`, `json_extract_scalar`, `json_array_length`,
//!   `json_size`, `json_format`, `json_parse`, `is_json_scalar`, with JSON held as text;
//! - strings and collections ([`collections`]): `element_at` (a map's value or an array's
//!   element, NULL when missing), `split`, `regexp_extract`;
//! - aggregates ([`aggregates`]): `approx_percentile`, `arbitrary`, `count_if`, `max_by`,
//!   `min_by`, the last three planned as DataFusion's own aggregates; `histogram`
//!   ([`histogram`]);
//! - `try(x)` ([`lenient`]): NULL where evaluating `x` fails for a row;
//! - `at_timezone(ts, zone)` ([`zones`]): the same instant, given in another zone.
//!
//! [`register`] adds them all to a session; `element_at` replaces DataFusion's alias of
//! `map_extract` (which stays reachable under that name).

pub mod aggregates;
mod args;
pub mod collections;
pub mod datetime;
pub mod histogram;
pub mod json;
pub mod lenient;
pub mod zones;

use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use std::sync::Arc;

/// Registers the JSON crate's functions and Tarn's Presto-compatible functions.
pub fn register(registry: &mut dyn FunctionRegistry) -> Result<()> {
    datafusion_functions_json::register_all(registry)?;
    for udf in datetime::functions()
        .into_iter()
        .chain(json::functions())
        .chain(collections::functions())
        .chain([lenient::try_udf(), zones::at_timezone()])
    {
        registry.register_udf(Arc::new(udf))?;
    }
    for udaf in aggregates::functions()
        .into_iter()
        .chain([histogram::histogram()])
    {
        registry.register_udaf(Arc::new(udaf))?;
    }
    Ok(())
}
