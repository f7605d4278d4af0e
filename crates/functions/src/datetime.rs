//! Presto's date and time functions. Dates and timestamps are read as local date-times
//! (a timestamp with a zone in its zone, as Presto does) and written back in the input's
//! type; units are Presto's (`millisecond` … `year`, plural accepted).

use crate::args::{Simple, all_strings, int64, is_string, strings, utf8, wrong_count, wrong_type};
use arrow::array::timezone::Tz;
use arrow::array::{
    Array, ArrayRef, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{
    DateTime, Datelike, Months, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ScalarUDF;
use std::fmt::Write;
use std::str::FromStr;
use std::sync::Arc;

/// The date and time functions of this module.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        Simple::udf("date_add", &[], coerce_date_add, same_as_third, date_add),
        Simple::udf("date_diff", &[], coerce_date_diff, int64, date_diff),
        Simple::udf(
            "day_of_week",
            &["dow"],
            coerce_one_temporal,
            int64,
            day_of_week,
        ),
        Simple::udf(
            "day_of_year",
            &["doy"],
            coerce_one_temporal,
            int64,
            day_of_year,
        ),
        Simple::udf(
            "week_of_year",
            &["week"],
            coerce_one_temporal,
            int64,
            week_of_year,
        ),
        Simple::udf("to_iso8601", &[], coerce_one_temporal, utf8, to_iso8601),
        Simple::udf("format_datetime", &[], coerce_format, utf8, format_datetime),
        Simple::udf("date_parse", &[], all_strings, timestamp, date_parse),
        Simple::udf(
            "from_iso8601_timestamp",
            &[],
            all_strings,
            timestamp_utc,
            from_iso8601_timestamp,
        ),
        Simple::udf(
            "from_iso8601_date",
            &[],
            all_strings,
            date,
            from_iso8601_date,
        ),
    ]
}

fn date(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Date32)
}
fn timestamp(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
}
fn timestamp_utc(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Timestamp(
        TimeUnit::Microsecond,
        Some("UTC".into()),
    ))
}
fn same_as_third(types: &[DataType]) -> Result<DataType> {
    types
        .get(2)
        .cloned()
        .ok_or_else(|| wrong_count("date_add", "3", types.len()))
}

/// A date or timestamp argument's type as the functions take it (date strings and
/// `Date64` as dates).
fn temporal(function: &str, position: usize, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Date32 | DataType::Timestamp(_, _) => Ok(t.clone()),
        DataType::Date64 | DataType::Null => Ok(DataType::Date32),
        _ => Err(wrong_type(function, position, "a date or a timestamp", t)),
    }
}

fn coerce_one_temporal(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    match types {
        [t] => Ok(vec![temporal(function, 1, t)?]),
        _ => Err(wrong_count(function, "1", types.len())),
    }
}

fn unit_type(function: &str, t: &DataType) -> Result<DataType> {
    if is_string(t) {
        Ok(DataType::Utf8)
    } else {
        Err(wrong_type(function, 1, "a unit name such as 'day'", t))
    }
}

fn coerce_date_add(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    match types {
        [u, n, t] => {
            if !n.is_integer() && !n.is_null() {
                return Err(wrong_type(function, 2, "an integer", n));
            }
            Ok(vec![
                unit_type(function, u)?,
                DataType::Int64,
                temporal(function, 3, t)?,
            ])
        }
        _ => Err(wrong_count(function, "3", types.len())),
    }
}

fn coerce_date_diff(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    match types {
        [u, a, b] => {
            let (a, b) = (temporal(function, 2, a)?, temporal(function, 3, b)?);
            // A date beside a timestamp is read as that timestamp's midnight.
            let common = match (&a, &b) {
                (DataType::Date32, DataType::Date32) => DataType::Date32,
                (DataType::Timestamp(_, tz), _) | (_, DataType::Timestamp(_, tz)) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                }
                _ => DataType::Date32,
            };
            Ok(vec![unit_type(function, u)?, common.clone(), common])
        }
        _ => Err(wrong_count(function, "3", types.len())),
    }
}

fn coerce_format(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    match types {
        [t, p] if is_string(p) => Ok(vec![temporal(function, 1, t)?, DataType::Utf8]),
        [_, p] => Err(wrong_type(function, 2, "a format string", p)),
        _ => Err(wrong_count(function, "2", types.len())),
    }
}

