//! Presto's `at_timezone(timestamp, zone)`: the same instant, given in `zone` (an IANA
//! name such as 'Europe/Paris' or an offset such as '+02:00'). A timestamp without a zone
//! is read as UTC, the session zone Tarn starts in.

use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::scalar::ScalarValue;

use crate::args::{arrays, is_string, wrong_count, wrong_type};

#[derive(Debug, PartialEq, Eq, Hash)]
struct AtTimezone {
    signature: Signature,
}

/// The `at_timezone` function.
pub fn at_timezone() -> ScalarUDF {
    ScalarUDF::new_from_impl(AtTimezone {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

const NAME: &str = "at_timezone";

impl ScalarUDFImpl for AtTimezone {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [value, zone] = arg_types else {
            return Err(wrong_count(NAME, "2", arg_types.len()));
        };
        let value = match value {
            DataType::Timestamp(..) => value.clone(),
            DataType::Date32 | DataType::Date64 | DataType::Null => {
                DataType::Timestamp(TimeUnit::Nanosecond, None)
            }
            other => return Err(wrong_type(NAME, 1, "a timestamp", other)),
        };
        if !is_string(zone) {
            return Err(wrong_type(NAME, 2, "a zone name as a string", zone));
        }
        Ok(vec![value, DataType::Utf8])
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(
            "at_timezone's type comes from its zone argument".into(),
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let unit = match args.arg_fields.first().map(|f| f.data_type()) {
            Some(DataType::Timestamp(unit, _)) => *unit,
            _ => TimeUnit::Nanosecond,
        };
        let zone = match args.scalar_arguments.get(1) {
            Some(Some(
                ScalarValue::Utf8(Some(z))
                | ScalarValue::LargeUtf8(Some(z))
                | ScalarValue::Utf8View(Some(z)),
            )) => z.trim().to_string(),
            _ => {
                return Err(DataFusionError::Plan(
                    "at_timezone: the zone must be a constant string such as 'Europe/Paris' \
                     or '+02:00'"
                        .into(),
                ));
            }
        };
        if zone.parse::<Tz>().is_err() {
            return Err(DataFusionError::Plan(format!(
                "at_timezone: '{zone}' is not a time zone; give an IANA name such as \
                 'Europe/Paris' or an offset such as '+02:00'"
            )));
        }
        Ok(Arc::new(Field::new(
            NAME,
            DataType::Timestamp(unit, Some(zone.into())),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let target = args.return_field.data_type().clone();
        let DataType::Timestamp(unit, _) = &target else {
            return Err(DataFusionError::Internal(format!(
                "at_timezone returns a timestamp, not {target}"
            )));
        };
        let values = arrays(&args)?;
        let value = values.first().ok_or_else(|| wrong_count(NAME, "2", 0))?;
        // A timestamp without a zone is an instant in UTC; the instant then keeps its
        // value and takes the new zone.
        let instant = match value.data_type() {
            DataType::Timestamp(_, Some(_)) => Arc::clone(value),
            _ => cast(value, &DataType::Timestamp(*unit, Some("UTC".into())))?,
        };
        Ok(ColumnarValue::Array(cast(&instant, &target)?))
    }
}
