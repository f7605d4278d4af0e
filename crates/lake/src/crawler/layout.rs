//! How a listing becomes tables: which objects are data, where each table's root is, and
//! what Hive partitions (`key=value` folders) each file sits in, with their types.
//!
//! Everything here is pure: it works on paths relative to the crawl root, so it is
//! exhaustively unit-tested without a store.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::catalog::PartitionType;

/// The value Hive writes for a NULL partition value.
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// Why a listed object is not data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A name (of the file or a folder above it) starting with `_` or `.` without `=`:
    /// `_SUCCESS`, `.crc` files, `_temporary/` trees, `_delta_log/`.
    Hidden,
    /// A file still being written (`._COPYING_`, `.tmp`, `.inprogress`).
    InProgress,
    /// A zero-byte file.
    Empty,
}

/// Decides whether an object (path relative to the crawl root) is a candidate data file.
pub fn classify(relative: &str, size: u64) -> Option<Skip> {
    let segments: Vec<&str> = relative.split('/').filter(|s| !s.is_empty()).collect();
    if segments
        .iter()
        .any(|s| (s.starts_with('_') || s.starts_with('.')) && !s.contains('='))
    {
        return Some(Skip::Hidden);
    }
    let name = segments.last().copied().unwrap_or("");
    if name.ends_with("._COPYING_") || name.ends_with(".tmp") || name.ends_with(".inprogress") {
        return Some(Skip::InProgress);
    }
    if size == 0 {
        return Some(Skip::Empty);
    }
    None
}

/// Splits a `key=value` folder name; the value is percent-decoded as Hive escapes it.
pub fn parse_partition_segment(segment: &str) -> Option<(String, Option<String>)> {
    let (key, value) = segment.split_once('=')?;
    if key.is_empty() {
        return None;
    }
    let value = percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .to_string();
    let value = (value != HIVE_NULL).then_some(value);
    Some((key.to_string(), value))
}

/// A table found in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    /// Folder of the table relative to the crawl root (`""` when the root is the table).
    pub root: String,
    /// Indices (into the input list) of the table's files.
    pub files: Vec<usize>,
}

#[derive(Default)]
struct Node {
    files: Vec<usize>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn all_files(&self, out: &mut Vec<usize>) {
        out.extend(&self.files);
        for child in self.children.values() {
            child.all_files(out);
        }
    }
}

/// How files are grouped into tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Like Glue's default: a folder whose children are data files or `key=value` folders
    /// is one table; otherwise each child folder is looked at in turn.
    Discover,
    /// Glue's table level: every folder `n` levels down is a table (1 is the crawl root,
    /// 2 its child folders, …), whatever is below it; files above that level are in none.
    Level(usize),
}

/// Groups data files (paths relative to the crawl root) into tables.
pub fn group_tables(relative_paths: &[String], grouping: Grouping) -> Vec<TableLayout> {
    let mut root = Node::default();
    for (i, path) in relative_paths.iter().enumerate() {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let Some((_, dirs)) = segments.split_last() else {
            continue;
        };
        let mut node = &mut root;
        for dir in dirs {
            node = node.children.entry((*dir).to_string()).or_default();
        }
        node.files.push(i);
    }
    let mut tables = Vec::new();
    match grouping {
        Grouping::Discover => {
            let shaped_like_a_table = |node: &Node, _| {
                !node.files.is_empty()
                    || node.children.keys().any(|k| k.contains('='))
                    || has_unnamed_partitions(node)
            };
            collect_tables(&root, String::new(), 0, &shaped_like_a_table, &mut tables);
        }
        Grouping::Level(level) => {
            let at_level = |_: &Node, depth: usize| depth + 1 >= level;
            collect_tables(&root, String::new(), 0, &at_level, &mut tables);
        }
    }
    tables
}

/// Walks down from `node` (at `depth`, 0 for the crawl root): the first folder on each
/// branch that `is_table` accepts becomes a table holding every file below it.
fn collect_tables(
    node: &Node,
    path: String,
    depth: usize,
    is_table: &dyn Fn(&Node, usize) -> bool,
    out: &mut Vec<TableLayout>,
) {
    if is_table(node, depth) {
        let mut files = Vec::new();
        node.all_files(&mut files);
        if !files.is_empty() {
            files.sort_unstable();
            out.push(TableLayout { root: path, files });
        }
        return;
    }
    for (name, child) in &node.children {
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}/{name}")
        };
        collect_tables(child, child_path, depth + 1, is_table, out);
    }
}

/// Depths (below `node`) at which files sit.
fn file_depths(node: &Node, depth: usize, out: &mut BTreeSet<usize>) {
    if !node.files.is_empty() {
        out.insert(depth);
    }
    for child in node.children.values() {
        file_depths(child, depth + 1, out);
    }
}

