//! The Flight SQL service through the Rust `FlightSqlServiceClient`.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Env, TestServer, events_v2, firehose_lake, render, write_parquet};

async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> (Arc<Schema>, Vec<RecordBatch>) {
    let advertised: Schema = info.clone().try_decode_schema().unwrap();
    let mut batches = Vec::new();
    let mut schema = None;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("endpoint has a ticket");
        let mut stream = client.do_get(ticket).await.unwrap();
        while let Some(batch) = stream.try_next().await.unwrap() {
            batches.push(batch);
        }
        schema = stream.schema().cloned();
    }
    let schema = schema.expect("the stream carried a schema");
    assert_eq!(
        schema.as_ref(),
        &advertised,
        "DoGet schema equals the advertised schema"
    );
    (schema, batches)
}

async fn served() -> (Env, TestServer) {
    let env = Env::new().await;
    firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let server = TestServer::start(env.engine.clone()).await;
    (env, server)
}

#[tokio::test]
async fn statement_query_streams_the_advertised_schema_without_views() {
    let (_env, server) = served().await;
    let mut client = server.client().await;
    let info = client
        .execute(
            "SELECT kind, count(*) AS n, max(value) AS top FROM events GROUP BY kind ORDER BY kind"
                .into(),
            None,
        )
        .await
        .unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Utf8,
        "views are cast to Utf8"
    );
    assert!(schema.fields().iter().all(|f| f.is_nullable()));
    assert_eq!(
        render(&batches),
        vec![
            vec!["buy", "2", "20.0"],
            vec!["click", "3", "3.25"],
            vec!["view", "4", "4.0"]
        ]
    );
}

#[tokio::test]
async fn empty_result_keeps_its_schema() {
    let (_env, server) = served().await;
    let mut client = server.client().await;
    let info = client
        .execute("SELECT user_id, name FROM users WHERE false".into(), None)
        .await
        .unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.fields().len(), 2);
    assert_eq!(schema.field(1).name(), "name");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

#[tokio::test]
async fn prepared_statement_binds_parameters_per_row() {
    let (_env, server) = served().await;
    let mut client = server.client().await;
    let mut prepared = client
        .prepare(
            "SELECT name FROM users WHERE user_id = ? ORDER BY name".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "name");
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![3, 1]))],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(
        render(&batches),
        vec![vec!["cy"], vec!["ann"]],
        "one execution per row"
    );
    prepared.close().await.unwrap();
}

#[tokio::test]
async fn errors_map_to_statuses_a_person_can_act_on_and_the_server_lives_on() {
    let (_env, server) = served().await;
    let mut client = server.client().await;

    let err = client
        .execute("SELECT * FROM no_such_table".into(), None)
        .await
        .unwrap_err();
    let status = tonic_status(err);
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("no_such_table"),
        "{}",
        status.message()
    );

    let err = client.execute("SELEC 1".into(), None).await.unwrap_err();
    let status = tonic_status(err);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("Line: 1, Column: 1"),
        "{}",
        status.message()
    );

    let err = client
        .execute("SELECT nope FROM users".into(), None)
        .await
        .unwrap_err();
    let status = tonic_status(err);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("nope"), "{}", status.message());

    let err = client
        .execute("CREATE TABLE x (a int)".into(), None)
        .await
        .unwrap_err();
    assert_eq!(tonic_status(err).code(), Code::InvalidArgument);

    // A forged ticket is refused, not a crash.
    let err = client
        .do_get(arrow_flight::Ticket::new(b"garbage".to_vec()))
        .await
        .expect_err("garbage ticket rejected");
    let status = tonic_status(err);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not issued by this server"),
        "{status:?}"
    );

    // Still serving.
    let info = client
        .execute("SELECT count(*) FROM users".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(render(&batches), vec![vec!["5"]]);
    server.stop().await.unwrap();
}

