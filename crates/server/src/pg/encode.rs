//! Decimals on the wire. `arrow-pg` encodes Arrow decimals through `rust_decimal`, which
//! holds 28 digits, so a `decimal(38, s)` (Tarn's widest) would fail or lose digits. Tarn
//! encodes every decimal column itself, exactly: in text format as Arrow's decimal text
//! (the digits Postgres prints for `numeric`), in binary format as Postgres' `numeric`
//! (base-10000 digits, weight, sign, display scale), handed to `arrow-pg` as bytes.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryBuilder, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion_postgres::pgwire::api::results::{FieldFormat, FieldInfo};

use tarn_lake::error::{Error, Result};

/// `batch` with its decimal columns replaced by their exact wire form for `fields`.
pub(crate) fn decimals_for_wire(batch: RecordBatch, fields: &[FieldInfo]) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_decimal(f.data_type())) {
        return Ok(batch);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let mut new_fields = Vec::with_capacity(batch.num_columns());
    for (i, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        if !is_decimal(field.data_type()) {
            columns.push(Arc::clone(column));
            new_fields.push(Arc::clone(field));
            continue;
        }
        let text = arrow::compute::cast(column, &DataType::Utf8)
            .map_err(|e| Error::Internal(format!("decimal column '{}': {e}", field.name())))?;
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("decimal text is not a string array".into()))?;
        let binary = fields
            .get(i)
            .is_some_and(|f| f.format() == FieldFormat::Binary);
        let (array, data_type): (ArrayRef, DataType) = if binary {
            let mut builder = BinaryBuilder::new();
            for value in text.iter() {
                match value {
                    Some(v) => builder.append_value(numeric_binary(v)?),
                    None => builder.append_null(),
                }
            }
            (Arc::new(builder.finish()), DataType::Binary)
        } else {
            (Arc::new(text.clone()), DataType::Utf8)
        };
        columns.push(array);
        new_fields.push(Arc::new(Field::new(
            field.name(),
            data_type,
            field.is_nullable(),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(new_fields)), columns)
        .map_err(|e| Error::Internal(format!("re-encoding decimals: {e}")))
}

fn is_decimal(t: &DataType) -> bool {
    matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
}

/// Postgres' binary `numeric` for a decimal written as text (`-123.4500`).
fn numeric_binary(text: &str) -> Result<Vec<u8>> {
    let bad = || Error::Internal(format!("'{text}' is not a decimal"));
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let scale = i16::try_from(fraction.len()).map_err(|_| bad())?;
    // Groups of four digits aligned at the decimal point.
    let whole = whole.trim_start_matches('0');
    let left_pad = (4 - whole.len() % 4) % 4;
    let right_pad = (4 - fraction.len() % 4) % 4;
    let padded: Vec<u8> = std::iter::repeat_n(b'0', left_pad)
        .chain(whole.bytes())
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', right_pad))
        .collect();
    let mut groups: Vec<i16> = padded
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = i16::try_from((left_pad + whole.len()) / 4).map_err(|_| bad())? - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(
        &i16::try_from(groups.len())
            .map_err(|_| bad())?
            .to_be_bytes(),
    );
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_as_postgres_writes_them() {
        // ndigits, weight, sign, dscale, digits (base 10000), as Postgres sends them.
        assert_eq!(
            words(&numeric_binary("1.25").unwrap()),
            vec![2, 0, 0, 2, 1, 2500]
        );
        assert_eq!(
            words(&numeric_binary("-12345678.9").unwrap()),
            vec![3, 1, 0x4000, 1, 1234, 5678, 9000]
        );
        assert_eq!(
            words(&numeric_binary("0.0001").unwrap()),
            vec![1, -1, 0, 4, 1]
        );
        assert_eq!(words(&numeric_binary("0.000").unwrap()), vec![0, 0, 0, 3]);
        assert_eq!(
            words(&numeric_binary("10000").unwrap()),
            vec![1, 1, 0, 0, 1]
        );
        assert!(numeric_binary("1e5").is_err());
    }
}
