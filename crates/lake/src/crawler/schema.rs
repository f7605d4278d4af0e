//! Merging file schemas into one table schema, by column name.
//!
//! Columns are matched by name, never by position. A column missing from some files is
//! nullable. Integers widen along int8 → int16 → int32 → int64 (and unsigned types into a
//! signed type wide enough), floats along float16 → float32 → float64; string and binary
//! encodings (plain, large, view) unify. Anything else that differs is a conflict, reported
//! with both files named.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The result of trying to add one file's schema to a table schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub column: String,
    pub table_type: DataType,
    pub file_type: DataType,
    /// The file that first gave the column its table type (when known).
    pub established_by: Option<String>,
}

impl Conflict {
    /// A message that names the column, both types and both files, and what to do.
    pub fn describe(&self, file: &str) -> String {
        let origin = self
            .established_by
            .as_deref()
            .map(|f| format!(" (as in '{f}')"))
            .unwrap_or_default();
        format!(
            "column '{}' is {} in '{}' but {} in the table{}; the types cannot be widened into \
             one, so the file was left out: rewrite it with a compatible type or crawl it as \
             another table",
            self.column, self.file_type, file, self.table_type, origin
        )
    }
}

/// A table schema being built from file schemas, remembering which file set each column.
#[derive(Debug, Clone, Default)]
pub struct SchemaMerger {
    fields: Vec<Field>,
    origins: Vec<Option<String>>,
    files_seen: usize,
    /// Text files (CSV, JSON): types were guessed from a sample, so files that disagree
    /// widen to the wider number or to text instead of conflicting.
    lenient: bool,
}

fn rank_signed(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::Int8 => 1,
        DataType::Int16 => 2,
        DataType::Int32 => 3,
        DataType::Int64 => 4,
        _ => return None,
    })
}

fn rank_unsigned(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::UInt8 => 1,
        DataType::UInt16 => 2,
        DataType::UInt32 => 3,
        DataType::UInt64 => 4,
        _ => return None,
    })
}

fn rank_float(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::Float16 => 1,
        DataType::Float32 => 2,
        DataType::Float64 => 3,
        _ => return None,
    })
}

fn signed_of_rank(r: u8) -> DataType {
    match r {
        1 => DataType::Int8,
        2 => DataType::Int16,
        3 => DataType::Int32,
        _ => DataType::Int64,
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// The narrowest type both `a` and `b` convert to without loss, if there is one.
pub fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (DataType::Null, other) | (other, DataType::Null) => return Some(other.clone()),
        _ => {}
    }
    if let (Some(x), Some(y)) = (rank_signed(a), rank_signed(b)) {
        return Some(signed_of_rank(x.max(y)));
    }
    if let (Some(x), Some(y)) = (rank_unsigned(a), rank_unsigned(b)) {
        return Some(if x >= y { a.clone() } else { b.clone() });
    }
    // An unsigned integer fits a signed one of twice its width.
    let mixed = |s: &DataType, u: &DataType| -> Option<DataType> {
        let (s, u) = (rank_signed(s)?, rank_unsigned(u)?);
        if u == 4 {
            return None;
        }
        Some(signed_of_rank(s.max(u + 1)))
    };
    if let Some(t) = mixed(a, b).or_else(|| mixed(b, a)) {
        return Some(t);
    }
    if let (Some(x), Some(y)) = (rank_float(a), rank_float(b)) {
        return Some(if x >= y { a.clone() } else { b.clone() });
    }
    if is_string(a) && is_string(b) {
        return Some(DataType::Utf8);
    }
    if is_binary(a) && is_binary(b) {
        return Some(DataType::Binary);
    }
    match (a, b) {
        (DataType::Timestamp(ua, za), DataType::Timestamp(ub, zb)) if za == zb => {
            // Finer unit wins: a coarser value is exactly representable in it.
            Some(DataType::Timestamp(
                if ua > ub { *ua } else { *ub },
                za.clone(),
            ))
        }
        (DataType::Date32, DataType::Date64) | (DataType::Date64, DataType::Date32) => {
            Some(DataType::Date32)
        }
        _ => None,
    }
}

impl SchemaMerger {
    /// Starts from an existing table schema (a re-crawl keeps its columns and order).
    pub fn from_schema(schema: &Schema) -> Self {
        Self {
            fields: schema.fields().iter().map(|f| f.as_ref().clone()).collect(),
            origins: vec![None; schema.fields().len()],
            files_seen: 0,
            lenient: false,
        }
    }

    /// Merges guessed types (CSV, JSON): disagreements widen instead of conflicting.
    pub fn lenient(mut self) -> Self {
        self.lenient = true;
        self
    }