/// A folder name that looks like a partition value written without its key, as
/// Firehose's default `YYYY/MM/DD/HH/` prefixes are: digits, or a date.
fn is_unnamed_partition_value(name: &str) -> bool {
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())) || parse_date(name).is_some()
}

/// Whether `node` is a table partitioned by folders without `key=` (Glue names them
/// `partition_0`, `partition_1`, …): every folder down to the files looks like a value,
/// and every file sits at the same depth.
fn has_unnamed_partitions(node: &Node) -> bool {
    fn all_value_folders(node: &Node) -> bool {
        node.children
            .iter()
            .all(|(name, child)| is_unnamed_partition_value(name) && all_value_folders(child))
    }
    let mut depths = BTreeSet::new();
    file_depths(node, 0, &mut depths);
    !node.children.is_empty()
        && depths.len() == 1
        && !depths.contains(&0)
        && all_value_folders(node)
}

/// Where a file sits inside its table: its partition keys and values, and its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePlacement {
    pub keys: Vec<String>,
    pub values: Vec<Option<String>>,
    /// Folder of the file relative to the table root (`""` at the root).
    pub folder: String,
}

/// Reads the partition keys and values of a file from its path relative to the table root.
pub fn place_file(relative_to_table: &str) -> FilePlacement {
    let segments: Vec<&str> = relative_to_table
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let dirs = segments.split_last().map(|(_, d)| d).unwrap_or(&[]);
    let mut keys = Vec::new();
    let mut values = Vec::new();
    if !dirs.is_empty() && dirs.iter().all(|d| is_unnamed_partition_value(d)) {
        // `2024/01/05/13/`: positional partitions, named as Glue names them.
        for (i, dir) in dirs.iter().enumerate() {
            keys.push(format!("partition_{i}"));
            values.push(Some((*dir).to_string()));
        }
    }
    for dir in dirs {
        if let Some((k, v)) = parse_partition_segment(dir) {
            keys.push(k);
            values.push(v);
        }
    }
    FilePlacement {
        keys,
        values,
        folder: dirs.join("/"),
    }
}

/// Infers a partition column's type from every observed value (NULLs ignored): int64
/// when all are integers, date when all are real `YYYY-MM-DD` dates, timestamp when all
/// are ISO timestamps, else string.
pub fn infer_partition_type<'a>(
    values: impl IntoIterator<Item = &'a str> + Clone,
) -> PartitionType {
    let all = |f: fn(&str) -> bool| values.clone().into_iter().all(f);
    if values.clone().into_iter().next().is_none() {
        return PartitionType::String;
    }
    if all(|v| v.parse::<i64>().is_ok()) {
        PartitionType::Int64
    } else if all(|v| parse_date(v).is_some()) {
        PartitionType::Date
    } else if all(|v| parse_timestamp(v).is_some()) {
        PartitionType::Timestamp
    } else {
        PartitionType::String
    }
}

/// Parses a strict `YYYY-MM-DD` date.
pub fn parse_date(v: &str) -> Option<NaiveDate> {
    if v.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()
}

/// Parses an ISO-8601 timestamp (`T` or space separator, optional fraction, optional
/// zone); a zoned value is converted to UTC.
pub fn parse_timestamp(v: &str) -> Option<NaiveDateTime> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(v) {
        return Some(dt.naive_utc());
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|fmt| NaiveDateTime::parse_from_str(v, fmt).ok())
}

/// Turns a folder name into a table name: lower case, `[a-z0-9_]` only.
pub fn table_name_from(segment: &str) -> String {
    let mut name: String = segment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, 't');
    }
    name
}

/// A table format Tarn does not crawl as loose Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ForeignFormat {
    Delta,
    Iceberg,
}

impl std::fmt::Display for ForeignFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForeignFormat::Delta => "Delta Lake",
            ForeignFormat::Iceberg => "Iceberg",
        })
    }
}

/// Folders (relative to the crawl root, `""` for the root itself) that hold a Delta or
/// Iceberg table, judged on the whole listing: a Delta table has a commit
/// (`_delta_log/00000000000000000000.json`), a checkpoint or `_last_checkpoint` in its log
/// (an empty `_delta_log` is not a table); an Iceberg table has `metadata/*.metadata.json`
/// or `metadata/version-hint.text`. Their data files must not be read as loose Parquet:
/// they include files the table has removed.
pub fn foreign_table_roots<'a>(
    relatives: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, ForeignFormat)> {
    let mut roots: Vec<(String, ForeignFormat)> = Vec::new();
    for path in relatives {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let (root, folder) = dir.rsplit_once('/').unwrap_or(("", dir));
        let format = match folder {
            "_delta_log" if is_delta_log_entry(name) => ForeignFormat::Delta,
            "metadata" if name.ends_with(".metadata.json") || name == "version-hint.text" => {
                ForeignFormat::Iceberg
            }
            _ => continue,
        };
        if !roots.iter().any(|(r, _)| r == root) {
            roots.push((root.to_string(), format));
        }
    }
    roots.sort();
    roots
}

