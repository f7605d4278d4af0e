//! Presto's `histogram(x)`: a map from each distinct non-NULL value of `x` to the number
//! of rows holding it (NULL when there is none), keys in ascending order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, ListArray, MapArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Histogram {
    signature: Signature,
}

/// The `histogram` aggregate.
pub fn histogram() -> AggregateUDF {
    AggregateUDF::new_from_impl(Histogram {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// The map's entries: `key` (the value) and `value` (its count).
fn entries(key: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("key", key.clone(), false),
        Field::new("value", DataType::Int64, true),
    ])
}

fn map_type(key: &DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries(key)), false)),
        false,
    )
}

impl AggregateUDFImpl for Histogram {
    fn name(&self) -> &str {
        "histogram"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let key = arg_types
            .first()
            .ok_or_else(|| DataFusionError::Plan("histogram takes one argument".into()))?;
        Ok(map_type(key))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let key = args
            .input_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null);
        Ok(vec![
            Arc::new(Field::new_list(
                "keys",
                Field::new_list_field(key, true),
                true,
            )),
            Arc::new(Field::new_list(
                "counts",
                Field::new_list_field(DataType::Int64, true),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let key = args
            .expr_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null);
        Ok(Box::new(Counts {
            key,
            counts: HashMap::new(),
        }))
    }
}

/// The counts of one group.
#[derive(Debug)]
struct Counts {
    key: DataType,
    counts: HashMap<ScalarValue, i64>,
}

impl Counts {
    fn add(&mut self, values: &ArrayRef, counts: Option<&Int64Array>) -> Result<()> {
        for i in 0..values.len() {
            if values.is_null(i) {
                continue;
            }
            let n = counts.map_or(1, |c| c.value(i));
            *self
                .counts
                .entry(ScalarValue::try_from_array(values, i)?)
                .or_insert(0) += n;
        }
        Ok(())
    }

    /// The keys in ascending order, with their counts.
    fn sorted(&self) -> (Vec<ScalarValue>, Vec<i64>) {
        let mut pairs: Vec<(&ScalarValue, &i64)> = self.counts.iter().collect();
        pairs.sort_by(|a, b| a.0.partial_cmp(b.0).unwrap_or(std::cmp::Ordering::Equal));
        pairs.into_iter().map(|(k, n)| (k.clone(), *n)).unzip()
    }
}

impl Accumulator for Counts {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(values) => self.add(values, None),
            None => Ok(()),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = |i: usize| {
            states
                .get(i)
                .and_then(|s| s.as_any().downcast_ref::<ListArray>())
                .ok_or_else(|| DataFusionError::Internal("histogram: bad state".into()))
        };
        let (keys, counts) = (lists(0)?, lists(1)?);
        for row in 0..keys.len() {
            if keys.is_null(row) {
                continue;
            }
            let (k, n) = (keys.value(row), counts.value(row));
            let n = n
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| DataFusionError::Internal("histogram: bad counts".into()))?;
            self.add(&k, Some(n))?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (keys, counts) = self.sorted();
        let counts: Vec<ScalarValue> = counts
            .into_iter()
            .map(|n| ScalarValue::Int64(Some(n)))
            .collect();
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(&keys, &self.key)),
            ScalarValue::List(ScalarValue::new_list_nullable(&counts, &DataType::Int64)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let map = map_type(&self.key);
        if self.counts.is_empty() {
            return ScalarValue::try_from(&map);
        }
        let (keys, counts) = self.sorted();
        let keys = ScalarValue::iter_to_array(keys)?;
        let entries = StructArray::try_new(
            entries(&self.key),
            vec![keys, Arc::new(Int64Array::from(counts)) as ArrayRef],
            None,
        )?;
        let DataType::Map(field, _) = map else {
            return Err(DataFusionError::Internal("histogram: not a map".into()));
        };
        let offsets = OffsetBuffer::from_lengths([entries.len()]);
        let array = MapArray::try_new(field, offsets, entries, None, false)?;
        ScalarValue::try_from_array(&array, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .keys()
                .map(|k| k.size() + std::mem::size_of::<i64>())
                .sum::<usize>()
    }
}