/// A column of dates or timestamps read as local date-times.
struct Temporal {
    /// Days for dates, microseconds for timestamps.
    values: Vec<Option<i64>>,
    is_date: bool,
    zone: Option<Tz>,
    original: DataType,
}

impl Temporal {
    fn read(array: &ArrayRef) -> Result<Self> {
        let original = array.data_type().clone();
        match &original {
            DataType::Timestamp(_, tz) => {
                let micros = cast(
                    array,
                    &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                )?;
                let micros = micros
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .ok_or_else(|| DataFusionError::Internal("timestamp cast".into()))?;
                let zone = tz.as_deref().map(Tz::from_str).transpose()?;
                Ok(Temporal {
                    values: micros.iter().collect(),
                    is_date: false,
                    zone,
                    original,
                })
            }
            _ => {
                let days = cast(array, &DataType::Date32)?;
                let days = days
                    .as_any()
                    .downcast_ref::<Date32Array>()
                    .ok_or_else(|| DataFusionError::Internal("date cast".into()))?;
                Ok(Temporal {
                    values: days.iter().map(|d| d.map(i64::from)).collect(),
                    is_date: true,
                    zone: None,
                    original: DataType::Date32,
                })
            }
        }
    }

    /// Row `i` as a local date-time (a timestamp with a zone in that zone).
    fn local(&self, i: usize) -> Option<NaiveDateTime> {
        let v = self.values[i]?;
        if self.is_date {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
            return epoch
                .checked_add_signed(TimeDelta::try_days(v)?)
                .map(|d| d.and_hms_opt(0, 0, 0))?;
        }
        let utc = DateTime::<Utc>::from_timestamp_micros(v)?;
        Some(match &self.zone {
            Some(zone) => utc.with_timezone(zone).naive_local(),
            None => utc.naive_utc(),
        })
    }

    /// Row `i` with its zone, for formatting (UTC for a timestamp without a zone).
    fn zoned(&self, i: usize) -> Option<DateTime<Tz>> {
        let zone = match &self.zone {
            Some(zone) => *zone,
            None => Tz::from_str("+00:00").ok()?,
        };
        let local = self.local(i)?;
        zone.from_local_datetime(&local).earliest()
    }

    /// `local` written back as this column's value (days or microseconds).
    fn store(&self, local: NaiveDateTime) -> Option<i64> {
        if self.is_date {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
            return Some((local.date() - epoch).num_days());
        }
        match &self.zone {
            Some(zone) => zone
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.timestamp_micros()),
            None => Some(local.and_utc().timestamp_micros()),
        }
    }

    /// `values` (as [`Self::store`] gives them) in this column's original type.
    fn build(&self, values: Vec<Option<i64>>) -> Result<ArrayRef> {
        if self.is_date {
            let days: Date32Array = values
                .into_iter()
                .map(|v| v.and_then(|d| i32::try_from(d).ok()))
                .collect();
            return Ok(Arc::new(days));
        }
        let tz = match &self.original {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let micros = TimestampMicrosecondArray::from(values).with_timezone_opt(tz);
        Ok(cast(&micros, &self.original)?)
    }
}

/// Presto's units of `date_add`, `date_diff` and `date_trunc`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Unit {
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Unit {
    fn parse(function: &str, name: &str) -> Result<Unit> {
        let lower = name.trim().to_ascii_lowercase();
        let singular = lower.strip_suffix('s').unwrap_or(&lower);
        Ok(match singular {
            "millisecond" => Unit::Millisecond,
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "quarter" => Unit::Quarter,
            "year" => Unit::Year,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{function}: unknown unit '{name}'; use millisecond, second, minute, hour, day, week, month, quarter or year"
                )));
            }
        })
    }

    /// The unit's length when it has a fixed one.
    fn fixed(self) -> Option<TimeDelta> {
        match self {
            Unit::Millisecond => Some(TimeDelta::milliseconds(1)),
            Unit::Second => Some(TimeDelta::seconds(1)),
            Unit::Minute => Some(TimeDelta::minutes(1)),
            Unit::Hour => Some(TimeDelta::hours(1)),
            Unit::Day => Some(TimeDelta::days(1)),
            Unit::Week => Some(TimeDelta::weeks(1)),
            _ => None,
        }
    }

    fn months(self) -> i64 {
        match self {
            Unit::Quarter => 3,
            Unit::Year => 12,
            _ => 1,
        }
    }

    fn is_time_of_day(self) -> bool {
        matches!(
            self,
            Unit::Millisecond | Unit::Second | Unit::Minute | Unit::Hour
        )
    }
}

