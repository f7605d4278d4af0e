//! What Tarn tells Flight SQL clients about itself: the full `GetSqlInfo` set and the
//! `GetXdbcTypeInfo` table. JDBC asks for all of it once, caches it, and fails on any id it
//! expects but does not find, so every id the specification defines is answered.

use std::collections::HashMap;
use std::sync::LazyLock;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, SqlSupportsConvert, SqlTransactionIsolationLevel, XdbcDataType,
    XdbcDatetimeSubcode,
};

const KEYWORDS: &[&str] = &[
    "ANALYZE",
    "ARRAY",
    "ASOF",
    "COPY",
    "DATABASE",
    "DATABASES",
    "DESCRIBE",
    "EXPLAIN",
    "EXTERNAL",
    "FORMAT",
    "LIMIT",
    "LOCATION",
    "MATERIALIZED",
    "OFFSET",
    "PARQUET",
    "PARTITIONED",
    "PARTITIONS",
    "QUALIFY",
    "REPAIR",
    "SHOW",
    "STORED",
    "STRUCT",
    "TABLES",
    "UNNEST",
    "VIEW",
];
const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "cot", "degrees", "exp",
    "floor", "gcd", "lcm", "ln", "log", "log10", "log2", "mod", "pi", "power", "radians", "random",
    "round", "signum", "sin", "sqrt", "tan", "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "octet_length",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "translate",
    "trim",
    "upper",
];
const SYSTEM_FUNCTIONS: &[&str] = &["arrow_typeof", "coalesce", "nullif", "version"];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_timestamp_millis",
    "to_timestamp_seconds",
    "to_unixtime",
];

/// Tarn's `GetSqlInfo` answers.
pub static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Tarn");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerSubstraitMinVersion, "");
    b.append(SqlInfo::FlightSqlServerSubstraitMaxVersion, "");
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    // Conversions CAST supports, from each numeric/string type to the others.
    let convertible = [
        SqlSupportsConvert::SqlConvertBigint,
        SqlSupportsConvert::SqlConvertBit,
        SqlSupportsConvert::SqlConvertChar,
        SqlSupportsConvert::SqlConvertDate,
        SqlSupportsConvert::SqlConvertDecimal,
        SqlSupportsConvert::SqlConvertFloat,
        SqlSupportsConvert::SqlConvertInteger,
        SqlSupportsConvert::SqlConvertNumeric,
        SqlSupportsConvert::SqlConvertReal,
        SqlSupportsConvert::SqlConvertSmallint,
        SqlSupportsConvert::SqlConvertTimestamp,
        SqlSupportsConvert::SqlConvertTinyint,
        SqlSupportsConvert::SqlConvertVarchar,
    ];
    let targets: Vec<i32> = convertible.iter().map(|c| *c as i32).collect();
    let convert: HashMap<i32, Vec<i32>> = convertible
        .iter()
        .map(|c| (*c as i32, targets.clone()))
        .collect();
    b.append(SqlInfo::SqlSupportsConvert, &convert);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportedGroupBy, 0b11i32); // unrelated | beyond select
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSupportedGrammar, 0b011i32); // minimum | core
    b.append(SqlInfo::SqlAnsi92SupportedLevel, 0b011i32); // entry | intermediate
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(SqlInfo::SqlOuterJoinsSupportLevel, 2i32); // full outer joins
    b.append(SqlInfo::SqlSchemaTerm, "database");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0b001i32); // in data manipulation
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0b001i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlSupportedSubqueries, 0b1111i32); // comparisons, exists, in, quantified
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlSupportedUnions, 0b11i32); // union | union all
    for id in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(id, 0i64); // 0: no limit known
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    b.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i32,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    b.append(SqlInfo::SqlSupportedResultSetTypes, 0b10i32); // forward only
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        0b10i32,
    ); // read only
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0i32,
    );
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    // Every value above has a type the builder accepts; a failure here is a bug in this
    // table, caught by the unit test below on every build.
    b.build().expect("static SQL info is well-formed")
});

fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quoted: bool,
    subcode: Option<XdbcDatetimeSubcode>,
    radix: Option<i32>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: quoted.then(|| "'".into()),
        literal_suffix: quoted.then(|| "'".into()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: radix.map(|_| false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: subcode,
        num_prec_radix: radix,
        interval_precision: None,
    }
}

/// Tarn's `GetXdbcTypeInfo` table: the SQL types its results carry.
pub static XDBC_INFO: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    use XdbcDataType as T;
    let mut b = XdbcTypeInfoDataBuilder::new();
    for info in [
        xdbc("BOOLEAN", T::XdbcBit, Some(1), false, None, None),
        xdbc("TINYINT", T::XdbcTinyint, Some(3), false, None, Some(10)),
        xdbc("SMALLINT", T::XdbcSmallint, Some(5), false, None, Some(10)),
        xdbc("INTEGER", T::XdbcInteger, Some(10), false, None, Some(10)),
        xdbc("BIGINT", T::XdbcBigint, Some(19), false, None, Some(10)),
        xdbc("REAL", T::XdbcReal, Some(24), false, None, Some(2)),
        xdbc("FLOAT", T::XdbcFloat, Some(24), false, None, Some(2)),
        xdbc("DOUBLE", T::XdbcDouble, Some(53), false, None, Some(2)),
        xdbc("DECIMAL", T::XdbcDecimal, Some(38), false, None, Some(10)),
        xdbc("VARCHAR", T::XdbcVarchar, None, true, None, None),
        xdbc("VARBINARY", T::XdbcVarbinary, None, true, None, None),
        // DATE has ODBC datetime subcode 1, which the protocol names "Year".
        xdbc(
            "DATE",
            T::XdbcDate,
            Some(10),
            true,
            Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            None,
        ),
        xdbc(
            "TIME",
            T::XdbcTime,
            Some(18),
            true,
            Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
            None,
        ),
        xdbc(
            "TIMESTAMP",
            T::XdbcTimestamp,
            Some(29),
            true,
            Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            None,
        ),
        xdbc("INTERVAL", T::XdbcInterval, None, true, None, None),
    ] {
        b.append(info);
    }
    b.build().expect("static XDBC type info is well-formed")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_info_answers_every_defined_id() {
        let all = SQL_INFO.record_batch(std::iter::empty::<u32>()).unwrap();
        // Every SqlInfo id the Flight SQL specification defines (0..=11, 100, 101, 500..=576).
        let expected = 12 + 2 + 77;
        assert_eq!(all.num_rows(), expected);
        let xdbc = XDBC_INFO.record_batch(None).unwrap();
        assert_eq!(xdbc.num_rows(), 15);
    }
}