fn tonic_status(err: arrow_flight::error::FlightError) -> tonic::Status {
    match err {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test]
async fn metadata_commands_list_everything_without_filters() {
    let (_env, server) = served().await;
    let mut client = server.client().await;
    // Handshake succeeds (no authentication yet), as JDBC and ADBC require.
    client.handshake("analyst", "secret").await.unwrap();

    let info = client.get_catalogs().await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(render(&batches), vec![vec!["tarn"]]);

    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    let schemas: Vec<String> = render(&batches).into_iter().map(|r| r[1].clone()).collect();
    assert!(schemas.contains(&"default".to_string()), "{schemas:?}");

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("ev%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.fields().len(), 5, "include_schema adds table_schema");
    let rows = render(&batches);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(&rows[0][..4], &["tarn", "default", "events", "TABLE"]);
    let batch = &batches[0];
    let bytes = batch
        .column(4)
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap()
        .value(0);
    let table_schema = arrow::ipc::convert::try_schema_from_ipc_buffer(bytes).unwrap();
    assert_eq!(
        table_schema.field_with_name("kind").unwrap().data_type(),
        &DataType::Utf8
    );
    assert!(
        table_schema.field_with_name("hour").is_ok(),
        "partition columns are listed"
    );

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        })
        .await
        .unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.fields().len(), 4);
    let names: Vec<String> = render(&batches).into_iter().map(|r| r[2].clone()).collect();
    assert!(names.contains(&"users".to_string()) && names.contains(&"events".to_string()));

    let info = client.get_sql_info(vec![]).await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    let all = batches.iter().map(|b| b.num_rows()).sum::<usize>();
    assert!(all >= 90, "an empty id list means every id: {all}");
    let info = client
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    let info = client.get_table_types().await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert!(render(&batches).contains(&vec!["TABLE".to_string()]));

    let info = client
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "events".into(),
        })
        .await
        .unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.fields().len(), 6);
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

    let info = client
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() >= 10);
}

