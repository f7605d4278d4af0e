//! Mergeable distinct-count sketches for rollups: `approx_distinct` kept as its
//! HyperLogLog state, and merged again at query time.
//!
//! Two aggregate functions wrap DataFusion's own `approx_distinct` accumulator, so a
//! merged answer is the very number `approx_distinct` gives over the base rows (HyperLogLog
//! registers merge by maximum, and sparse sketches by union, with no loss):
//!
//! - `approx_distinct_state(x)`: the sketch of `x`'s values (binary), stored per rollup row;
//! - `approx_distinct_merge(sketch)`: merges sketches and returns the estimate (`UInt64`).
//!
//! Both always use the grouped accumulator (a single group when there is no `GROUP BY`),
//! whose sketches start sparse (a few hashes) and turn dense (16 KiB) only past a few
//! hundred distinct values, so small rollup groups stay small.

use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{ArrayRef, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{ScalarValue, not_impl_err};
use datafusion::error::Result;
use datafusion::functions_aggregate::approx_distinct::approx_distinct_udaf;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// Whether values of `data_type` can be sketched (the types DataFusion's grouped
/// `approx_distinct` hashes; booleans and small integers use another state).
pub fn sketchable(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int32
            | DataType::Int64
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(TimeUnit::Second, _)
            | DataType::Timestamp(TimeUnit::Millisecond, _)
            | DataType::Timestamp(TimeUnit::Microsecond, _)
            | DataType::Timestamp(TimeUnit::Nanosecond, _)
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// `approx_distinct_state(x)`: the HyperLogLog sketch of `x`.
pub fn state_udaf() -> Arc<AggregateUDF> {
    static UDAF: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(Sketch::new(Role::State))));
    Arc::clone(&UDAF)
}

/// `approx_distinct_merge(sketch)`: the estimate of the merged sketches.
pub fn merge_udaf() -> Arc<AggregateUDF> {
    static UDAF: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(Sketch::new(Role::Merge))));
    Arc::clone(&UDAF)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    /// Values in, sketch out.
    State,
    /// Sketches in, estimate out.
    Merge,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Sketch {
    role: Role,
    signature: Signature,
}

impl Sketch {
    fn new(role: Role) -> Self {
        let signature = match role {
            Role::State => Signature::any(1, Volatility::Immutable),
            Role::Merge => Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        };
        Self { role, signature }
    }

    fn inner(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.expr_fields[0].data_type();
        if self.role == Role::State && !sketchable(data_type) {
            return not_impl_err!("approx_distinct_state does not sketch {data_type} values");
        }
        approx_distinct_udaf().create_groups_accumulator(args)
    }
}

impl AggregateUDFImpl for Sketch {
    fn name(&self) -> &str {
        match self.role {
            Role::State => "approx_distinct_state",
            Role::Merge => "approx_distinct_merge",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.role {
            Role::State => DataType::Binary,
            Role::Merge => DataType::UInt64,
        })
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn default_value(&self, _: &DataType) -> Result<ScalarValue> {
        Ok(match self.role {
            Role::State => ScalarValue::Binary(Some(Vec::new())),
            Role::Merge => ScalarValue::UInt64(Some(0)),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[sketch]", args.name),
            DataType::Binary,
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup {
            role: self.role,
            inner: Mutex::new(self.inner(args)?),
        }))
    }

    fn groups_accumulator_supported(&self, _: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Grouped {
            role: self.role,
            inner: self.inner(args)?,
        }))
    }
}

/// The grouped accumulator, taking values (state) or sketches (merge) as input.
struct Grouped {
    role: Role,
    inner: Box<dyn GroupsAccumulator>,
}

impl std::fmt::Debug for Grouped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped").field("role", &self.role).finish()
    }
}

impl GroupsAccumulator for Grouped {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        match self.role {
            Role::State => {
                self.inner
                    .update_batch(values, group_indices, opt_filter, total_num_groups)
            }
            Role::Merge => {
                if opt_filter.is_some() {
                    return not_impl_err!("approx_distinct_merge with FILTER");
                }
                self.inner
                    .merge_batch(values, group_indices, total_num_groups)
            }
        }
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        match self.role {
            Role::State => Ok(Arc::clone(&self.inner.state(emit_to)?[0])),
            Role::Merge => self.inner.evaluate(emit_to),
        }
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        match (self.role, opt_filter) {
            (Role::State, _) => self.inner.convert_to_state(values, opt_filter),
            (Role::Merge, None) => Ok(values.to_vec()),
            (Role::Merge, Some(_)) => not_impl_err!("approx_distinct_merge with FILTER"),
        }
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}