fn add_months(t: NaiveDateTime, months: i64) -> Option<NaiveDateTime> {
    let m = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 {
        t.checked_add_months(m)
    } else {
        t.checked_sub_months(m)
    }
}

fn add(t: NaiveDateTime, unit: Unit, n: i64) -> Option<NaiveDateTime> {
    match unit.fixed() {
        Some(step) => t.checked_add_signed(step.checked_mul(i32::try_from(n).ok()?)?),
        None => add_months(t, n.checked_mul(unit.months())?),
    }
}

/// Units to compute per row: one name for the whole column is parsed once.
fn units(function: &str, array: &ArrayRef) -> Result<Vec<Option<Unit>>> {
    let names = strings(array)?;
    let mut last: Option<(String, Unit)> = None;
    names
        .iter()
        .map(|name| {
            let Some(name) = name else { return Ok(None) };
            if let Some((n, u)) = &last
                && n == name
            {
                return Ok(Some(*u));
            }
            let unit = Unit::parse(function, name)?;
            last = Some((name.to_string(), unit));
            Ok(Some(unit))
        })
        .collect()
}

fn date_add(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let units = units("date_add", &args[0])?;
    let counts = cast(&args[1], &DataType::Int64)?;
    let counts = counts
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("date_add count".into()))?;
    let t = Temporal::read(&args[2])?;
    let mut out = Vec::with_capacity(units.len());
    for (i, unit) in units.iter().enumerate() {
        let (Some(unit), Some(local)) = (unit, t.local(i)) else {
            out.push(None);
            continue;
        };
        if counts.is_null(i) {
            out.push(None);
            continue;
        }
        if t.is_date && unit.is_time_of_day() {
            return Err(DataFusionError::Plan(
                format!("date_add: a date has no {unit:?}s; cast it to a timestamp first")
                    .to_lowercase(),
            ));
        }
        let moved = add(local, *unit, counts.value(i)).ok_or_else(|| {
            DataFusionError::Execution(format!(
                "date_add: {local} plus {} {unit:?}s is out of range",
                counts.value(i)
            ))
        })?;
        out.push(t.store(moved));
    }
    t.build(out)
}

/// Whole `unit`s from `a` to `b`, truncated toward zero (as Presto's `date_diff`).
fn diff(unit: Unit, a: NaiveDateTime, b: NaiveDateTime) -> Option<i64> {
    if let Some(step) = unit.fixed() {
        let micros = (b - a).num_microseconds()?;
        return Some(micros / step.num_microseconds()?);
    }
    if b < a {
        return diff(unit, b, a).map(|n| -n);
    }
    let months = (i64::from(b.year()) - i64::from(a.year())) * 12 + i64::from(b.month())
        - i64::from(a.month());
    // One month fewer when adding the estimate to `a` overshoots `b`.
    let whole = if add_months(a, months)? > b {
        months - 1
    } else {
        months
    };
    Some(whole / unit.months())
}

fn date_diff(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let units = units("date_diff", &args[0])?;
    let (a, b) = (Temporal::read(&args[1])?, Temporal::read(&args[2])?);
    let out: Int64Array = (0..units.len())
        .map(|i| diff(units[i]?, a.local(i)?, b.local(i)?))
        .collect();
    Ok(Arc::new(out))
}

fn per_row(args: &[ArrayRef], f: impl Fn(NaiveDateTime) -> i64) -> Result<ArrayRef> {
    let t = Temporal::read(&args[0])?;
    let out: Int64Array = (0..args[0].len()).map(|i| t.local(i).map(&f)).collect();
    Ok(Arc::new(out))
}

fn day_of_week(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    per_row(args, |t| i64::from(t.weekday().number_from_monday()))
}

fn day_of_year(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    per_row(args, |t| i64::from(t.ordinal()))
}

fn week_of_year(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    per_row(args, |t| i64::from(t.iso_week().week()))
}

fn to_iso8601(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let t = Temporal::read(&args[0])?;
    let out: StringArray = (0..args[0].len())
        .map(|i| {
            if t.is_date {
                return t.local(i).map(|d| d.format("%Y-%m-%d").to_string());
            }
            if t.zone.is_none() {
                return t
                    .local(i)
                    .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3f").to_string());
            }
            let zoned = t.zoned(i)?;
            let offset = zoned.offset().fix().local_minus_utc();
            let local = zoned.naive_local().format("%Y-%m-%dT%H:%M:%S%.3f");
            Some(if offset == 0 {
                format!("{local}Z")
            } else {
                format!("{local}{}", zoned.format("%:z"))
            })
        })
        .collect();
    Ok(Arc::new(out))
}