#[tokio::test]
async fn a_running_server_sees_a_finished_crawl() {
    let (env, server) = served().await;
    let mut client = server.client().await;
    let count = |client: &mut FlightSqlServiceClient<Channel>| {
        let mut client = client.clone();
        async move {
            let info = client
                .execute("SELECT count(*) FROM events".into(), None)
                .await
                .unwrap();
            render(&fetch(&mut client, info).await.1)
        }
    };
    assert_eq!(count(&mut client).await, vec![vec!["9"]]);
    write_parquet(
        &env.lake()
            .join("events/year=2024/month=01/day=07/hour=00/part-0.parquet"),
        &events_v2(&["2024-01-07 00:00:00"], &[2], &["view"], &[1.0], &[None]),
    );
    // A second catalog handle on the same data directory, as `tarn crawl` would open.
    let other = tarn_lake::catalog::Catalog::open(&env.dir.path().join("data"))
        .await
        .unwrap();
    tarn_lake::crawler::Crawler::new(other, env.stores.clone())
        .crawl(
            &env.lake().to_string_lossy(),
            &tarn_lake::crawler::CrawlOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(count(&mut client).await, vec![vec!["10"]]);
}

#[tokio::test]
async fn ddl_over_flight_sql_persists_across_a_restart() {
    let (env, server) = served().await;
    let mut client = server.client().await;
    let lake = env.lake().join("events").to_string_lossy().into_owned();

    // The update path (JDBC executeUpdate, ADBC execute_update).
    assert_eq!(
        client
            .execute_update("CREATE DATABASE web".into(), None)
            .await
            .unwrap(),
        0
    );
    // A prepared DDL statement advertises an empty dataset schema (an update) and runs on
    // DoPut CommandPreparedStatementUpdate.
    let mut prepared = client
        .prepare(
            format!("CREATE EXTERNAL TABLE web.clicks STORED AS PARQUET LOCATION '{lake}'"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.dataset_schema().unwrap().fields().len(), 0);
    assert_eq!(prepared.execute_update().await.unwrap(), 0);
    // The query path (ADBC DB-API execute): runs at GetFlightInfo, the result is in the ticket.
    let info = client
        .execute(
            "ALTER TABLE web.clicks DROP PARTITION (year=2024, month=1, day=6, hour=0)".into(),
            None,
        )
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert!(
        render(&batches)[0][0].contains("dropped 1 partition"),
        "{:?}",
        render(&batches)
    );

    let info = client
        .execute("SHOW PARTITIONS web.clicks".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(render(&batches).len(), 2);

    // A query sent as an update is refused with a reason.
    let err = client
        .execute_update("SELECT 1".into(), None)
        .await
        .unwrap_err();
    assert_eq!(tonic_status(err).code(), Code::InvalidArgument);
    server.stop().await.unwrap();

    // A new process over the same data directory sees it all.
    let Env { dir, .. } = env;
    let reopened = Env::open(dir).await;
    let server = TestServer::start(reopened.engine.clone()).await;
    let mut client = server.client().await;
    let info = client
        .execute("SELECT count(*) FROM web.clicks".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(render(&batches), vec![vec!["5"]]);
}

#[tokio::test]
async fn get_schema_and_poll_flight_info_are_answered() {
    let (_env, server) = served().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let command = arrow_flight::sql::CommandStatementQuery {
        query: "SELECT name FROM users".into(),
        transaction_id: None,
    };
    let descriptor = arrow_flight::FlightDescriptor::new_cmd(
        arrow_flight::sql::ProstMessageExt::as_any(&command).encode_to_vec(),
    );
    let schema = raw
        .get_schema(descriptor.clone())
        .await
        .unwrap()
        .into_inner();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema.schema).unwrap();
    assert_eq!(schema.field(0).name(), "name");
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);

    let poll = raw.poll_flight_info(descriptor).await.unwrap().into_inner();
    assert!(
        poll.flight_descriptor.is_none(),
        "complete on the first poll"
    );
    let info = poll.info.expect("the poll carries the FlightInfo");
    let mut client = server.client().await;
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
}

#[tokio::test]
async fn a_database_header_sets_the_default_database() {
    let (env, server) = served().await;
    let mut client = server.client().await;
    let lake = env.lake().join("users").to_string_lossy().into_owned();
    client
        .execute_update("CREATE DATABASE crm".into(), None)
        .await
        .unwrap();
    client
        .execute_update(
            format!("CREATE EXTERNAL TABLE crm.people STORED AS PARQUET LOCATION '{lake}'"),
            None,
        )
        .await
        .unwrap();

    let mut in_crm = server.client().await;
    in_crm.set_header("database", "crm");
    let info = in_crm
        .execute("SELECT count(*) FROM people".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut in_crm, info).await;
    assert_eq!(render(&batches), vec![vec!["5"]]);
    // Prepared statements remember it in their handle.
    let mut prepared = in_crm
        .prepare("SELECT name FROM people WHERE user_id = 2".into(), None)
        .await
        .unwrap();
    let info = prepared.execute().await.unwrap();
    let (_, batches) = fetch(&mut in_crm, info).await;
    assert_eq!(render(&batches), vec![vec!["bob"]]);

    let mut lost = server.client().await;
    lost.set_header("database", "nowhere");
    let status = tonic_status(lost.execute("SELECT 1".into(), None).await.unwrap_err());
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("database 'nowhere' does not exist"),
        "{}",
        status.message()
    );
}

fn ingest_command(table: &str, mode: (i32, i32)) -> arrow_flight::sql::CommandStatementIngest {
    arrow_flight::sql::CommandStatementIngest {
        table_definition_options: Some(arrow_flight::sql::TableDefinitionOptions {
            if_not_exist: mode.0,
            if_exists: mode.1,
        }),
        table: table.to_string(),
        ..Default::default()
    }
}

fn id_batch(ids: Vec<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids))]).unwrap()
}