/// The grouped accumulator with one group, for aggregations without `GROUP BY` (so both
/// paths produce the same sketches and estimates).
struct OneGroup {
    role: Role,
    /// In a mutex only to be `Sync`; every use has `&mut self`.
    inner: Mutex<Box<dyn GroupsAccumulator>>,
}

impl std::fmt::Debug for OneGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneGroup")
            .field("role", &self.role)
            .finish()
    }
}

impl OneGroup {
    fn inner(&mut self) -> &mut Box<dyn GroupsAccumulator> {
        self.inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sketch so far, leaving the accumulator as it was.
    fn sketch(&mut self) -> Result<ArrayRef> {
        let inner = self.inner();
        // Creates the group when no row came (an empty input has an empty sketch).
        inner.merge_batch(&[arrow::array::new_empty_array(&DataType::Binary)], &[], 1)?;
        let sketch = Arc::clone(&inner.state(EmitTo::All)?[0]);
        inner.merge_batch(&[Arc::clone(&sketch)], &[0], 1)?;
        Ok(sketch)
    }
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; values[0].len()];
        let role = self.role;
        let inner = self.inner();
        match role {
            Role::State => inner.update_batch(values, &groups, None, 1),
            Role::Merge => inner.merge_batch(values, &groups, 1),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; states[0].len()];
        self.inner().merge_batch(states, &groups, 1)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::try_from_array(&self.sketch()?, 0)?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let sketch = self.sketch()?;
        match self.role {
            Role::State => ScalarValue::try_from_array(&sketch, 0),
            Role::Merge => {
                let inner = self.inner();
                let estimate = inner.evaluate(EmitTo::All)?;
                inner.merge_batch(&[sketch], &[0], 1)?;
                ScalarValue::try_from_array(&estimate, 0)
            }
        }
    }

    fn size(&self) -> usize {
        self.inner.lock().map(|i| i.size()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::*;

    /// Sketches of parts, merged, give `approx_distinct`'s answer over the whole.
    #[tokio::test]
    async fn merged_sketches_give_approx_distincts_answer() {
        let ctx = SessionContext::new();
        ctx.register_udaf(state_udaf().as_ref().clone());
        ctx.register_udaf(merge_udaf().as_ref().clone());
        let rows = "SELECT v % 7 AS g, v % 13 AS part, (v * 7919) % 5000 AS u, \
                    concat('user-', (v * 31) % 3000) AS s FROM generate_series(1, 40000) AS t(v)";
        ctx.sql(&format!("CREATE VIEW t AS {rows}")).await.unwrap();
        let run = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
        };
        let direct = run(
            "SELECT g, approx_distinct(u) AS a, approx_distinct(s) AS b FROM t GROUP BY g ORDER BY g",
        )
        .await;
        let merged = run(
            "SELECT g, approx_distinct_merge(su) AS a, approx_distinct_merge(ss) AS b FROM \
             (SELECT g, part, approx_distinct_state(u) AS su, approx_distinct_state(s) AS ss \
              FROM t GROUP BY g, part) GROUP BY g ORDER BY g",
        )
        .await;
        assert_eq!(merged, direct);
        // Without GROUP BY (the one-group path) too.
        let direct = run("SELECT approx_distinct(u) AS a FROM t").await;
        let merged = run("SELECT approx_distinct_merge(su) AS a FROM \
             (SELECT part, approx_distinct_state(u) AS su FROM t GROUP BY part)")
        .await;
        assert_eq!(merged, direct);
        // No rows at all: an empty sketch, and 0 like approx_distinct.
        let direct = run("SELECT approx_distinct(u) AS a FROM t WHERE u < 0").await;
        let merged = run("SELECT approx_distinct_merge(su) AS a FROM \
             (SELECT approx_distinct_state(u) AS su FROM t WHERE u < 0)")
        .await;
        assert_eq!(merged, direct);
        assert!(direct.contains("| 0 "), "{direct}");
    }
}