/// A Joda-Time pattern (Presto's `format_datetime`) as a chrono format string.
pub fn joda_to_chrono(pattern: &str) -> Result<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal text; '' is a single quote.
            let mut j = i + 1;
            if j < chars.len() && chars[j] == '\'' {
                out.push('\'');
                i = j + 1;
                continue;
            }
            while j < chars.len() && chars[j] != '\'' {
                push_literal(&mut out, chars[j]);
                j += 1;
            }
            i = j + 1;
            continue;
        }
        let mut run = 1;
        while i + run < chars.len() && chars[i + run] == c {
            run += 1;
        }
        i += run;
        let spec = match (c, run) {
            ('y' | 'Y' | 'x', 2) => "%y",
            ('y' | 'Y' | 'x', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('k', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1..=3) => "%3f",
            ('S', 4..=6) => "%6f",
            ('S', _) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('e', _) => "%u",
            ('w', _) => "%V",
            ('Z', 1) => "%z",
            ('Z', _) => "%:z",
            ('z', _) => "%Z",
            (c, _) if c.is_ascii_alphabetic() => {
                return Err(DataFusionError::Plan(format!(
                    "format_datetime: pattern letter '{c}' is not supported (in '{pattern}')"
                )));
            }
            (c, n) => {
                for _ in 0..n {
                    push_literal(&mut out, c);
                }
                continue;
            }
        };
        out.push_str(spec);
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

fn format_datetime(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let t = Temporal::read(&args[0])?;
    let patterns = strings(&args[1])?;
    let mut last: Option<(String, String)> = None;
    let mut out = Vec::with_capacity(args[0].len());
    for i in 0..args[0].len() {
        let pattern = (!patterns.is_null(i)).then(|| patterns.value(i));
        let (Some(value), Some(pattern)) = (t.zoned(i), pattern) else {
            out.push(None);
            continue;
        };
        if last.as_ref().is_none_or(|(p, _)| p != pattern) {
            last = Some((pattern.to_string(), joda_to_chrono(pattern)?));
        }
        let format = last.as_ref().map(|(_, f)| f.as_str()).unwrap_or_default();
        let mut text = String::new();
        write!(text, "{}", value.format(format)).map_err(|_| {
            DataFusionError::Execution(format!(
                "format_datetime: cannot format {value} with '{pattern}'"
            ))
        })?;
        out.push(Some(text));
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// A MySQL `date_format` pattern (Presto's `date_parse`) as a chrono format string.
pub fn mysql_to_chrono(pattern: &str) -> Result<String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            push_literal(&mut out, c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Err(DataFusionError::Plan(format!(
                "date_parse: pattern '{pattern}' ends with a lone %"
            )));
        };
        out.push_str(match spec {
            'Y' => "%Y",
            'y' => "%y",
            'm' | 'c' => "%m",
            'd' | 'e' => "%d",
            'H' | 'k' => "%H",
            'h' | 'I' | 'l' => "%I",
            'i' => "%M",
            's' | 'S' => "%S",
            'f' => "%6f",
            'p' => "%p",
            'M' => "%B",
            'b' => "%b",
            'W' => "%A",
            'a' => "%a",
            'j' => "%j",
            'T' => "%H:%M:%S",
            'r' => "%I:%M:%S %p",
            '%' => "%%",
            other => {
                return Err(DataFusionError::Plan(format!(
                    "date_parse: %{other} is not supported (in '{pattern}')"
                )));
            }
        });
    }
    Ok(out)
}

fn date_parse(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let texts = strings(&args[0])?;
    let patterns = strings(&args[1])?;
    let mut last: Option<(String, String)> = None;
    let mut out = Vec::with_capacity(texts.len());
    for (text, pattern) in texts.iter().zip(patterns.iter()) {
        let (Some(text), Some(pattern)) = (text, pattern) else {
            out.push(None);
            continue;
        };
        if last.as_ref().is_none_or(|(p, _)| p != pattern) {
            last = Some((pattern.to_string(), mysql_to_chrono(pattern)?));
        }
        let format = last.as_ref().map(|(_, f)| f.as_str()).unwrap_or_default();
        let parsed = parse_with_defaults(text, format).map_err(|e| {
            DataFusionError::Execution(format!(
                "date_parse: '{text}' does not match '{pattern}': {e}"
            ))
        })?;
        out.push(Some(parsed.and_utc().timestamp_micros()));
    }
    Ok(Arc::new(TimestampMicrosecondArray::from(out)))
}

/// `text` read with `format`; the fields it lacks are those of 1970-01-01 00:00:00 (as
/// MySQL's `str_to_date` and Presto's `date_parse` fill them).
fn parse_with_defaults(text: &str, format: &str) -> chrono::ParseResult<NaiveDateTime> {
    use chrono::format::{Parsed, StrftimeItems, parse};
    let mut parsed = Parsed::new();
    parse(&mut parsed, text, StrftimeItems::new(format))?;
    if parsed.year().is_none() && parsed.year_mod_100().is_none() {
        parsed.set_year(1970)?;
    }
    if parsed.month().is_none() && parsed.ordinal().is_none() {
        parsed.set_month(1)?;
    }
    if parsed.day().is_none() && parsed.ordinal().is_none() {
        parsed.set_day(1)?;
    }
    if parsed.hour_div_12().is_none() && parsed.hour_mod_12().is_none() {
        parsed.set_hour(0)?;
    }
    if parsed.minute().is_none() {
        parsed.set_minute(0)?;
    }
    if parsed.second().is_none() {
        parsed.set_second(0)?;
    }
    parsed.to_naive_datetime_with_offset(0)
}

/// An ISO 8601 timestamp; one without a zone is read as UTC.
fn parse_iso8601(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let naive = text.strip_suffix('Z').unwrap_or(text);
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(naive, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(Default::default()).and_utc())
}

fn from_iso8601_timestamp(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let texts = strings(&args[0])?;
    let mut out = Vec::with_capacity(texts.len());
    for text in texts.iter() {
        let Some(text) = text else {
            out.push(None);
            continue;
        };
        let t = parse_iso8601(text).ok_or_else(|| {
            DataFusionError::Execution(format!(
                "from_iso8601_timestamp: '{text}' is not an ISO 8601 timestamp"
            ))
        })?;
        out.push(Some(t.timestamp_micros()));
    }
    Ok(Arc::new(
        TimestampMicrosecondArray::from(out).with_timezone("UTC"),
    ))
}

fn from_iso8601_date(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let texts = strings(&args[0])?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)
        .ok_or_else(|| DataFusionError::Internal("epoch".into()))?;
    let mut out = Vec::with_capacity(texts.len());
    for text in texts.iter() {
        let Some(text) = text else {
            out.push(None);
            continue;
        };
        let d = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| {
            DataFusionError::Execution(format!(
                "from_iso8601_date: '{text}' is not an ISO 8601 date (YYYY-MM-DD)"
            ))
        })?;
        out.push(i32::try_from((d - epoch).num_days()).ok());
    }
    Ok(Arc::new(Date32Array::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn month_differences_count_whole_months_toward_zero() {
        assert_eq!(
            diff(
                Unit::Month,
                at("2024-01-31 00:00:00"),
                at("2024-02-29 00:00:00")
            ),
            Some(1)
        );
        assert_eq!(
            diff(
                Unit::Month,
                at("2024-01-15 12:00:00"),
                at("2024-02-15 11:59:59")
            ),
            Some(0)
        );
        assert_eq!(
            diff(
                Unit::Month,
                at("2024-02-15 11:59:59"),
                at("2024-01-15 12:00:00")
            ),
            Some(0)
        );
        assert_eq!(
            diff(
                Unit::Year,
                at("2020-03-01 00:00:00"),
                at("2024-02-29 00:00:00")
            ),
            Some(3)
        );
        assert_eq!(
            diff(
                Unit::Quarter,
                at("2024-01-01 00:00:00"),
                at("2024-07-01 00:00:00")
            ),
            Some(2)
        );
        assert_eq!(
            diff(
                Unit::Day,
                at("2024-01-02 00:00:00"),
                at("2024-01-01 00:00:01")
            ),
            Some(0)
        );
    }

    #[test]
    fn joda_patterns_translate() {
        assert_eq!(
            joda_to_chrono("yyyy-MM-dd HH:mm:ss.SSS").unwrap(),
            "%Y-%m-%d %H:%M:%S.%3f"
        );
        assert_eq!(
            joda_to_chrono("EEE, d MMM yyyy 'at' h a").unwrap(),
            "%a, %-d %b %Y at %-I %p"
        );
        assert!(joda_to_chrono("G").is_err());
    }
}
