//! A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, a cluster in a
//! temporary directory, listening on a free loopback port, stopped when dropped. Run as
//! root (as CI does), the server runs as the `postgres` user, which PostgreSQL insists on.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running PostgreSQL server; stopped (and its files removed) on drop.
pub struct Postgres {
    server: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The directory of PostgreSQL's server programs: `TARN_TEST_POSTGRES_BIN`, or the newest
/// of Debian's `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TARN_TEST_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL's server is not installed: scripts/venv installs Debian's \
             `postgresql` package, or set TARN_TEST_POSTGRES_BIN",
        )
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL version under /usr/lib/postgresql")
        .1
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when this process is root.
fn command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Self {
        let bin = bin_dir();
        let root = running_as_root();
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        if root {
            // The server's user must own its directory and reach it.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown of the test cluster's directory failed"
            );
        }
        let out = command(&bin.join("initdb"), root)
            .args(["-A", "trust", "-U", "tarn", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = command(&bin.join("postgres"), root)
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("postgres starts");
        // The server says when it accepts connections; its log is read to the end (so its
        // pipe never fills) and kept for the failure message.
        let log = server.stderr.take().expect("piped stderr");
        let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let mut seen = Vec::new();
        loop {
            match line_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains("ready to accept connections") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "PostgreSQL did not accept connections on port {port}:\n{}",
                    seen.join("\n")
                ),
            }
        }
        Self {
            server,
            port,
            _dir: dir,
        }
    }

    /// A new, empty database on this server, by URL.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Connection;
        let admin = format!("postgres://tarn@127.0.0.1:{}/postgres", self.port);
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("admin connection");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        format!("postgres://tarn@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown (SIGTERM's smart one waits for clients), sent
        // to the server itself: `runuser` does not pass signals on. Its pid is the first
        // line of postmaster.pid.
        let pid = std::fs::read_to_string(self._dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
            .unwrap_or_else(|| self.server.id().to_string());
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let _ = self.server.wait();
    }
}