    /// Checks whether `file_schema` fits the table; when it does, widens the table schema
    /// to take it in. On a conflict nothing changes.
    pub fn add(&mut self, file: &str, file_schema: &Schema) -> Result<(), Conflict> {
        let mut updates: Vec<(usize, DataType)> = Vec::new();
        let mut additions: Vec<Field> = Vec::new();
        for field in file_schema.fields() {
            match self.fields.iter().position(|f| f.name() == field.name()) {
                Some(i) => {
                    let current = self.fields[i].data_type();
                    match widen(current, field.data_type()) {
                        Some(t) if &t == current => {}
                        Some(t) => updates.push((i, t)),
                        None if self.lenient => {
                            updates.push((i, text_widen(current, field.data_type())))
                        }
                        None => {
                            return Err(Conflict {
                                column: field.name().clone(),
                                table_type: current.clone(),
                                file_type: field.data_type().clone(),
                                established_by: self.origins[i].clone(),
                            });
                        }
                    }
                }
                None => {
                    // New column: nullable unless every file so far had it (none did).
                    let nullable = field.is_nullable() || self.files_seen > 0;
                    additions.push(
                        Field::new(field.name(), field.data_type().clone(), nullable)
                            .with_metadata(field.metadata().clone()),
                    );
                }
            }
        }
        for (i, t) in updates {
            self.fields[i] = self.fields[i].clone().with_data_type(t);
            self.origins[i] = Some(file.to_string());
        }
        // A table column the file lacks reads as NULL from it.
        for f in self.fields.iter_mut() {
            if !f.is_nullable() && file_schema.field_with_name(f.name()).is_err() {
                *f = f.clone().with_nullable(true);
            }
        }
        for f in self.fields.iter_mut() {
            if let Ok(ff) = file_schema.field_with_name(f.name())
                && ff.is_nullable()
                && !f.is_nullable()
            {
                *f = f.clone().with_nullable(true);
            }
        }
        for f in additions {
            self.fields.push(f);
            self.origins.push(Some(file.to_string()));
        }
        self.files_seen += 1;
        Ok(())
    }

    /// The merged schema.
    pub fn finish(self) -> SchemaRef {
        Arc::new(Schema::new(self.fields))
    }
}

/// The type a text table's column takes when its files disagree: the wider number, or text.
pub fn text_widen(a: &DataType, b: &DataType) -> DataType {
    if let Some(t) = widen(a, b) {
        return t;
    }
    let numeric = |t: &DataType| t.is_integer() || t.is_floating();
    if numeric(a) && numeric(b) {
        DataType::Float64
    } else {
        DataType::Utf8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    fn schema(cols: &[(&str, DataType, bool)]) -> Schema {
        Schema::new(
            cols.iter()
                .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn crawl_widens_int32_to_int64_and_float32_to_float64() {
        let mut m = SchemaMerger::default();
        m.add(
            "a",
            &schema(&[
                ("n", DataType::Int32, false),
                ("x", DataType::Float32, true),
            ]),
        )
        .unwrap();
        m.add(
            "b",
            &schema(&[
                ("n", DataType::Int64, false),
                ("x", DataType::Float64, true),
            ]),
        )
        .unwrap();
        let s = m.finish();
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).data_type(), &DataType::Float64);
        assert!(!s.field(0).is_nullable());
    }

    #[test]
    fn columns_merge_by_name_not_position_and_missing_ones_are_nullable() {
        let mut m = SchemaMerger::default();
        m.add(
            "a",
            &schema(&[
                ("id", DataType::Int64, false),
                ("name", DataType::Utf8, false),
            ]),
        )
        .unwrap();
        m.add(
            "b",
            &schema(&[
                ("name", DataType::Utf8View, false),
                ("id", DataType::Int64, false),
                ("extra", DataType::Boolean, false),
            ]),
        )
        .unwrap();
        let s = m.finish();
        let names: Vec<_> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["id", "name", "extra"]);
        assert_eq!(s.field(1).data_type(), &DataType::Utf8);
        assert!(!s.field(0).is_nullable());
        assert!(s.field(2).is_nullable(), "extra is missing from file a");

        let mut m = SchemaMerger::default();
        m.add(
            "a",
            &schema(&[
                ("id", DataType::Int64, false),
                ("gone", DataType::Utf8, false),
            ]),
        )
        .unwrap();
        m.add("b", &schema(&[("id", DataType::Int64, false)]))
            .unwrap();
        assert!(
            m.finish().field(1).is_nullable(),
            "gone is missing from file b"
        );
    }

    #[test]
    fn incompatible_change_is_a_conflict_naming_both_files() {
        let mut m = SchemaMerger::default();
        m.add(
            "lake/a.parquet",
            &schema(&[("score", DataType::Int64, true)]),
        )
        .unwrap();
        let c = m
            .add(
                "lake/b.parquet",
                &schema(&[("score", DataType::Utf8, true)]),
            )
            .unwrap_err();
        let msg = c.describe("lake/b.parquet");
        assert!(msg.contains("'score'"), "{msg}");
        assert!(msg.contains("lake/a.parquet"), "{msg}");
        assert!(msg.contains("lake/b.parquet"), "{msg}");
        // Nothing changed on conflict.
        assert_eq!(m.finish().field(0).data_type(), &DataType::Int64);
    }

    #[test]
    fn narrowing_and_unsigned_rules() {
        assert_eq!(
            widen(&DataType::Int64, &DataType::Int8),
            Some(DataType::Int64)
        );
        assert_eq!(
            widen(&DataType::UInt16, &DataType::Int16),
            Some(DataType::Int32)
        );
        assert_eq!(widen(&DataType::UInt64, &DataType::Int64), None);
        assert_eq!(widen(&DataType::Int64, &DataType::Float64), None);
        assert_eq!(
            widen(
                &DataType::Timestamp(TimeUnit::Millisecond, None),
                &DataType::Timestamp(TimeUnit::Microsecond, None)
            ),
            Some(DataType::Timestamp(TimeUnit::Microsecond, None))
        );
        assert_eq!(
            widen(
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                &DataType::Timestamp(TimeUnit::Microsecond, None)
            ),
            None
        );
    }

    #[test]
    fn text_columns_widen_to_the_wider_number_or_to_text() {
        assert_eq!(
            text_widen(&DataType::Int64, &DataType::Float64),
            DataType::Float64
        );
        assert_eq!(
            text_widen(&DataType::Int64, &DataType::Utf8),
            DataType::Utf8
        );
    }
}