#[tokio::test]
async fn bulk_ingest_commits_all_batches_or_nothing() {
    use arrow_flight::sql::{TableExistsOption as Exists, TableNotExistOption as Missing};
    let (env, server) = served().await;
    let mut client = server.client().await;
    let create = (Missing::Create as i32, Exists::Fail as i32);
    let batches = vec![Ok(id_batch(vec![1, 2, 3])), Ok(id_batch(vec![4, 5]))];
    let rows = client
        .execute_ingest(
            ingest_command("ids", create),
            futures::stream::iter(batches),
        )
        .await
        .unwrap();
    assert_eq!(rows, 5);
    let info = client
        .execute("SELECT sum(id) AS s FROM ids".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(render(&batches), render_sum(15));

    // Rows whose `id` cannot widen into the table's fail the whole ingest after its files
    // were written: nothing is committed and those files are deleted.
    let append = (Missing::Fail as i32, Exists::Append as i32);
    let strings = || {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
            vec![Arc::new(arrow::array::StringArray::from(vec!["x", "y"]))],
        )
    };
    let err = client
        .execute_ingest(
            ingest_command("ids", append),
            futures::stream::iter(vec![
                strings().map_err(Into::into),
                strings().map_err(Into::into),
            ]),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("column 'id' is Utf8"), "{err}");
    let info = client
        .execute("SELECT sum(id) AS s FROM ids".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(render(&batches), render_sum(15));
    let files: Vec<_> = walk(&env.dir.path().join("warehouse"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "only the committed file remains: {files:?}");
}

#[tokio::test]
async fn bulk_ingested_strings_are_counted_like_crawled_ones() {
    use arrow_flight::sql::{TableExistsOption as Exists, TableNotExistOption as Missing};
    let (env, server) = served().await;
    let mut client = server.client().await;
    let kinds = ["click", "view", "click", "buy", "view", "click"];
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("kind", DataType::Utf8, true)])),
        vec![Arc::new(arrow::array::StringArray::from(kinds.to_vec()))],
    )
    .unwrap();
    let create = (Missing::Create as i32, Exists::Fail as i32);
    client
        .execute_ingest(
            ingest_command("clicks", create),
            futures::stream::iter(vec![Ok(batch)]),
        )
        .await
        .unwrap();
    let table = env
        .catalog
        .table(&env.engine.default_database(), "clicks")
        .await
        .unwrap()
        .unwrap();
    let files = env.catalog.files(table.id).await.unwrap();
    assert!(!files.is_empty());
    // Ingest writes compressed pages: the count comes from the dictionary page's header
    // without decompressing it.
    let distinct: std::collections::BTreeSet<&str> = kinds.iter().copied().collect();
    for f in &files {
        assert_eq!(
            f.stats.get("kind").and_then(|s| s.distinct),
            Some(distinct.len() as u64),
            "{:?}",
            f.stats
        );
    }
}

fn render_sum(n: i64) -> Vec<Vec<String>> {
    render(&[RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("s", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![n]))],
    )
    .unwrap()])
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A self-signed certificate for 127.0.0.1/localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[tokio::test]
async fn rust_client_over_tls_with_password_login_and_roles() {
    use tarn_server::auth::{AuthConfig, Authenticator, Role, Signer, UserConfig, hash_password};
    let env = Env::new().await;
    firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let config = AuthConfig {
        token_ttl_secs: None,
        users: vec![
            UserConfig {
                name: "alice".into(),
                password_hash: hash_password("wonderland").unwrap(),
                role: Role::Admin,
            },
            UserConfig {
                name: "bob".into(),
                password_hash: hash_password("builder").unwrap(),
                role: Role::Reader,
            },
        ],
        tokens: vec![],
    };
    let (cert, key) = self_signed();
    let options = tarn_server::serve::ServeOptions {
        auth: Arc::new(Authenticator::new(&config, Signer::random())),
        tls: Some((cert.clone().into_bytes(), key.into_bytes())),
    };
    let server = TestServer::start_with(env.engine.clone(), options).await;
    let connect = || async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&cert))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://{}", server.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlightSqlServiceClient::new(channel)
    };

    // Without credentials: refused.
    let mut anonymous = connect().await;
    let err = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("requires credentials"), "{err}");
    let wrong = anonymous.handshake("alice", "rabbit").await.unwrap_err();
    assert!(
        wrong.to_string().contains("wrong user name or password"),
        "a wrong password is refused as unauthenticated: {wrong}"
    );

    // The reader queries, but cannot run DDL.
    let mut bob = connect().await;
    let token = bob.handshake("bob", "builder").await.unwrap();
    assert!(String::from_utf8_lossy(&token).starts_with("tarn1."));
    let info = bob
        .execute("SELECT count(*) AS n FROM events".into(), None)
        .await
        .unwrap();
    let (_, batches) = fetch(&mut bob, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let err = bob
        .execute_update("CREATE DATABASE nope".into(), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("user 'bob' has role reader, and CREATE DATABASE needs role admin"),
        "{err}"
    );

    // The admin may.
    let mut alice = connect().await;
    alice.handshake("alice", "wonderland").await.unwrap();
    alice
        .execute_update("CREATE DATABASE made_by_alice".into(), None)
        .await
        .unwrap();
    assert!(
        env.catalog
            .databases()
            .await
            .unwrap()
            .iter()
            .any(|d| d.name == "made_by_alice")
    );
}