/// Whether `name`, in a `_delta_log/` folder, makes that folder a Delta table's log.
pub fn is_delta_log_entry(name: &str) -> bool {
    name == "_last_checkpoint" || delta_log_version(name).is_some()
}

/// The version whose commit (`<20 digits>.json`) or checkpoint
/// (`<20 digits>.checkpoint….parquet`) a `_delta_log/` file is.
pub fn delta_log_version(name: &str) -> Option<u64> {
    // `get`, not slicing: a name with multi-byte characters is simply not a log file.
    let (digits, rest) = (name.get(..20)?, name.get(20..)?);
    let is_log = rest == ".json" || (rest.starts_with(".checkpoint") && rest.ends_with(".parquet"));
    if !is_log || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `relative` lies in the folder `root` (`""` is the crawl root: everything).
pub fn is_under(relative: &str, root: &str) -> bool {
    root.is_empty()
        || relative
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn markers_temporary_and_hidden_files_are_skipped() {
        assert_eq!(classify("events/_SUCCESS", 10), Some(Skip::Hidden));
        assert_eq!(
            classify("events/.part-1.parquet.crc", 10),
            Some(Skip::Hidden)
        );
        assert_eq!(
            classify("events/_temporary/0/part-1.parquet", 10),
            Some(Skip::Hidden)
        );
        assert_eq!(
            classify("events/part.parquet._COPYING_", 10),
            Some(Skip::InProgress)
        );
        assert_eq!(classify("events/part.parquet", 0), Some(Skip::Empty));
        assert_eq!(classify("events/year=2024/part.parquet", 10), None);
        // A `_` name that is a partition folder is data.
        assert_eq!(classify("events/_year=2024/part.parquet", 10), None);
    }

    #[test]
    fn partition_segments_decode_and_null() {
        assert_eq!(
            parse_partition_segment("year=2024"),
            Some(("year".into(), Some("2024".into())))
        );
        assert_eq!(
            parse_partition_segment("ts=2024-01-05 13%3A00%3A00"),
            Some(("ts".into(), Some("2024-01-05 13:00:00".into())))
        );
        assert_eq!(
            parse_partition_segment("dt=__HIVE_DEFAULT_PARTITION__"),
            Some(("dt".into(), None))
        );
        assert_eq!(parse_partition_segment("plain"), None);
        assert_eq!(parse_partition_segment("=x"), None);
    }

    #[test]
    fn a_table_level_makes_every_folder_at_that_depth_a_table() {
        let files = paths(&[
            "top.parquet",
            "web/clicks/2024/01/a.parquet",
            "web/clicks/2024/02/b.parquet",
            "web/views/x.parquet",
            "app/events/dt=2024-01-01/e.parquet",
        ]);
        let roots = |grouping| -> Vec<(String, Vec<usize>)> {
            group_tables(&files, grouping)
                .into_iter()
                .map(|t| (t.root, t.files))
                .collect()
        };
        assert_eq!(
            roots(Grouping::Level(3)),
            vec![
                ("app/events".to_string(), vec![4]),
                ("web/clicks".to_string(), vec![1, 2]),
                ("web/views".to_string(), vec![3]),
            ]
        );
        // Level 2: one table per top folder; the file above that level is in none.
        assert_eq!(
            roots(Grouping::Level(2)),
            vec![
                ("app".to_string(), vec![4]),
                ("web".to_string(), vec![1, 2, 3])
            ]
        );
        assert_eq!(
            roots(Grouping::Level(1)),
            vec![(String::new(), vec![0, 1, 2, 3, 4])]
        );
    }

    #[test]
    fn root_with_partition_folders_is_one_table() {
        let t = group_tables(
            &paths(&[
                "year=2024/month=01/a.parquet",
                "year=2024/month=02/b.parquet",
            ]),
            Grouping::Discover,
        );
        assert_eq!(
            t,
            vec![TableLayout {
                root: "".into(),
                files: vec![0, 1]
            }]
        );
    }

    #[test]
    fn each_child_folder_is_a_table_and_nesting_recurses() {
        let t = group_tables(
            &paths(&[
                "events/year=2024/a.parquet",
                "users/u.parquet",
                "raw/sales/s1.parquet",
                "raw/sales/s2.parquet",
                "events/year=2025/b.parquet",
            ]),
            Grouping::Discover,
        );
        assert_eq!(
            t,
            vec![
                TableLayout {
                    root: "events".into(),
                    files: vec![0, 4]
                },
                TableLayout {
                    root: "raw/sales".into(),
                    files: vec![2, 3]
                },
                TableLayout {
                    root: "users".into(),
                    files: vec![1]
                },
            ]
        );
    }

    #[test]
    fn forced_root_table_takes_everything() {
        let t = group_tables(&paths(&["a/x.parquet", "b/y.parquet"]), Grouping::Level(1));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].files, vec![0, 1]);
    }

    #[test]
    fn place_file_reads_keys_in_order() {
        let p = place_file("year=2024/month=01/day=05/hour=13/part-0.parquet");
        assert_eq!(p.keys, vec!["year", "month", "day", "hour"]);
        assert_eq!(
            p.values,
            vec![
                Some("2024".to_string()),
                Some("01".into()),
                Some("05".into()),
                Some("13".into())
            ]
        );
        assert_eq!(p.folder, "year=2024/month=01/day=05/hour=13");
        assert_eq!(place_file("part-0.parquet").folder, "");
    }

    #[test]
    fn partition_types_are_inferred_from_every_value() {
        assert_eq!(
            infer_partition_type(["01", "12", "-3"]),
            PartitionType::Int64
        );
        assert_eq!(
            infer_partition_type(["2024-01-05", "2024-02-29"]),
            PartitionType::Date
        );
        // 2023 is not a leap year: not a real date, so the column is a string.
        assert_eq!(
            infer_partition_type(["2024-01-05", "2023-02-29"]),
            PartitionType::String
        );
        assert_eq!(
            infer_partition_type(["2024-01-05 13:00:00", "2024-01-05T14:30:00Z"]),
            PartitionType::Timestamp
        );
        // One non-integer among many integers makes the column a string (no sampling).
        let mut many: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        many.push("x1".into());
        assert_eq!(
            infer_partition_type(many.iter().map(String::as_str)),
            PartitionType::String
        );
        assert_eq!(
            infer_partition_type(Vec::<&str>::new()),
            PartitionType::String
        );
    }

    #[test]
    fn table_names_are_sanitised() {
        assert_eq!(table_name_from("Web-Events"), "web_events");
        assert_eq!(table_name_from("2024"), "t2024");
    }

    #[test]
    fn delta_and_iceberg_tables_are_recognised_from_the_whole_listing() {
        let listing = [
            "sales/part-0.parquet",
            "sales/_delta_log/00000000000000000000.json",
            "sales/_delta_log/00000000000000000010.checkpoint.parquet",
            "empty_log/_delta_log/README",
            "empty_log/part-0.parquet",
            "ice/data/00000-0.parquet",
            "ice/metadata/v2.metadata.json",
            "plain/part-0.parquet",
        ];
        assert_eq!(
            foreign_table_roots(listing),
            vec![
                ("ice".to_string(), ForeignFormat::Iceberg),
                ("sales".to_string(), ForeignFormat::Delta)
            ]
        );
        assert_eq!(
            foreign_table_roots(["_delta_log/_last_checkpoint", "x.parquet"]),
            vec![(String::new(), ForeignFormat::Delta)]
        );
        assert_eq!(delta_log_version("00000000000000000012.json"), Some(12));
        assert_eq!(
            delta_log_version("00000000000000000010.checkpoint.0000000001.0000000002.parquet"),
            Some(10)
        );
        assert_eq!(delta_log_version("00000000000000000012.crc"), None);
        // Multi-byte names are not log files (and do not split mid-character).
        assert_eq!(delta_log_version("ééééééééééééééé.json"), None);
        assert!(is_under("sales/part-0.parquet", "sales"));
        assert!(!is_under("salesman/part-0.parquet", "sales"));
        assert!(is_under("anything", ""));
    }

    #[test]
    fn firehose_default_prefixes_are_one_table_with_unnamed_partitions() {
        let paths: Vec<String> = [
            "events/2024/01/05/13/a.parquet",
            "events/2024/01/05/14/b.parquet",
            "events/2024/01/06/00/c.parquet",
            "users/u.parquet",
            "mixed/2024/a.parquet",
            "mixed/2024/01/b.parquet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let roots: Vec<String> = group_tables(&paths, Grouping::Discover)
            .into_iter()
            .map(|t| t.root)
            .collect();
        // `mixed` has files at two depths: not one partitioned table, so its folders are
        // looked at in turn (as before).
        assert_eq!(roots, vec!["events", "mixed/2024", "users"]);
        let placed = place_file("2024/01/05/13/a.parquet");
        assert_eq!(
            placed.keys,
            vec!["partition_0", "partition_1", "partition_2", "partition_3"]
        );
        assert_eq!(placed.values[3].as_deref(), Some("13"));
        assert!(place_file("year=2024/a.parquet").keys == vec!["year"]);
        assert!(place_file("data/a.parquet").keys.is_empty());
    }
}
